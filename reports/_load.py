"""Read a run directory (``search/records.py`` layout) with clear errors for bad input."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from search.records import RunFormatError, RunInfo, TrialRecord, read_run_info


@dataclass
class Run:
    """A loaded run directory: its ``run.json`` and every trial record, by trial number."""

    dir: Path
    info: RunInfo
    records: list[TrialRecord]

    @property
    def name(self) -> str:
        return self.dir.name

    def counts(self) -> dict[str, int]:
        """Number of trials per status (complete, failed, pruned, running)."""
        c = Counter(r.status for r in self.records)
        return {s: c.get(s, 0) for s in ("complete", "failed", "pruned", "running")}


def load_run(run_dir: str | Path) -> Run:
    """Load ``run_dir``; raise :class:`RunFormatError` if it is missing, empty or from another schema."""
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)  # missing dir / no run.json / schema version
    rec_dir = run_dir / "records"
    files = sorted(rec_dir.glob("trial-*.json")) if rec_dir.is_dir() else []
    if not files:
        raise RunFormatError(f"{run_dir}: the run has no trial records (expected {rec_dir}/trial-NNNNN.json); "
                             "the search has not finished a trial yet")
    records = []
    for p in files:
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise RunFormatError(f"{p}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise RunFormatError(f"{p}: a trial record must be a JSON object, got {type(data).__name__}")
        try:
            records.append(TrialRecord.from_dict(data, source=str(p)))
        except TypeError as exc:  # missing required fields
            raise RunFormatError(f"{p}: malformed trial record ({exc})") from None
    records.sort(key=lambda r: r.trial)
    return Run(dir=run_dir, info=info, records=records)


def require_complete(run: Run) -> None:
    """Raise :class:`RunFormatError` when no trial completed, listing why the trials failed."""
    if any(r.status == "complete" for r in run.records):
        return
    counts = {k: v for k, v in run.counts().items() if v}
    reasons = Counter((r.error or f"status {r.status}, no error message").strip().splitlines()[0][:200]
                      for r in run.records)
    lines = [f"  {n} x {reason}" for reason, n in reasons.most_common(10)]
    raise RunFormatError(f"{run.dir}: no trial completed ({', '.join(f'{v} {k}' for k, v in counts.items())}); "
                         "nothing to report. Reasons:\n" + "\n".join(lines))
