"""`autocompress apply RECIPE --verify`: a search recipe replays its own evaluation (exit 0), a
hand-edited one names what differs (exit 4), and recipes that cannot be replayed are one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from search.cli import main
from search.recipes import replay_policy, stale_kept
from search.verify import compare
from spaces.policy import ModelSpec, Policy, PruneSpec
from tests.search._tiny_space import tiny_space

GROUPS = {"layer1.0.conv1": 16, "layer2.0.conv1": 32, "layer3.0.conv1": 64}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A 2-trial search (baselines original and uniform-prune-0.25) with its exports."""
    from reports.tables import write_exports
    from search.driver import run_search

    run_dir = tmp_path_factory.mktemp("verify") / "run"
    run_search(tiny_space(search={"trials": 2, "seed": 0, "baselines": True}), run_dir, progress=False)
    write_exports(run_dir)
    return run_dir


@pytest.fixture
def recipe(run) -> dict:
    """The pruned trial's exported recipe, as a plain document to edit."""
    return yaml.safe_load((run / "recipes" / "trial-1.yaml").read_text())


def _save(doc: dict, path: Path) -> str:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def _error_line(err: str) -> str:
    """The one ERROR line of a failed command (no traceback, nothing after it)."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if " ERROR " in ln]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0]


def test_exported_recipe_records_its_evaluation(run, recipe):
    ev = recipe["provenance"]["evaluation"]
    assert ev["start"] == "baseline" and ev["checkpoint"] == str((run / "baseline" / "model.pt").resolve())
    assert ev["seed"] == recipe["provenance"]["seed"] == 0 and ev["finetune"]["steps"] == 2
    assert (ev["bn_recal_batches"], ev["val_limit"], ev["eval_batch_size"]) == (1, 64, 64)
    assert ev["data"]["dataset"] == "digits" and ev["latency"] is None and ev["level"] is None
    assert recipe["provenance"]["metrics"]["flops"] > 0


def test_verify_replays_the_search_evaluation(run, capfd):
    assert main(["apply", str(run / "recipes" / "trial-1.yaml"), "--verify"]) == 0
    out = capfd.readouterr().out
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.split()}
    assert rows["metric"][:5] == ["metric", "recorded", "replayed", "allowed", "ok"]
    for metric in ("flops", "params", "size", "accuracy"):
        assert rows[metric][-1] == "ok" and rows[metric][1] == rows[metric][2], out


def test_verify_of_an_edited_ratio_exits_4_naming_flops(run, recipe, tmp_path, capfd):
    recipe["prune"]["ratios"]["layer1.0.conv1"] = 0.5  # kept still holds 12 of 16 channels
    rc = main(["apply", _save(recipe, tmp_path / "edited.yaml"), "--verify"])
    captured = capfd.readouterr()
    assert rc == 4
    assert "differs from its search record in flops" in _error_line(captured.err)
    flops = next(ln.split() for ln in captured.out.splitlines() if ln.startswith("flops"))
    assert flops[-1] == "DIFFERS" and float(flops[2]) < float(flops[1])
    assert "layer1.0.conv1 do not match the recorded prune.kept" in captured.out


def test_verify_checks_latency_against_the_widened_interval(run, recipe, tmp_path, capfd):
    """A recipe whose search timed latency, with an impossible recorded interval; its run directory
    is gone, so the checkpoint is passed."""
    ev = recipe["provenance"]["evaluation"]
    ev["latency"] = {"device": "cpu", "backend": "torch", "batch": 1, "threads": 1, "rounds": 3, "warmup_s": 0.05}
    ev["checkpoint"] = str(tmp_path / "gone" / "baseline" / "model.pt")
    recipe["provenance"]["run"] = str(tmp_path / "gone")
    recipe["provenance"]["metrics"].update(latency_ratio=40.0, latency_ci_low=39.0, latency_ci_high=41.0)
    path = _save(recipe, tmp_path / "latency.yaml")
    rc = main(["apply", path, "--verify", "--checkpoint", str(run / "baseline")])
    captured = capfd.readouterr()
    assert rc == 4 and _error_line(captured.err).endswith("differs from its search record in latency_ratio")
    row = next(ln.split() for ln in captured.out.splitlines() if ln.startswith("latency_ratio"))
    assert row[3:] == ["[31.200,", "49.200]", "DIFFERS"] and 0 < float(row[2]) < 31.2
    assert main(["apply", path, "--verify"]) == 2  # without --checkpoint: the recorded one is gone
    assert "pass --checkpoint" in _error_line(capfd.readouterr().err)


def test_recipe_without_provenance_is_one_line(tmp_path, capfd):
    path = Policy(model=ModelSpec("resnet20", input_size=16), prune=PruneSpec(ratios={"layer1.0.conv1": 0.5})) \
        .save(tmp_path / "plain.yaml")
    assert main(["apply", str(path), "--verify"]) == 2
    assert "no search provenance (provenance.evaluation)" in _error_line(capfd.readouterr().err)


def test_apply_without_checkpoint_uses_the_recorded_one_or_names_the_flag(run, recipe, tmp_path, capfd):
    out = tmp_path / "out"
    rc = main(["apply", str(run / "recipes" / "trial-1.yaml"), "--out", str(out), "--no-finetune", "--no-latency",
               "--eval-limit", "32"])
    assert rc == 0 and (out / "model.pt").is_file()
    assert '"dataset": "digits"' in (out / "metrics.json").read_text()  # the recorded dataset too
    gone = tmp_path / "moved"
    recipe["provenance"]["run"] = str(gone)
    recipe["provenance"]["evaluation"]["checkpoint"] = str(gone / "baseline" / "model.pt")
    capfd.readouterr()
    rc = main(["apply", _save(recipe, tmp_path / "r.yaml"), "--out", str(tmp_path / "o2"), "--no-finetune"])
    line = _error_line(capfd.readouterr().err)
    assert rc == 2 and "pass --checkpoint" in line and f"run directory {gone} is gone" in line
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize("flags,needle", [
    (["--out", "x"], "--out: not used with --verify"),
    (["--steps", "5"], "--steps: not used with --verify"),
    (["--tolerance", "-1"], "--tolerance = -1.0: must be >= 0"),
])
def test_verify_flags_that_would_change_the_evaluation(run, flags, needle, capfd):
    assert main(["apply", str(run / "recipes" / "trial-1.yaml"), "--verify", *flags]) == 2
    assert needle in _error_line(capfd.readouterr().err)


# ----- pure parts ---------------------------------------------------------------------------------


def test_stale_kept_finds_edited_ratios_in_network_order():
    kept = {"layer1.0.conv1": tuple(range(12)), "layer3.0.conv1": tuple(range(48))}
    prune = PruneSpec(ratios={"layer1.0.conv1": 0.25, "layer3.0.conv1": 0.25}, kept=kept)
    assert stale_kept(prune, GROUPS) == []
    edited = PruneSpec(ratios={"layer3.0.conv1": 0.5, "layer1.0.conv1": 0.25, "layer2.0.conv1": 0.25}, kept=kept)
    assert stale_kept(edited, GROUPS) == ["layer2.0.conv1", "layer3.0.conv1"]  # 0 -> 0.25 too
    unpruned = PruneSpec(ratios={"layer1.0.conv1": 0.0, "layer3.0.conv1": 0.25}, kept=kept)
    assert stale_kept(unpruned, GROUPS) == ["layer1.0.conv1"]
    policy = Policy(model=ModelSpec("resnet20"), prune=edited)
    replayed, notes = replay_policy(policy, GROUPS)
    assert replayed.prune.kept == {} and replayed.prune.ratios == edited.ratios and "layer3.0.conv1" in notes[0]
    same = Policy(model=ModelSpec("resnet20"), prune=prune)
    assert replay_policy(same, GROUPS) == (same, [])


def test_compare_rules():
    recorded = {"flops": 100.0, "params": 10.0, "accuracy": 90.0, "latency_ratio": 0.5, "latency_ci_low": 0.45,
                "latency_ci_high": 0.55}
    same = {"flops": 100, "params": 10, "accuracy": 90.4, "latency_ratio": 0.64}
    checks = {c.metric: c for c in compare(recorded, same)}
    assert list(checks) == ["flops", "params", "accuracy", "latency_ratio"] and all(c.ok for c in checks.values())
    assert checks["latency_ratio"].allowed == "[0.360, 0.660]" and checks["accuracy"].allowed == "+-0.5 pt"
    off = {c.metric: c.ok for c in compare(recorded, {**same, "flops": 101, "accuracy": 89.4,
                                                      "latency_ratio": 0.67})}
    assert off == {"flops": False, "params": True, "accuracy": False, "latency_ratio": False}
    assert [c.ok for c in compare(recorded, {**same, "accuracy": 91.0}, tolerance=1.0)] == [True] * 4
    assert not any(c.metric == "latency_ratio" for c in compare({"accuracy": 1.0}, {"accuracy": 1.0}))
