"""HTML report: self-contained, numbers agree exactly with trials.csv/pareto.csv, sections present."""

from __future__ import annotations

import json
import math
import re

import pytest

from autocompress.errors import RunFormatError
from autocompress.rundir import RunInfo, read_run_info, write_run_info
from reports.data import MAX_POLICIES, report_data, select_policies
from reports.html import write_html_report
from reports.tables import read_csv, trials_frame

from ._html import embedded, parse
from .conftest import build_run


def _same(a, b) -> bool:
    """Exact equality; missing (None/NaN) equals missing."""
    missing = lambda v: v is None or (isinstance(v, float) and math.isnan(v))  # noqa: E731
    if missing(a) or missing(b):
        return missing(a) and missing(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return str(a).lower() == str(b).lower()
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return str(a) == str(b)


@pytest.fixture(scope="module")
def shared_report(tmp_path_factory):
    """One report for the read-only tests of this module (tests must not modify its run)."""
    return write_html_report(build_run(tmp_path_factory.mktemp("shared") / "run"))


@pytest.fixture
def report(shared_report):
    return shared_report


@pytest.fixture
def run_dir(shared_report):  # noqa: F811 - the run behind the shared report (read-only here)
    return shared_report.parent


def test_self_contained_no_external_loads(report):
    page = parse(report)
    external = [(t, a, v) for t, a, v in page.loads if re.match(r"^\s*(https?:)?//", v, re.I)]
    assert external == []
    assert not [x for x in page.loads if x[0] in ("script", "link", "img", "iframe")], page.loads
    text = report.read_text()
    assert "Plotly.newPlot" in text and "plotly.js" in text.lower()  # plotly.js itself is inlined
    assert len(text) > 1_000_000


def test_embedded_data_equals_csvs_exactly(run_dir, report):
    page = parse(report)
    data = embedded(page, "report-data")
    trials = read_csv(run_dir / "trials.csv")
    pareto = read_csv(run_dir / "pareto.csv")
    assert data["columns"] == list(trials.columns)
    assert len(data["trials"]) == len(trials)
    for row, (_, csv_row) in zip(data["trials"], trials.iterrows()):
        for col in trials.columns:
            assert _same(row[col], csv_row[col]), (row["trial"], col, row[col], csv_row[col])
    assert data["pareto"] == pareto["trial"].tolist()
    assert set(data["pareto"]) == set(trials.loc[trials["pareto"], "trial"])
    # and the CSVs are the frames computed from the records
    fresh = trials_frame(run_dir)
    assert fresh["accuracy"].equals(trials["accuracy"]) and fresh["pareto"].tolist() == trials["pareto"].tolist()


def test_pareto_table_cells_equal_csv(run_dir, report):
    page = parse(report)
    pareto = read_csv(run_dir / "pareto.csv").set_index("trial")
    rows = page.tables["pareto"]
    assert [r["trial"] for r in rows] == pareto.index.tolist()
    checked = 0
    for r in rows:
        for col, text in r.items():
            if col == "trial":
                continue
            assert float(text) == float(pareto.loc[r["trial"], col]), (r["trial"], col)
            checked += 1
    assert checked >= len(rows) * 4


def test_recipe_links_resolve(run_dir, report, tmp_path):  # writes only outside the run
    links = [h for h in parse(report).links if h.endswith(".yaml")]
    assert len(links) == len(read_csv(run_dir / "pareto.csv"))
    for href in links:
        assert not href.startswith("/") and (report.parent / href).is_file()
    other = write_html_report(run_dir, tmp_path / "elsewhere" / "r.html")
    for href in [h for h in parse(other).links if h.endswith(".yaml")]:
        assert href.startswith("../") and (other.parent / href).resolve().is_file()


def test_scatter_figures_mark_pareto_and_baselines(run_dir, report):
    page = parse(report)
    figs = embedded(page, "report-figures")
    pareto = set(read_csv(run_dir / "pareto.csv")["trial"])
    trials = read_csv(run_dir / "trials.csv")
    complete = trials[trials["status"] == "complete"]
    scatters = [k for k in figs if k.startswith("fig-pareto-")]
    titles = [figs[k]["layout"]["title"]["text"] for k in scatters]
    assert "accuracy vs flops" in titles and "accuracy vs latency" in titles
    for k in scatters:
        traces = figs[k]["data"]
        plotted = [t for tr in traces if "customdata" in tr for t in (c[0] for c in tr["customdata"])]
        assert sorted(plotted) == sorted(complete["trial"])  # every complete trial exactly once
        on_front = {c[0] for tr in traces if tr["name"] == "Pareto" for c in tr["customdata"]}
        baselines = {tr["name"]: tr["customdata"][0][0] for tr in traces if tr["name"].startswith("baseline:")}
        assert set(baselines) == {"baseline: original", "baseline: uniform-prune-0.25", "baseline: uniform-int8"}
        assert on_front == pareto - set(baselines.values())
        infeasible = {c[0] for tr in traces if tr["name"] == "infeasible" for c in tr["customdata"]}
        assert infeasible == set(complete.loc[~complete["feasible"] & (complete["baseline"].isna()), "trial"])
        symbols = {tr["marker"]["symbol"] for tr in traces if tr["name"].startswith("baseline:")}
        assert len(symbols) == 3


def test_sections_and_header(run_dir, report):
    text = report.read_text()
    for needle in ("resnet20", "cifar10-jpeg", "quickstart", "tpe", "abc1234", "2.14.1", "Search progress",
                   "fig-hypervolume", "fig-durations", "Policies on the front", "optuna-dashboard sqlite:///",
                   "Not finalized yet"):
        assert needle in text, needle
    data = embedded(parse(report), "report-data")
    assert data["run"]["counts"] == {"complete": 13, "failed": 1, "pruned": 1, "running": 0, "total": 15,
                                     "feasible": 11, "pareto": len(data["pareto"]), "cached": 0,
                                     "workers": {"host:1": 15}}  # trials per worker (host:pid)
    assert [p["trial"] for p in data["policies"]] == data["pareto"]
    pol = data["policies"][0]
    assert pol["groups"][0] == "layer1.0.conv1" and len(pol["groups"]) == len(pol["prune_ratios"]) == 9
    hv = data["hypervolume"]
    assert 0 < hv["fraction"] <= 1 and hv["curve"]["fraction"][-1] == hv["fraction"]


def test_final_section(tmp_path):
    run_dir = build_run(tmp_path / "own")
    (run_dir / "final").mkdir()
    (run_dir / "final" / "metrics.json").write_text(json.dumps(
        {"test_accuracy": 80.123, "latency_speedup": 1.87, "flops_speedup": 2.5}))
    (run_dir / "final" / "model.onnx").write_bytes(b"onnx")
    page = parse(write_html_report(run_dir))
    assert "final/model.onnx" in page.links
    text = (run_dir / "report.html").read_text()
    assert "80.12%" in text and "Not finalized" not in text


def test_three_objectives_show_all_projections(run_dir_3d):
    data = report_data(run_dir_3d)
    pairs = {(s["x"], s["y"]) for s in data["scatter"]}
    assert {("flops", "accuracy"), ("latency", "accuracy"), ("flops", "latency")} <= pairs


def test_policy_selection_rule():
    import pandas as pd

    front = pd.DataFrame({"trial": range(30), "accuracy": [50 + i for i in range(30)],
                          "knee": [i == 17 for i in range(30)]})
    picks = select_policies(front, [("accuracy", "maximize")])
    assert len(picks) == MAX_POLICIES and len(set(picks)) == MAX_POLICIES
    assert {0, 29, 17} <= set(picks)


def test_only_failed_run_is_a_clear_error(tmp_path):
    run = build_run(tmp_path / "failed", n=3, all_failed=True)
    with pytest.raises(RunFormatError) as exc:
        write_html_report(run)
    msg = str(exc.value)
    assert "no trial completed" in msg and "6 failed" in msg
    assert "out of memory" in msg and "DivergenceError" in msg


def test_old_schema_run_is_a_clear_error(tmp_path):
    run_dir = build_run(tmp_path / "own")
    data = json.loads((run_dir / "run.json").read_text())
    data["schema"] = 0
    (run_dir / "run.json").write_text(json.dumps(data))
    with pytest.raises(RunFormatError, match="run schema = 0"):
        write_html_report(run_dir)


def test_run_info_groups_order_is_used(tmp_path):
    run_dir = build_run(tmp_path / "own")
    info = read_run_info(run_dir)
    order = [f"layer{s}.{b}.conv1" for s in (3, 2, 1) for b in range(3)]
    write_run_info(run_dir, RunInfo(**{**info.to_dict(), "groups": order}))
    data = report_data(run_dir)
    assert data["policies"][0]["groups"] == order


def test_duration_phases_follow_the_records(tmp_path):
    run_dir = build_run(tmp_path / "own")
    import json as _json

    from autocompress.rundir import record_path

    p = record_path(run_dir, 3)
    rec = _json.loads(p.read_text())
    rec["times"]["convert"] = 0.25
    p.write_text(_json.dumps(rec))
    times = report_data(run_dir)["times"]
    assert times["phases"] == ["prune", "finetune", "convert", "evaluate", "cost", "latency"]
    assert times["seconds"]["convert"][3] == 0.25 and times["seconds"]["convert"][0] is None


def test_failed_trials_listed_with_reasons(report):
    text = report.read_text()
    assert "Failed trials" in text and "DivergenceError: loss became nan at step 7</code>: trials 14" in text


def test_dropped_blocks_show_as_fully_pruned_groups(run_dir):
    """A front policy that drops residual blocks (``prune.drop``) plots their groups at ratio 1.0."""
    import dataclasses

    from autocompress.rundir import read_records, write_record
    from spaces.policy import Policy

    records = read_records(run_dir)
    data = report_data(run_dir)
    trial = data["policies"][0]["trial"]
    rec = next(r for r in records if r.trial == trial)
    policy = Policy.from_dict(rec.policy)
    ratios = {g: r for g, r in policy.prune.ratios.items() if not g.startswith("layer2.2.")}
    layers = {n: b for n, b in policy.quant.layers.items() if not n.startswith("layer2.2.")}
    dropped = policy.replace(prune=dataclasses.replace(policy.prune, ratios=ratios, drop=("layer2.2",)),
                             quant=dataclasses.replace(policy.quant, layers=layers))
    write_record(run_dir, dataclasses.replace(rec, policy=dropped.to_dict()))
    pol = next(p for p in report_data(run_dir)["policies"] if p["trial"] == trial)
    assert pol["dropped_blocks"] == ["layer2.2"] and "drop 1 blocks" in pol["summary"]
    ratio = dict(zip(pol["groups"], pol["prune_ratios"]))
    assert ratio["layer2.2.conv1"] == 1.0 and ratio["layer2.1.conv1"] == ratios.get("layer2.1.conv1", 0.0)
