"""The "Proxy fidelity" section (HTML, Markdown, JSON) and `compare`'s tau per run, from audit records
written by hand (hand-checked tau and rho) on report-test runs."""

from __future__ import annotations

import json

import pytest

from autocompress.rundir import AuditRecord, atomic_write_json, audit_dir, load_run, write_audit_record
from reports.compare import compare_data, write_compare_report
from reports.data import NO_AUDIT, report_data
from reports.html import render_html, write_html_report
from reports.markdown import render_markdown, write_markdown_report
from search.cli import main

from ._html import embedded, parse
from .conftest import build_run

SETTINGS = {"schedule": {"epochs": None, "steps": 3, "lr": 0.01, "batch_size": 16, "schedule": "cosine"},
            "seed": None, "kd": True}


def _audit(run_dir, *, noise: bool = False) -> list[int]:
    """Audit records for 4 complete trials: proxy = their search accuracy, final val accuracies in the rank
    order 1, 3, 2, 4 of the proxies (one discordant pair of 6: tau 4/6, rho 0.8). Returns the trials."""
    run = load_run(run_dir)
    complete = sorted((r for r in run.records if r.status == "complete"), key=lambda r: r.metrics["accuracy"])
    chosen = [complete[0], complete[3], complete[6], complete[-1]]
    assert len({r.metrics["accuracy"] for r in chosen}) == 4
    for rec, final in zip(chosen, (70.0, 72.0, 71.0, 73.0)):
        write_audit_record(run_dir, AuditRecord(
            trial=rec.trial, settings=SETTINGS, proxy_accuracy=rec.metrics["accuracy"], val_accuracy=final,
            test_accuracy=final - 0.5, search_metrics=dict(rec.metrics), metrics={"flops": rec.metrics["flops"]}))
    if noise:  # one trial's proxy under 2 other seeds: proxy +1 and -1 -> pooled sigma exactly 1.0
        p = chosen[1].metrics["accuracy"]
        seeds = {str(chosen[1].trial): {"1": p + 1, "2": p - 1}}
        atomic_write_json(audit_dir(run_dir) / "noise.json", {"seeds": seeds})
    return sorted(r.trial for r in chosen)


def test_report_data_fidelity_hand_checked(tmp_path):
    run_dir = build_run(tmp_path / "run")
    trials = _audit(run_dir)
    fid = report_data(run_dir)["fidelity"]
    assert fid["audited"] and fid["n"] == 4 and [r["trial"] for r in fid["rows"]] == trials
    assert fid["kendall_tau"]["value"] == pytest.approx(4 / 6)
    assert fid["spearman_rho"]["value"] == pytest.approx(0.8)
    low, high = fid["kendall_tau"]["ci_low"], fid["kendall_tau"]["ci_high"]
    assert -1 <= low <= 4 / 6 <= high <= 1
    assert fid["cost_metric"] == "flops" and 1 <= len(fid["regret"]) <= 3
    assert all(r["chosen_trial"] in trials and r["best_trial"] in trials and r["regret"] >= 0 for r in fid["regret"])
    assert fid["noise"] is None and fid["ties"] == [] and fid["settings"] == SETTINGS


def test_html_section_scatter_with_identity_line(tmp_path):
    run_dir = build_run(tmp_path / "run")
    trials = _audit(run_dir)
    page = parse(write_html_report(run_dir))
    text = (run_dir / "report.html").read_text()
    section = text[text.index("<section id='fidelity'>"):]
    section = section[:section.index("</section>")]
    assert "<h2>Proxy fidelity</h2>" in section and "0.667 [" in section and "0.800 [" in section
    fig = embedded(page, "report-figures")["fig-fidelity"]
    names = [t["name"] for t in fig["data"]]
    assert names[0] == "final = proxy" and fig["data"][0]["x"] == fig["data"][0]["y"]
    plotted = sorted(int(t) for tr in fig["data"][1:] for t in tr["text"])
    assert plotted == trials
    assert embedded(page, "report-data")["fidelity"]["kendall_tau"]["value"] == pytest.approx(4 / 6)
    assert "id='regret'" in section and "id='audit'" in section


def test_markdown_and_json_sections(tmp_path, capsys):
    run_dir = build_run(tmp_path / "run")
    _audit(run_dir)
    md = write_markdown_report(run_dir).read_text()
    assert "## Proxy fidelity" in md and "Kendall tau: 0.667 [" in md and "Spearman rho: 0.800 [" in md
    assert "![fidelity](figures/fidelity.png)" in md
    assert (run_dir / "figures" / "fidelity.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["report", str(run_dir), "-f", "json", "-o", "-"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fidelity"]["kendall_tau"]["value"] == pytest.approx(4 / 6)


def _pages(run_dir) -> tuple[dict, str, str]:
    """report_data once, and the HTML and Markdown rendered from it (no figure files)."""
    data = report_data(run_dir)
    return (data, render_html(data, run_dir, run_dir / "report.html"),
            render_markdown(data, run_dir, run_dir / "report.md", []))


def test_without_audit_the_section_says_how(tmp_path):
    run_dir = build_run(tmp_path / "run")
    data, html, md = _pages(run_dir)
    assert data["fidelity"] == {"audited": False, "message": NO_AUDIT}
    assert NO_AUDIT == "no audit yet: run `autocompress audit RUN`"
    assert "<h2>Proxy fidelity</h2><p class='muted'>no audit yet: run <code>autocompress audit RUN</code>" in html
    assert "fig-fidelity" not in html
    assert "## Proxy fidelity\n\nNo audit yet: run `autocompress audit RUN`." in md


def test_noise_marks_front_ties_within_two_sigma(tmp_path):
    run_dir = build_run(tmp_path / "run")
    _audit(run_dir, noise=True)
    data, html, md = _pages(run_dir)
    fid = data["fidelity"]
    assert fid["noise"]["sigma"] == pytest.approx(1.0)
    acc = {r["trial"]: r["accuracy"] for r in data["trials"]}
    front = data["pareto"]
    expected = [[a, b] for i, a in enumerate(front) for b in front[i + 1:] if abs(acc[a] - acc[b]) < 2.0]
    assert expected and fid["ties"] == expected
    a, b = expected[0]
    row = html[html.index(f"<tr data-trial='{a}'>"):]
    row = row[:row.index("</tr>")]
    assert "tie: " in row and str(b) in row
    assert "proxy noise: sigma 1.000" in html
    assert "tie: " in md and "proxy noise: sigma 1.000" in md


def test_compare_shows_tau_per_run_or_no_audit(tmp_path, capsys):
    a = build_run(tmp_path / "a", seed=0)
    b = build_run(tmp_path / "b", seed=3, n=6)
    _audit(a)
    data = compare_data([a, b])
    assert data["runs"][0]["fidelity"]["kendall_tau"]["value"] == pytest.approx(4 / 6)
    assert data["runs"][0]["fidelity"]["text"].startswith("0.667 [")
    assert data["runs"][1]["fidelity"] == {"audited": False, "text": "no audit",
                                           "message": NO_AUDIT}
    html = write_compare_report([a, b], tmp_path / "cmp.html").read_text()
    assert "proxy tau [95% CI]" in html and "0.667 [" in html and ">no audit</td>" in html
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "-o", str(tmp_path / "c.html")]) == 0
    err = capsys.readouterr().err
    assert "proxy tau 0.667 [" in err and "proxy tau no audit" in err
