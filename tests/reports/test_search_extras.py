"""Reports of a search with sensitivity seeds and multi-fidelity levels: the map as a heatmap (HTML and
Markdown PNG), seeds marked as seeds, the level each trial reached."""

from __future__ import annotations

import json

from autocompress.rundir import read_records, write_record
from compress.sensitivity import SensitivityMap
from reports.data import report_data
from reports.html import write_html_report
from reports.markdown import write_markdown_report
from reports.tables import read_csv, write_exports

from ._html import embedded, parse
from .conftest import GROUPS, build_run


def _with_seed_levels_and_map(root):
    build_run(root)
    records = read_records(root)
    seed = records[3]
    seed.baseline = "seed-flops-0.5"
    for r in records:
        if r.status == "complete":
            r.levels = {"20": dict(r.metrics)}
    seed.levels["80"] = dict(seed.metrics)
    for r in records:
        write_record(root, r)
    smap = SensitivityMap(reference=81.0, images=500, key="k",
                          prune={g: {0.0: 81.0, 0.3: 80.0 - i, 0.6: 70.0 - i} for i, g in enumerate(GROUPS)},
                          seconds={"prune": 12.0, "quant": 0.0, "total": 12.0},
                          depth={"layer2": {1: 80.5, 2: 77.0}, "layer3": {1: 79.0}})
    (root / "sensitivity.json").write_text(json.dumps(smap.to_dict()))
    return root, seed.trial


def test_sensitivity_map_seeds_and_levels_in_every_report(tmp_path):
    root, seed = _with_seed_levels_and_map(tmp_path / "run")
    data = report_data(root)
    sens = data["sensitivity"]
    assert sens["prune"]["rows"] == GROUPS and sens["prune"]["columns"] == [0.0, 0.3, 0.6]
    assert sens["prune"]["loss"][1] == [0.0, 2.0, 12.0]  # reference - top-1, group by group
    trials = read_csv(write_exports(root)["trials.csv"]).set_index("trial")
    assert trials.loc[seed, "level"] == 2 and trials.loc[0, "level"] == 1

    html = write_html_report(root)
    page = parse(html)
    figs = embedded(page, "report-figures")
    heat = figs["fig-sensitivity-prune"]["data"][0]
    assert heat["type"] == "heatmap" and heat["y"] == GROUPS
    assert sens["depth"]["rows"] == ["layer2", "layer3"] and sens["depth"]["columns"] == [1, 2]
    assert sens["depth"]["loss"] == [[0.5, 4.0], [2.0, None]]  # a stage's last k blocks dropped alone
    depth = figs["fig-sensitivity-depth"]["data"][0]
    assert depth["y"] == ["layer2", "layer3"] and depth["x"] == ["1", "2"]
    assert "id='sensitivity'" in html.read_text()
    names = [t.get("name") for f in figs.values() for t in f["data"]]
    assert "seed: seed-flops-0.5" in names and "baseline: original" in names

    md = write_markdown_report(root)
    assert (md.parent / "figures" / "sensitivity.png").is_file()
    assert "![sensitivity](figures/sensitivity.png)" in md.read_text()


def test_no_map_no_section(run_dir, tmp_path):
    assert report_data(run_dir, refresh_exports=False)["sensitivity"] is None
    out = write_html_report(run_dir, tmp_path / "r.html")
    assert "id='sensitivity'" not in out.read_text()
