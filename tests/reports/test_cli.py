"""`autocompress report` and `autocompress compare` end to end through the CLI entry point."""

from __future__ import annotations

import json

from reports.tables import read_csv
from search.cli import main

from ._html import embedded, parse
from .conftest import build_run


def test_report_formats(tmp_path, capsys):
    run_dir = build_run(tmp_path / "run", n=4)
    assert main(["report", str(run_dir), "--format", "json", "--out", str(tmp_path / "r.json")]) == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["pareto"] == read_csv(run_dir / "pareto.csv")["trial"].tolist()

    assert main(["report", str(run_dir), "--out", str(tmp_path / "r.md")]) == 0  # format from suffix
    md = (tmp_path / "r.md").read_text()
    assert "## Pareto points" in md
    pngs = sorted((tmp_path / "figures").glob("*.png"))
    assert any(p.name == "pareto-accuracy-vs-flops.png" for p in pngs)
    for p in pngs:
        assert f"figures/{p.name}" in md and p.read_bytes()[:4] == b"\x89PNG"
    for t in data["pareto"]:
        assert f"recipes/trial-{t}.yaml" in md

    assert main(["report", str(run_dir), "--no-figures"]) == 0  # default: RUN/report.html
    page = parse(run_dir / "report.html")
    assert embedded(page, "report-data")["pareto"] == data["pareto"]
    assert not (run_dir / "figures").exists()
    assert str(run_dir / "report.html") in capsys.readouterr().out


def test_report_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "no such run directory" in err and "Traceback" not in err
    run = build_run(tmp_path / "failed", n=2, all_failed=True)
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert "no trial completed" in err and "out of memory" in err


def test_compare_cli(tmp_path, capsys):
    a = build_run(tmp_path / "a", seed=0)
    b = build_run(tmp_path / "b", seed=1)
    out = tmp_path / "cmp.html"
    assert main(["compare", str(a), str(b), "--out", str(out)]) == 0
    data = embedded(parse(out), "report-data")
    assert [r["label"] for r in data["runs"]] == ["a", "b"]
    assert main(["compare", str(a), "--out", str(out)]) == 2
    assert "at least two" in capsys.readouterr().err


def test_paper_figures_png_and_svg(tmp_path):
    from reports.data import report_data
    from reports.figures import write_figures

    run = build_run(tmp_path / "run", n=2)
    data = report_data(run)
    files = write_figures(run, data=data)
    assert {p.parent for p in files} == {run / "figures"}
    expected = {f"pareto-{s['y']}-vs-{s['x']}" for s in data["scatter"]} | {
        f"policy-trial-{p['trial']}" for p in data["policies"]}
    assert {p.stem for p in files} == expected and {p.suffix for p in files} == {".png", ".svg"}
    for p in files:
        head = p.read_bytes()[:200]
        assert head.startswith(b"\x89PNG") if p.suffix == ".png" else b"<svg" in p.read_bytes()[:2000]
