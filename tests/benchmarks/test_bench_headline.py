"""benchmarks/bench_headline.py: the headline lines computed from stored points, the spread of the
finalized front, and the command line without the peer installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
from _headline import report  # noqa: E402
from _headline.families import spread  # noqa: E402


def point(label: str, family: str, acc: float, s1: float, s128: float, flops: float, ref: float = 90.0,
          precision: str = "float") -> dict:
    lat = {str(b): {"speedup": s, "speedup_ci": [s, s]} for b, s in ((1, s1), (128, s128))}
    return {"label": label, "family": family, "precision": precision, "latency": {"torch": lat},
            "final": {"test_accuracy": acc, "reference_test_accuracy": ref, "flops": flops, "params": 1, "size": 1}}


def test_envelope_keeps_the_non_dominated_points():
    pts = [(1.0, 80.0), (2.0, 85.0), (3.0, 70.0), (4.0, 75.0), (2.5, 84.0)]
    # larger speed-up is better: (2.0, 85) beats everything slower; (4, 75) beats (3, 70)
    assert report.envelope(pts, larger_x_better=True) == [(2.0, 85.0), (2.5, 84.0), (4.0, 75.0)]
    # smaller FLOPs is better
    assert report.envelope([(10, 80), (20, 85), (15, 79)], larger_x_better=False) == [(10, 80), (20, 85)]


def test_interp_inside_only():
    curve = [(1.0, 90.0), (3.0, 80.0)]
    assert report.interp(curve, 2.0) == pytest.approx(85.0)
    assert report.interp(curve, 0.5) is None and report.interp(curve, 3.5) is None


def test_headline_lines_from_points():
    points = [
        point("u1", "uniform", 88.0, 1.5, 1.5, 60), point("u2", "uniform", 84.0, 3.0, 3.0, 40),
        point("u3", "uniform", 78.0, 5.0, 5.0, 20),
        point("s1", "searched", 87.5, 2.0, 2.0, 45), point("s2", "searched", 84.0, 4.0, 4.0, 30),
        point("s3", "searched", 89.5, 1.2, 1.2, 80),  # outside 1.5-4x: not in (a)
        point("f1", "fastnas", 85.0, 2.0, 2.0, 40),
    ]
    h = report.summarize(points)
    a = h["a_vs_uniform"]["1"]
    # uniform at 2.0x: between (1.5, 88) and (3, 84) -> 86.67; at 4.0x: between (3, 84) and (5, 78) -> 81
    assert a["n"] == 2
    assert a["mean"] == pytest.approx(((87.5 - (88 - 4 / 3)) + (84.0 - 81.0)) / 2)
    assert a["min"] == pytest.approx(87.5 - (88 - 4 / 3))
    b = h["b_vs_fastnas"]  # searched envelope over FLOPs (30, 84), (45, 87.5), (80, 89.5): at 40 -> 86.33
    assert b["n"] == 1 and b["points"][0]["advantage"] == pytest.approx(84 + 3.5 * 10 / 15 - 85.0)
    c = h["c_fastest_within_1pt"]["128"]  # within 1 pt of 90: s3 (89.5) only
    assert c["label"] == "s3" and c["speedup"]["128"] == 1.2
    text = report.table({"points": points, "headline": h})
    assert "| s1 | searched | 87.50 |" in text and "(a) b1" in text and "(c) b128: s3" in text


def test_torchscript_lines_use_the_torchscript_speedups():
    points = [point("u1", "uniform", 88.0, 1.5, 1.5, 60), point("u2", "uniform", 84.0, 3.0, 3.0, 40),
              point("s1", "searched", 89.5, 1.2, 1.2, 45), point("s2", "searched", 89.2, 1.1, 1.1, 50)]
    ts = {"s1": (1.6, 1.3), "s2": (2.5, 2.0), "u1": (1.8, 1.6), "u2": (3.5, 3.2)}
    for p in points:  # frozen, s2 (slower eagerly) is the faster one, and s2 lies in 1.5-4x at b1
        p["latency"]["torchscript"] = {str(b): {"speedup": s, "speedup_ci": [s, s]}
                                       for b, s in zip((1, 128), ts[p["label"]])}
    h = report.summarize(points)
    assert h["c_fastest_within_1pt"]["1"]["label"] == "s1"  # eager torch: unchanged
    c = h["torchscript"]["c_fastest_within_1pt"]["1"]
    assert c["label"] == "s2" and c["speedup"] == {"1": 2.5, "128": 2.0} and c["torch_speedup"]["1"] == 1.1
    a = h["torchscript"]["a_vs_uniform"]["1"]  # uniform (1.8-3.5x) at 2.5x: 88 - 4 * 0.7 / 1.7; s1 is below it
    assert a["n"] == 1 and a["points"][0]["label"] == "s2"
    assert a["points"][0]["advantage"] == pytest.approx(89.2 - (88 - 4 * 0.7 / 1.7))
    text = report.table({"points": points, "headline": h})
    assert "| 2.50x [2.50, 2.50] | 2.00x [2.00, 2.00] | - | - |" in text
    assert "(c) b1 TorchScript: s2 (searched): 89.20 (+0.80 pt), speed-up 2.50x b1 / 2.00x b128" in text


def test_channels_last_columns_and_lines_appear_only_when_timed(tmp_path):
    """--torchscript-cl adds its columns, (a)/(c) lines and figure row; results without it keep the
    table they had."""
    points = [point("u1", "uniform", 88.0, 1.5, 1.5, 60), point("s1", "searched", 89.5, 1.2, 1.2, 45),
              point("s2", "searched", 89.2, 1.1, 1.1, 50)]
    before = report.table({"points": points, "headline": report.summarize(points)})
    assert "TorchScript CL" not in before and "torchscript-cl" not in report.summarize(points)
    cl = {"u1": (1.4, 1.3), "s1": (1.1, 1.0), "s2": (2.2, 1.9)}
    for p in points:
        p["latency"]["torchscript-cl"] = {str(b): {"speedup": s, "speedup_ci": [s, s]}
                                          for b, s in zip((1, 128), cl[p["label"]])}
    h = report.summarize(points)
    c = h["torchscript-cl"]["c_fastest_within_1pt"]["1"]
    assert c["label"] == "s2" and c["speedup"] == {"1": 2.2, "128": 1.9} and c["torch_speedup"]["1"] == 1.1
    assert c["torchscript_speedup"] == {"1": None, "128": None}  # not timed on plain TorchScript here
    text = report.table({"points": points, "headline": h})
    assert ("| speed-up b1 | speed-up b128 | TorchScript b1 | TorchScript b128 | TorchScript CL b1 | "
            "TorchScript CL b128 | ORT b1 | ORT b128 |") in text
    assert "| - | - | 2.20x [2.20, 2.20] | 1.90x [1.90, 1.90] | - | - |" in text
    assert "(c) b1 TorchScript CL: s2 (searched): 89.20 (+0.80 pt), speed-up 2.20x b1 / 1.90x b128" in text
    report._figure(points, tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 0


def test_timing_backends_follow_the_flag():
    from _headline.timing import BACKENDS, backends

    assert backends(SimpleNamespace(torchscript_cl=False)) == list(BACKENDS)
    assert backends(SimpleNamespace(torchscript_cl=True)) == [*BACKENDS, "torchscript-cl"]


def test_spread_picks_evenly_along_the_key():
    recs = [SimpleNamespace(trial=i, metrics={"latency": 1.0 - i / 10}) for i in range(10)]
    picked = spread(recs, 4, "latency")
    assert len(picked) == 4 and picked[0].trial == 9 and picked[-1].trial == 0
    assert spread(recs[:3], 4, "latency") == sorted(recs[:3], key=lambda r: r.metrics["latency"])


def test_spread_costs_covers_every_cost_once():
    from _headline.families import spread_costs

    # float points spread along FLOPs; the INT8 ones (fast at b128) sit in the FLOPs middle
    recs = [SimpleNamespace(trial=i, metrics={"flops": f, "latency@128": lat})
            for i, (f, lat) in enumerate([(1, 1.0), (2, 0.2), (3, 0.25), (4, 0.9), (5, 0.95), (6, 0.9), (7, 1.0)])]
    by_flops = [r.trial for r in spread(recs, 3, "flops")]
    assert by_flops == [0, 3, 6]
    both = [r.trial for r in spread_costs(recs, 3, ["flops", "latency@128"])]
    assert both == sorted(set(both)) and 1 in both and set(by_flops) <= set(both)


def test_help_works_without_the_peer():
    done = subprocess.run([sys.executable, str(BENCH / "bench_headline.py"), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "--budget-epochs" in done.stdout and "FastNAS" in done.stdout


def test_a_point_stored_from_the_audit_gets_a_replayable_final_recipe(tmp_path):
    """The audit's record format (AuditRecord: ``metrics``, ``search_metrics``) becomes a point whose recipe
    is the policy as fine-tuned (final schedule) with the provenance ``apply --verify`` replays."""
    from _headline.context import Context
    from _headline.families import _point_from_audit
    from _headline.recipes import refresh

    from search.verify import evaluation_of, replay_space
    from spaces.policy import Policy
    from spaces.space import load_space

    space = load_space("resnet20-cifar10", overrides=["model.adapt=null"])
    adapted = tmp_path / "adapted.pt"
    adapted.write_bytes(b"")
    ctx = Context(out=tmp_path, space=space, space_file=tmp_path / "space.yaml", adapted=adapted)
    recipe = Path(__file__).resolve().parents[2] / "spaces" / "recipes" / "resnet20-prune30-kd.yaml"
    searched = Policy.load(recipe).replace(provenance={"source": "autocompress search", "trial": 3})
    final = {"val_accuracy": 88.5, "test_accuracy": 85.1, "flops": 2.0e7, "params": 1.5e5, "size": 6.0e5,
             "bops": 2.0e10, "reference_val_accuracy": 92.0, "reference_test_accuracy": 86.7}
    row = SimpleNamespace(trial=3, epochs=1.0, metrics=final, search_metrics={"accuracy": 87.0})  # an AuditRecord
    _point_from_audit(ctx, "searched-t3", searched, row, 2.0)  # another budget: not taken
    assert ctx.point("searched-t3") is None
    _point_from_audit(ctx, "searched-t3", searched, row, 1.0)
    point = ctx.point("searched-t3")
    assert point["final"] == final and point["proxy"] == {"accuracy": 87.0}
    stored = Policy.load(point["recipe"])
    prov = stored.provenance
    assert stored.finetune.epochs == 1.0 and stored.finetune.schedule == space.budget.final.schedule
    assert prov["source"] == "bench_headline" and prov["search"]["trial"] == 3
    assert prov["metrics"] == {"accuracy": 88.5, "flops": 2.0e7, "params": 1.5e5, "size": 6.0e5, "bops": 2.0e10}
    evaluation = evaluation_of(stored, "recipe")
    assert evaluation["val_limit"] is None and evaluation["checkpoint"] == str(adapted.resolve())
    assert replay_space(stored, evaluation, adapted).budget.finetune.epochs == 1.0
    assert refresh(ctx, 1.0) == 0  # already replayable: left alone
    assert ctx.points(2.0) == [] and len(ctx.points(1.0)) == 1


def test_whole_front_ignores_constraints_and_baselines_and_repeats():
    from _headline.families import whole_front

    def rec(trial, acc, lat, *, feasible=True, baseline=None, h=None):
        return SimpleNamespace(trial=trial, status="complete", feasible=feasible, baseline=baseline,
                               policy_hash=h or f"h{trial}", metrics={"accuracy": acc, "latency": lat})

    run = SimpleNamespace(objectives=[("accuracy", "maximize"), ("latency", "minimize")], records=[
        rec(0, 92.0, 1.0, baseline="original"), rec(1, 80.0, 0.4, baseline="uniform-prune-0.3"),
        rec(2, 85.0, 0.5, feasible=False, baseline="seed-flops-0.5"), rec(3, 90.0, 0.8),
        rec(4, 90.0, 0.8, h="h3"), rec(5, 70.0, 0.9), rec(6, 92.0, 1.0, h="h0")])  # 6 repeats the original
    assert [r.trial for r in whole_front(run)] == [2, 3]


def test_within_drop_keeps_points_near_the_original():
    from _headline.families import within_drop

    recs = [SimpleNamespace(trial=t, metrics={"accuracy": a}) for t, a in ((1, 85.0), (2, 79.9), (3, 80.0))]
    run = SimpleNamespace(info=SimpleNamespace(reference={"accuracy": 90.0}))
    assert [r.trial for r in within_drop(recs, run, 10.0)] == [1, 3]
    assert within_drop(recs, SimpleNamespace(info=SimpleNamespace(reference={})), 1.0) == recs


def test_near_fractions_picks_the_front_point_at_each_peer_flops():
    from _headline.families import near_fractions

    recs = [SimpleNamespace(trial=t, metrics={"flops": f}) for t, f in ((1, 48.0), (2, 69.0), (3, 81.0))]
    run = SimpleNamespace(info=SimpleNamespace(reference={"flops": 100.0}))
    assert [r.trial for r in near_fractions(recs, run, [0.5, 0.65, 0.49])] == [1, 2]
    assert near_fractions(recs, SimpleNamespace(info=SimpleNamespace(reference={})), [0.5]) == []


@pytest.mark.parametrize("name", ["resnet20-cifar10", "resnet56-cifar10", "quickstart"])
def test_the_search_is_seeded_at_the_peer_flops_too(name):
    from _headline.context import peer_seed_targets

    from spaces.space import load_space

    space = load_space(name)
    targets = peer_seed_targets(space, [0.5, 0.65])
    assert targets == sorted({*space.search.seeds.targets, 0.5, 0.65})
    seeded = load_space(name, overrides=[f"search.seeds.targets=[{','.join(map(repr, targets))}]"])
    assert seeded.search.seeds.targets == tuple(targets)
    assert peer_seed_targets(load_space(name, overrides=["search.seeds=null"]), [0.5]) is None
    bops = load_space(name, overrides=["search.seeds.metric=bops"])
    assert peer_seed_targets(bops, [0.5]) is None  # BOPs seeds are not at FLOPs fractions


def test_depth_family_drops_the_same_blocks_in_every_stage():
    from _headline.families import check_depths, depth_policy

    from autocompress.errors import UserError
    from compress.models import get_model, quantizable_layers
    from compress.prune import list_groups
    from spaces.space import expand, load_space

    space = load_space("resnet56-cifar10", overrides=["model.adapt=null", "prune.depth=4"])
    model = get_model("resnet56")
    dims = expand(space, list_groups(model), quantizable_layers(model))
    ctx = SimpleNamespace(baseline=SimpleNamespace(dims=dims), space=space, space_file="space.yaml")
    policy = depth_policy(ctx, 3, 0.0, "int8")
    assert policy.prune.drop == tuple(f"layer{s}.{i}" for s in (1, 2, 3) for i in (6, 7, 8))
    assert not policy.prune.ratios and policy.quant.active
    kept_layers = [n for n in quantizable_layers(model) if not n.startswith(tuple(b + "." for b in policy.prune.drop))]
    assert sorted(policy.quant.layers) == sorted(kept_layers)
    assert policy.distill.alpha == space.distill.alpha
    assert depth_policy(ctx, 2, 0.2, "float").prune.ratios and not depth_policy(ctx, 2, 0.2, "float").quant.active
    check_depths(ctx, SimpleNamespace(depths=[1, 4]))
    with pytest.raises(UserError, match=r"--depths 5 0: allowed 1..4 \(prune.depth of space.yaml\)"):
        check_depths(ctx, SimpleNamespace(depths=[2, 5, 0]))


def test_seeds_family_finalizes_the_searchs_seeds_per_precision(tmp_path, monkeypatch):
    from _headline.context import Context
    from _headline.families import seed_policies

    from autocompress.errors import UserError
    from tests.search._tiny_space import tiny_space

    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path / "cache"))
    space = tiny_space(prune__depth=1, search={"trials": 4, "seed": 0, "seeds": {"targets": [0.6]}})
    ctx = Context(out=tmp_path, space=space, space_file=tmp_path / "space.yaml", adapted=tmp_path / "a.pt")
    pairs = seed_policies(ctx, ["float", "int8"], "cpu")
    assert [label for label, _ in pairs] == ["seed-flops-0.6-float", "seed-flops-0.6-int8"]
    (_, floating), (_, int8) = pairs
    assert floating.prune == int8.prune and floating.prune.ratios and not floating.quant.active
    assert int8.quant.active and (ctx.run_dir / "sensitivity.json").is_file()  # the map the search would use
    with pytest.raises(UserError, match="no search.seeds"):
        seed_policies(Context(out=tmp_path, space=tiny_space(), space_file=tmp_path / "s.yaml",
                              adapted=tmp_path / "a.pt"), ["float"], "cpu")


def test_a_space_that_does_not_adapt_starts_every_candidate_from_its_checkpoint(tmp_path):
    """``model.adapt: null`` with a checkpoint (e.g. one adapted in an earlier run): candidates start
    from that file as given, nothing is written under OUT/adapt, and the recipes point at it."""
    import torch
    from _headline.context import adapt_once

    from compress.models import build_model
    from search.baseline import Baseline
    from spaces.space import load_space

    space = load_space("resnet20-cifar10", overrides=["model.adapt=null"])
    net = build_model(Baseline(space, tmp_path / "probe").spec)
    ckpt = tmp_path / "elsewhere" / "adapted.pt"
    ckpt.parent.mkdir()
    torch.save(net.state_dict(), ckpt)
    out = tmp_path / "out"
    got = adapt_once("resnet20-cifar10", [f"model.checkpoint={ckpt}", "model.adapt=null"], out, "cpu")
    assert got == ckpt.resolve() and got.is_file()
    assert not (out / "adapt" / "baseline" / "model.pt").exists()
