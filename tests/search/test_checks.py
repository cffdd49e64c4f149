"""Bad input to any command: one line on stderr, exit code 2, no traceback, before any work, and no
directory left behind (issue 13, cases 1-6)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from search.checks import InputError, check_device, check_out_dir, check_storage, output_dir
from search.cli import main
from tests.reports.conftest import build_run

RECIPE = Path(__file__).resolve().parents[2] / "spaces" / "recipes" / "resnet20-prune30-kd.yaml"


def _tree(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def _write_images(root: Path, split: str, classes: dict[str, int]) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, n in classes.items():
        (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)).save(root / split / name / f"{i}.png")


def _runs(tmp: Path) -> dict[str, Path]:
    """Run directories with one damaged file each (records in the real format)."""
    garbage = {"run.json": "{not json", "records/trial-00002.json": "[1, 2", "config.yaml": "model: [1\n b: }"}
    runs = {}
    for name, (rel, text) in zip(("bad-run-json", "bad-record", "bad-config"), garbage.items()):
        run = build_run(tmp / name, n=3)
        if name != "bad-config":
            (run / "config.yaml").write_text("name: x\n")  # not reached: the damaged file fails first
        (run / rel).write_text(text)
        runs[name] = run
    return runs


CASES = {
    # 1. storage URLs and their drivers
    "storage-scheme": (["search", "--storage", "foo://bar", "--out", "{t}/r"], "unknown database scheme foo://"),
    "storage-path": (["search", "--storage", "study", "--out", "{t}/r"], "--storage = 'study': not a storage URL"),
    "storage-memory": (["search", "--storage", "sqlite://", "--out", "{t}/r"], "in-memory database"),
    "storage-driver": (["search", "--storage", "mysql+pymysql://u:secret@db/ac", "--out", "{t}/r"],
                       "its database driver pymysql is not installed; pip install pymysql"),
    # 2. devices, for every command that takes --device
    "search-device": (["search", "--device", "tpu9", "--out", "{t}/r"], "--device = 'tpu9': not a device; allowed"),
    "search-cuda": (["search", "--device", "cuda", "--out", "{t}/r"], "--device = cuda: no CUDA device"),
    "apply-device": (["apply", str(RECIPE), "--checkpoint", "{t}/x.pt", "--dataset", "digits", "--out", "{t}/o",
                      "--device", "tpu9"], "--device = 'tpu9': not a device"),
    "apply-onnx-tolerance": (["apply", str(RECIPE), "--checkpoint", "{t}/x.pt", "--dataset", "digits", "--out",
                              "{t}/o", "--onnx-tolerance", "-1"], "--onnx-tolerance = -1.0: must be >= 0"),
    "apply-verify-onnx": (["apply", str(RECIPE), "--verify", "--latency-backend", "onnxruntime"],
                          "--latency-backend: not used with --verify"),
    "apply-int8-engine": (["apply", str(RECIPE), "--checkpoint", "{t}/x.pt", "--dataset", "digits", "--out", "{t}/o",
                           "--int8-engine", "mkl"], "--int8-engine mkl: int8 engine = 'mkl': allowed x86, fbgemm, "
                                                    "onednn"),
    "apply-verify-engine": (["apply", str(RECIPE), "--verify", "--int8-engine", "onednn"],
                            "--int8-engine: not used with --verify"),
    "finetune-device": (["finetune", "--device", "cuda:3", "--out", "{t}/o"], "--device = cuda:3: no CUDA device"),
    "evaluate-device": (["evaluate", "--model", "resnet20", "--device", "tpu9"], "--device = 'tpu9'"),
    "finalize-device": (["finalize", "{t}/nope", "--device", "tpu9"], "--device = 'tpu9'"),
    # 3. --out is a file
    "search-out-file": (["search", "--out", "{t}/afile"], "--out = '{t}/afile': an existing file, not a folder"),
    "apply-out-file": (["apply", str(RECIPE), "--checkpoint", "{t}/x.pt", "--dataset", "digits", "--out",
                        "{t}/afile"], "an existing file, not a folder"),
    "finetune-out-file": (["finetune", "--out", "{t}/afile/sub"], "{t}/afile is a file"),
    "report-out-folder": (["report", "{t}/bad-run-json", "--out", "{t}"], "an existing folder; give a file name"),
    # 4. damaged run directories
    "report-run-json": (["report", "{t}/bad-run-json"], "bad-run-json/run.json: not valid JSON"),
    "report-record": (["report", "{t}/bad-record"], "trial-00002.json: not valid JSON"),
    "report-config": (["report", "{t}/bad-config"], "bad-config/config.yaml: not a valid search space"),
    "finalize-config": (["finalize", "{t}/bad-config"], "bad-config/config.yaml: not a valid search space"),
    # 5. a one-class dataset
    "one-class": (["finetune", "--model", "resnet20", "--dataset", "imagefolder", "--data-dir", "{t}/one",
                   "--out", "{t}/o"],
                  "imagefolder {t}/one: 1 class found (cat); at least 2 needed"),
    # 6. failing after the output folder was made: it goes again
    "search-data-dir": (["search", "--set", "data.dataset=imagefolder", "--set", "data.data_dir={t}/missing",
                         "--out", "{t}/r"], "does not exist or is not a folder"),
    "apply-data-dir": (["apply", str(RECIPE), "--checkpoint", "{t}/x.pt", "--dataset", "imagefolder", "--data-dir",
                        "{t}/missing", "--out", "{t}/o"], "--data-dir = '{t}/missing': no such folder"),
    "apply-one-class": (["apply", str(RECIPE), "--checkpoint", "{t}/resnet20.pt", "--dataset", "imagefolder",
                         "--data-dir", "{t}/one", "--out", "{t}/new/o"], "1 class found (cat)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_rc2_and_leaves_nothing(case, tmp_path, monkeypatch, capfd):
    if case == "search-cuda" and torch.cuda.is_available():
        pytest.skip("checks the machine without CUDA")
    if case == "storage-driver" and importlib.util.find_spec("pymysql") is not None:
        pytest.skip("pymysql is installed here")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("a file\n")
    torch.save({"w": torch.zeros(1)}, tmp_path / "x.pt")
    if case == "apply-one-class":  # weights that load: the data fails after --out was made
        from compress.models import build_model
        from spaces.policy import Policy

        torch.save(build_model(Policy.load(RECIPE).model).state_dict(), tmp_path / "resnet20.pt")
    _runs(tmp_path)
    _write_images(tmp_path / "one", "train", {"cat": 3})
    _write_images(tmp_path / "one", "val", {"cat": 2})
    before = _tree(tmp_path)
    argv, needle = CASES[case]
    rc = main([a.replace("{t}", str(tmp_path)) for a in argv])
    err = capfd.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert " ERROR " in lines[-1] and sum(" ERROR " in ln for ln in lines) == 1, err  # the error is one line
    assert needle.replace("{t}", str(tmp_path)) in lines[-1]
    assert "secret" not in err
    assert _tree(tmp_path) == before, sorted(map(str, _tree(tmp_path) - before))


# ----- the checks themselves ----------------------------------------------------------------------


def test_check_device_forms(monkeypatch):
    assert check_device("cpu") == "cpu"
    for bad in ("tpu9", "CPU", "cuda:", "cuda:x", "gpu"):
        with pytest.raises(InputError, match="allowed cpu, cuda, cuda:N, mps"):
            check_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda") == "cuda" and check_device("cuda:1") == "cuda:1"
    with pytest.raises(InputError, match="has 2 CUDA device"):
        check_device("cuda:2", "--gpu")


def test_check_storage_accepts_the_known_forms(tmp_path):
    assert check_storage(None, tmp_path).url == f"sqlite:///{(tmp_path / 'study.db').resolve()}"
    assert check_storage("journal:///x/s.log", tmp_path).kind == "journal"
    assert check_storage(str(tmp_path / "s.db"), tmp_path).path == (tmp_path / "s.db").resolve()
    assert not (tmp_path / "s.db").exists()  # nothing opened or created


def test_output_dir_removes_only_what_it_created(tmp_path):
    from compress.data import DatasetError

    with pytest.raises(DatasetError), output_dir(tmp_path / "a" / "b") as out:
        (out / "partial.log").write_text("x")
        raise DatasetError("bad data")
    assert not (tmp_path / "a").exists()
    (tmp_path / "old").mkdir()
    with pytest.raises(DatasetError), output_dir(tmp_path / "old") as out:
        raise DatasetError("bad data")
    assert (tmp_path / "old").is_dir()  # existed before
    with pytest.raises(DatasetError), output_dir(tmp_path / "kept", keep=lambda d: True):
        raise DatasetError("after a result")
    assert (tmp_path / "kept").is_dir()
    with pytest.raises(RuntimeError), output_dir(tmp_path / "bug"):
        raise RuntimeError("a bug: left for inspection")
    assert (tmp_path / "bug").is_dir()
    (tmp_path / "bug" / "f").write_text("")
    with pytest.raises(InputError, match="an existing file"):
        check_out_dir(tmp_path / "bug" / "f")
    with pytest.raises(InputError, match="is a file, so no folder"):
        check_out_dir(tmp_path / "bug" / "f" / "g")
