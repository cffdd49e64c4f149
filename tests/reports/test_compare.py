"""compare: overlaid fronts, hypervolume against one shared reference point, clear errors."""

from __future__ import annotations

import json
import re

import pytest

from autocompress.pareto import hypervolume
from autocompress.rundir import RunInfo, read_run_info, write_run_info
from reports.compare import CompareError, compare_data, write_compare_report
from reports.tables import pareto_frame

from ._html import embedded, parse
from .conftest import build_run


@pytest.fixture
def two_runs(tmp_path):
    a = build_run(tmp_path / "tpe", seed=0)
    b = build_run(tmp_path / "random", seed=3, n=6)
    return a, b


def test_shared_reference_and_hypervolumes(two_runs):
    a, b = two_runs
    # give run b a different own reference: the shared one must be the worse of the two
    info = read_run_info(b)
    write_run_info(b, RunInfo(**{**info.to_dict(), "hv_reference": {"flops": 50_000_000.0}}))
    data = compare_data([a, b])
    assert data["reference"] == [0.0, 50_000_000.0]
    for run_dir, entry in zip((a, b), data["runs"]):
        front = pareto_frame(run_dir)
        expected = hypervolume(front[["accuracy", "flops"]].to_numpy(float), ["maximize", "minimize"],
                               data["reference"])
        assert entry["hypervolume"] == expected
        assert entry["fraction"] == expected / data["box_volume"]
        assert [p["trial"] for p in entry["front"]] == front["trial"].tolist()
    # the joint front is made of the runs' own front points
    assert 1 <= sum(r["contribution"] for r in data["runs"]) <= sum(r["pareto"] for r in data["runs"])
    assert [r["label"] for r in data["runs"]] == ["tpe", "random"]


def test_compare_html_is_self_contained(two_runs, tmp_path):
    out = write_compare_report(list(two_runs), tmp_path / "cmp.html", labels=["A", "B"])
    page = parse(out)
    assert not [v for _, _, v in page.loads if re.match(r"^\s*(https?:)?//", v)]
    data = embedded(page, "report-data")
    figs = embedded(page, "report-figures")
    assert [r["label"] for r in data["runs"]] == ["A", "B"]
    trace_names = [t["name"] for t in figs["fig-compare-0"]["data"]]
    assert trace_names == ["A", "B"]
    rows = page.tables["compare"] if "compare" in page.tables else []
    assert "Plotly.newPlot" in out.read_text() and rows == []  # rows keyed by data-run, not data-trial
    assert f"{data['runs'][0]['hypervolume']!r}" in out.read_text()


def test_compare_json_output(two_runs, tmp_path):
    out = write_compare_report(list(two_runs), tmp_path / "cmp.json")
    data = json.loads(out.read_text())
    assert data["format"] == "autocompress-compare" and len(data["runs"]) == 2


def test_compare_errors(two_runs, tmp_path):
    a, b = two_runs
    with pytest.raises(CompareError, match="at least two"):
        compare_data([a])
    c = build_run(tmp_path / "other", objectives=(("accuracy", "maximize"), ("latency", "minimize")))
    with pytest.raises(CompareError, match="different objectives"):
        compare_data([a, c])
    with pytest.raises(CompareError, match="2 names for 3 runs"):
        compare_data([a, b, build_run(tmp_path / "third", seed=5)], labels=["x", "y"])


def test_settings_that_differ_and_reference_warning(two_runs):
    a, b = two_runs
    info = read_run_info(b)
    ref = dict(info.reference, flops=info.reference["flops"] / 4)
    budget = dict(info.budget, finetune_steps=50)
    write_run_info(b, RunInfo(**{**info.to_dict(), "reference": ref, "budget": budget}))
    data = compare_data([a, b])
    assert data["runs"][0]["differs"]["budget.finetune_steps"] == 20
    assert data["runs"][1]["differs"]["budget.finetune_steps"] == 50
    assert "search.sampler" not in data["runs"][0]["differs"]  # same in both runs
    assert any("differ in flops" in w for w in data["warnings"])
