"""Real browser: the report renders offline in headless Chromium (plots drawn, no network requests)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from reports.html import write_html_report
from reports.tables import read_csv

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("check_report_browser", REPO / "scripts" / "check_report_browser.py")
browser = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("check_report_browser", browser)
_spec.loader.exec_module(browser)

_, _, MISSING = browser.find_chromium()
needs_chromium = pytest.mark.skipif(MISSING is not None, reason=f"real-browser check skipped: {MISSING}")


def assert_renders(report: Path, run_dir: Path, shot: Path) -> browser.BrowserCheck:
    result = browser.check_report(report, shot)
    trials = read_csv(run_dir / "trials.csv")
    plotted = int(((trials["status"] == "complete") & trials["accuracy"].notna() & trials["flops"].notna()).sum())
    assert result.rendered, result
    assert result.pareto_plots >= 1
    # the first plot (accuracy vs the first cost objective) draws one SVG point per complete trial
    assert result.points_per_plot[0] == plotted, result.points_per_plot
    assert all(n > 0 for n in result.points_per_plot)
    # the plot area is not blank: markers, lines and axes cover a visible share of its bounding box
    assert result.plot_box["width"] > 300 and result.plot_box["height"] > 300
    assert result.nonwhite_fraction > 0.02, result.nonwhite_fraction
    assert result.external_requests == [], result.external_requests
    assert any(u.startswith("file:") for u in result.requests)
    assert result.console_errors == [], result.console_errors
    assert shot.stat().st_size > 50_000
    return result


@needs_chromium
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    report = write_html_report(run_dir)
    assert_renders(report, run_dir, tmp_path / "report.png")


@needs_chromium
def test_blank_page_is_detected(tmp_path, run_dir):
    """The pixel check can fail: an empty plot div reads as (almost) white."""
    report = write_html_report(run_dir)
    text = report.read_text()
    marker = '<script id="report-figures" type="application/json">'
    start = text.index(marker) + len(marker)
    end = text.index("</script>", start)
    blank = tmp_path / "blank.html"
    blank.write_text(text[:start] + "{}" + text[end:])  # no figures drawn
    result = browser.check_report(blank, None, timeout_s=3)
    assert result.rendered and result.pareto_plots >= 1
    assert result.points_per_plot[0] == 0
    assert result.nonwhite_fraction < 0.02, result.nonwhite_fraction


@pytest.mark.slow
@needs_chromium
def test_real_search_run_report_renders(tmp_path):
    """A small REAL search (quickstart: ResNet-20 trained on digits), then its report in Chromium."""
    import subprocess

    from search.cli import main

    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "search.cli", "search", "quickstart", "--trials", "5", "--out", str(run_dir),
           "--no-progress", "--set", "model.baseline.epochs=3", "--set", "budget.finetune.steps=10"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main(["report", str(run_dir), "--no-figures"]) == 0
    trials = read_csv(run_dir / "trials.csv")
    assert (trials["status"] == "complete").sum() >= 5
    assert set(trials["baseline"].dropna()) >= {"original"}
    result = assert_renders(run_dir / "report.html", run_dir, tmp_path / "real.png")
    assert result.pareto_plots >= 1
    # the Optuna storage stays readable (optuna-dashboard reads the same storage)
    import optuna

    summaries = optuna.get_all_study_summaries(f"sqlite:///{run_dir / 'study.db'}")
    assert summaries and summaries[0].n_trials >= 5
