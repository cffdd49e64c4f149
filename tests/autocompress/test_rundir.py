"""The run-directory contract: records and run info round-trip, schema 1 is read, writes are atomic,
file locks exclude other processes, and a run's Pareto front."""

from __future__ import annotations

import functools
import json
import os
import stat

import numpy as np
import pytest

from autocompress.errors import RunFormatError, UserError
from autocompress.rundir import (
    SCHEMA_VERSION,
    RunInfo,
    TrialRecord,
    atomic_write_json,
    atomic_write_text,
    eligible,
    file_lock,
    load_run,
    pareto_records,
    read_records,
    read_run_info,
    record_path,
    require_complete,
    write_record,
    write_run_info,
)
from tests.conftest import lock_attempt_in_child

OBJECTIVES = [("accuracy", "maximize"), ("flops", "minimize")]


def _info(**kw) -> RunInfo:
    return RunInfo(space="s", model="resnet20", checkpoint=None, dataset="digits", objectives=OBJECTIVES, **kw)


def _record(trial: int, acc: float | None, flops: float | None, **kw) -> TrialRecord:
    metrics = {k: v for k, v in (("accuracy", acc), ("flops", flops)) if v is not None}
    return TrialRecord(trial=trial, status=kw.pop("status", "complete"), policy={}, policy_hash=f"h{trial}",
                       metrics=metrics, **kw)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_have_the_mode_of_a_plain_new_file(tmp_path, umask):
    """Records, run.json and exports are written through a temporary file (mkstemp: 0600); they end
    with the mode ``open(path, "w")`` gives (what the HTML report gets): 0644 under umask 022."""
    old = os.umask(umask)
    try:
        path = write_record(tmp_path, _record(1, 90.0, 1e6))
        write_run_info(tmp_path, _info())
        atomic_write_text(tmp_path / "trials.csv", "a,b\n")
        (tmp_path / "report.html").write_text("<html></html>")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (path, tmp_path / "run.json", tmp_path / "trials.csv")}
    assert modes == dict.fromkeys(modes, stat.S_IMODE((tmp_path / "report.html").stat().st_mode))
    assert set(modes.values()) == {0o666 & ~umask}


def test_records_and_run_info_round_trip(tmp_path):
    write_run_info(tmp_path, _info(reference={"accuracy": 90.0}))
    rec = _record(3, 80.0, 1e6, constraints={"accuracy_drop <= 1": 9.0}, feasible=False)
    path = write_record(tmp_path, rec)
    assert path == record_path(tmp_path, 3) == tmp_path / "records" / "trial-00003.json"
    assert read_records(tmp_path) == [rec] and rec.schema == SCHEMA_VERSION == 2
    info = read_run_info(tmp_path)
    assert info.objectives == OBJECTIVES and info.reference == {"accuracy": 90.0}
    run = load_run(tmp_path)
    assert run.record(3) == rec and run.counts()["complete"] == 1 and run.objectives == OBJECTIVES
    with pytest.raises(KeyError, match="no trial 4"):
        run.record(4)


def test_schema_1_is_read_and_unknown_schemas_are_refused(tmp_path):
    old = _record(0, 90.0, 2e6).to_dict() | {"schema": 1}
    (tmp_path / "records").mkdir()
    record_path(tmp_path, 0).write_text(json.dumps(old))
    (tmp_path / "run.json").write_text(json.dumps(_info().to_dict() | {"schema": 1}))
    run = load_run(tmp_path)
    assert run.records[0].schema == SCHEMA_VERSION and run.records[0].metrics == {"accuracy": 90.0, "flops": 2e6}
    assert run.info.schema == SCHEMA_VERSION
    record_path(tmp_path, 0).write_text(json.dumps(old | {"schema": 7}))
    with pytest.raises(RunFormatError, match="schema = 7.*reads schemas 1, 2") as exc:
        load_run(tmp_path)
    assert isinstance(exc.value, UserError)


def test_unreadable_runs_say_why(tmp_path):
    with pytest.raises(RunFormatError, match="no such run directory"):
        load_run(tmp_path / "nope")
    with pytest.raises(RunFormatError, match="no run.json"):
        load_run(tmp_path)
    write_run_info(tmp_path, _info())
    with pytest.raises(RunFormatError, match="no trial records"):
        load_run(tmp_path)
    (tmp_path / "records").mkdir()
    record_path(tmp_path, 1).write_text("{not json")
    with pytest.raises(RunFormatError, match="trial-00001.json: not valid JSON"):
        load_run(tmp_path)
    record_path(tmp_path, 1).write_text(json.dumps({"trial": 1, "schema": 2}))
    with pytest.raises(RunFormatError, match="malformed trial record"):
        load_run(tmp_path)
    write_record(tmp_path, _record(1, None, None, status="failed", error="ValueError: boom"))
    with pytest.raises(RunFormatError, match="(?s)no trial completed.*1 x ValueError: boom"):
        require_complete(load_run(tmp_path))


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    atomic_write_json(tmp_path / "a" / "x.json", {"v": 1.5, "p": tmp_path})
    atomic_write_text(tmp_path / "a" / "t.txt", "hello\n")
    assert json.loads((tmp_path / "a" / "x.json").read_text()) == {"v": 1.5, "p": str(tmp_path)}
    assert (tmp_path / "a" / "t.txt").read_text() == "hello\n"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["t.txt", "x.json"]
    with pytest.raises(TypeError):
        atomic_write_text(tmp_path / "a" / "t.txt", None)  # type: ignore[arg-type]
    assert (tmp_path / "a" / "t.txt").read_text() == "hello\n"  # the old content survives a failed write
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["t.txt", "x.json"]


def test_file_lock_excludes_other_processes(tmp_path):
    path = tmp_path / "sub" / "x.lock"
    attempt = functools.partial(file_lock, path, timeout_s=0.2, what="test lock")
    with file_lock(path) as waited:
        assert waited >= 0 and path.parent.is_dir()
        assert lock_attempt_in_child(attempt).startswith("timeout: test lock")
    assert lock_attempt_in_child(attempt) == "acquired"


def test_pareto_records_of_a_run(tmp_path):
    write_run_info(tmp_path, _info())
    rows = [(0, 90.0, 10.0, {}), (1, 85.0, 12.0, {}), (2, 80.0, 5.0, {}), (3, 95.0, 20.0, {"feasible": False}),
            (4, 80.0, 5.0, {}), (5, None, 1.0, {}), (6, float("nan"), 1.0, {}), (7, 99.0, 1.0, {"status": "failed"})]
    for t, acc, flops, kw in rows:
        write_record(tmp_path, _record(t, acc, flops, **kw))
    run = load_run(tmp_path)
    recs, values = eligible(run)
    assert [r.trial for r in recs] == [0, 1, 2, 4]
    np.testing.assert_array_equal(values, [[90, 10], [85, 12], [80, 5], [80, 5]])
    # non-dominated, duplicates kept, sorted by the first objective (accuracy) then trial number
    assert [r.trial for r in pareto_records(run)] == [2, 4, 0]
