"""compress.data: registry, splits, loaders, imagefolder cache, CIFAR batch files, errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from compress.data import DATASETS, NORMALIZATIONS, DatasetError, _imagefolder, get_dataset
from compress.registry import UnknownNameError

pytestmark = pytest.mark.usefixtures("one_thread")  # steady timings on a shared, oversubscribed 2-core box


# ---------------------------------------------------------------- registry / errors
def test_unknown_dataset_lists_known_ones():
    with pytest.raises(UnknownNameError) as exc:
        get_dataset("mnist-fashion")
    msg = str(exc.value)
    for name in DATASETS.names():
        assert name in msg


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_missing_data_dir_is_one_clear_error(name, tmp_path):
    with pytest.raises(DatasetError) as exc:
        get_dataset(name, tmp_path / "nowhere")
    msg = str(exc.value)
    assert name in msg and "--data-dir" in msg and "--download" in msg and "imagefolder" in msg
    assert str(tmp_path / "nowhere") in msg


def test_imagefolder_needs_data_dir(tmp_path):
    with pytest.raises(DatasetError, match="--data-dir"):
        get_dataset("imagefolder")
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match="val/ or test/"):
        get_dataset("imagefolder", tmp_path)


def test_bad_normalization_lists_allowed(digits):
    with pytest.raises(DatasetError) as exc:
        get_dataset("digits", normalization="zca")
    assert "zca" in str(exc.value) and "imagenet" in str(exc.value) and "cifar" in str(exc.value)


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_has_a_description(name):
    assert DATASETS.describe(name)


# ---------------------------------------------------------------- digits
def test_digits_split_is_disjoint_complete_and_deterministic(digits):
    from compress.data._digits import digits_split_indices

    tr, va, te = digits_split_indices()
    sets = [set(s.tolist()) for s in (tr, va, te)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sets[0] | sets[1] | sets[2] == set(range(1797))
    assert [len(digits.train), len(digits.val), len(digits.test)] == [len(tr), len(va), len(te)]
    assert abs(len(tr) / 1797 - 0.70) < 0.01 and abs(len(te) / 1797 - 0.15) < 0.01
    again = get_dataset("digits", seed=5)  # the split is fixed; seed only moves calib
    assert torch.equal(digits.test.images, again.test.images)
    assert torch.equal(digits.train.labels, again.train.labels)
    for ds in (digits.train, digits.val, digits.test):  # stratified: every class everywhere
        assert set(ds.labels.tolist()) == set(range(10))


def test_digits_loader_shapes_and_normalization(digits):
    x, y = next(iter(digits.loader("val", batch_size=len(digits.val))))
    assert x.shape == (len(digits.val), 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.min() >= 0 and y.max() < digits.num_classes
    # own statistics: standardized values over the eval split
    assert abs(float(x.mean())) < 0.15 and 0.8 < float(x.std()) < 1.2
    assert digits.input_size == 32 and digits.num_classes == 10
    x0, y0 = digits.val[0]
    assert torch.allclose(x0, x[0]) and y0 == int(y[0])


def test_imagenet_normalization_preset_applied():
    d = get_dataset("digits", normalization="imagenet")
    mean, std = NORMALIZATIONS["imagenet"]
    assert d.mean == mean and d.std == std
    x, _ = d.test[0]
    raw = d.test.images[0].float() / 255
    expected = (raw - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert torch.allclose(x, expected, atol=1e-6)


def test_train_augments_eval_does_not(digits):
    torch.manual_seed(1)
    a = torch.stack([digits.train[0][0] for _ in range(8)])
    assert not all(torch.equal(a[0], a[i]) for i in range(1, 8)), "train split should be augmented"
    b = torch.stack([digits.test[0][0] for _ in range(3)])
    assert torch.equal(b[0], b[1]) and torch.equal(b[1], b[2])
    # augment=False turns it off
    plain = get_dataset("digits", augment=False)
    assert torch.equal(plain.train[0][0], plain.train[0][0])


def test_loader_limit_is_seeded_and_deterministic(digits):
    def labels(seed):
        return torch.cat([y for _, y in digits.loader("test", 32, seed=seed, limit=50)])
    assert len(labels(0)) == 50
    assert torch.equal(labels(0), labels(0))
    assert not torch.equal(labels(0), labels(1))
    # train shuffles deterministically given the seed (augmentation from torch's global RNG)
    def first(seed):
        torch.manual_seed(0)
        return next(iter(digits.loader("train", 16, seed=seed)))
    (xa, ya), (xb, yb) = first(3), first(3)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert len(digits.loader("train", 100)) == len(digits.train) // 100  # drop_last on train


def test_calib_is_small_subset_of_train(digits):
    small = get_dataset("digits", calib_size=64)
    assert len(small.calib) == 64 and not small.calib.augment
    train_rows = {small.train.images[i].numpy().tobytes() for i in range(len(small.train))}
    assert all(small.calib.images[i].numpy().tobytes() in train_rows for i in range(64))




# ---------------------------------------------------------------- imagefolder
def _write_jpegs(root: Path, split: str, classes: dict[str, int], size: int = 16, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, n in classes.items():
        d = root / split / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            base = rng.integers(0, 255, size=3)
            arr = np.clip(base + rng.integers(-20, 20, size=(size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(d / f"{i:03d}.jpg", quality=90)


@pytest.fixture
def jpeg_root(tmp_path):
    _write_jpegs(tmp_path, "train", {"b_cat": 12, "a_dog": 10, "c_eel": 8})
    _write_jpegs(tmp_path, "test", {"b_cat": 3, "a_dog": 4, "c_eel": 2}, seed=1)
    return tmp_path


def test_imagefolder_small_images_load_into_memory(jpeg_root):
    d = get_dataset("imagefolder", jpeg_root, val_fraction=0.2, calib_size=5)
    assert d.classes == ("a_dog", "b_cat", "c_eel") and d.num_classes == 3
    assert d.input_size == 16
    assert len(d.train) + len(d.val) == 30 and len(d.val) == 6 and len(d.test) == 9 and len(d.calib) == 5
    x, y = next(iter(d.loader("test", 9)))
    assert x.shape == (9, 3, 16, 16)
    assert y.tolist() == [0] * 4 + [1] * 3 + [2] * 2
    # pixels match PIL's decode of the same file
    from PIL import Image

    ref = np.array(Image.open(jpeg_root / "test" / "a_dog" / "000.jpg").convert("RGB"))
    assert torch.equal(d.test.images[0], torch.from_numpy(ref).permute(2, 0, 1))


def test_imagefolder_cache_is_reused_and_invalidated(jpeg_root, monkeypatch):
    get_dataset("imagefolder", jpeg_root)
    caches = sorted((jpeg_root / ".autocompress-cache").glob("*.pt"))
    assert [p.name.split("-")[0] for p in caches] == ["test", "train"]

    calls = []
    real = _imagefolder.decode_image

    def counting(path, size):
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(_imagefolder, "decode_image", counting)
    again = get_dataset("imagefolder", jpeg_root)
    assert calls == [], "second load must come from the cache"
    assert len(again.test) == 9

    # change one test file: only the test split is decoded again
    target = jpeg_root / "test" / "b_cat" / "000.jpg"
    _write_jpegs(jpeg_root / "tmpw", "x", {"c": 1}, seed=7)
    os.replace(jpeg_root / "tmpw" / "x" / "c" / "000.jpg", target)
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = get_dataset("imagefolder", jpeg_root)
    assert len(calls) == 9 and all("test" in str(p) for p in calls)
    assert not torch.equal(changed.test.images, again.test.images)
    assert len(list((jpeg_root / ".autocompress-cache").glob("test-*.pt"))) == 1  # stale one removed


def test_imagefolder_broken_image_names_the_file(jpeg_root):
    bad = jpeg_root / "train" / "c_eel" / "003.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DatasetError) as exc:
        get_dataset("imagefolder", jpeg_root)
    assert str(bad) in str(exc.value)


def test_imagefolder_val_folder_and_class_mismatch(tmp_path):
    _write_jpegs(tmp_path, "train", {"a": 4, "b": 4})
    _write_jpegs(tmp_path, "val", {"a": 2, "b": 2})
    d = get_dataset("imagefolder", tmp_path)
    assert len(d.test) == 4  # val/ alone acts as the test split; val is held out of train
    assert len(d.train) == 7 and len(d.val) == 1
    _write_jpegs(tmp_path, "test", {"a": 1, "z": 1})
    with pytest.raises(DatasetError, match="different class folders"):
        get_dataset("imagefolder", tmp_path)


def test_imagefolder_large_images_are_lazy(tmp_path):
    _write_jpegs(tmp_path, "train", {"a": 3, "b": 3}, size=80)
    _write_jpegs(tmp_path, "val", {"a": 2, "b": 2}, size=80)
    d = get_dataset("imagefolder", tmp_path, input_size=64)
    assert d.input_size == 64
    x, y = next(iter(d.loader("test", 4)))
    assert x.shape == (4, 3, 64, 64) and y.tolist() == [0, 0, 1, 1]
    assert len(d.train) + len(d.val) == 6
    assert not (tmp_path / ".autocompress-cache").exists() or not any((tmp_path / ".autocompress-cache").iterdir())


# ---------------------------------------------------------------- CIFAR batch files
def _write_cifar10(root: Path, n_train_per_batch: int = 6, n_test: int = 5) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", n_train_per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        entry = {"batch_label": name, "labels": [int(v) for v in rng.integers(0, 10, n)],
                 "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "filenames": [f"{name}_{i}.png" for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": n_train_per_batch, "num_vis": 3072}, f, protocol=2)
    return folder


def test_cifar10_reads_python_batches(tmp_path):
    folder = _write_cifar10(tmp_path)
    d = get_dataset("cifar10", tmp_path, val_fraction=0.2, calib_size=4)
    assert d.classes[0] == "airplane" and d.num_classes == 10 and d.normalization == "imagenet"
    assert len(d.train) == 24 and len(d.val) == 6 and len(d.test) == 5 and len(d.calib) == 4
    with open(folder / "test_batch", "rb") as f:
        raw = pickle.load(f)
    assert torch.equal(d.test.images[2], torch.from_numpy(raw["data"][2].reshape(3, 32, 32)))
    assert d.test.labels.tolist() == raw["labels"]
    # pointing at the batch folder itself works too
    assert len(get_dataset("cifar10", folder).test) == 5
    # torchvision's own reader agrees (same format), bypassing its md5 check of the official files
    from torchvision.datasets import CIFAR10

    class Unchecked(CIFAR10):
        def _check_integrity(self):
            return True

    Unchecked.meta = {**CIFAR10.meta, "md5": None}
    tv = Unchecked(str(tmp_path), train=False)
    assert torch.equal(d.test.images[0], torch.from_numpy(tv.data[0]).permute(2, 0, 1))


def test_cifar_batch_with_code_is_refused(tmp_path):
    folder = _write_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": Evil(), "labels": []}, f)
    with pytest.raises(DatasetError, match="refusing"):
        get_dataset("cifar10", tmp_path)


# ---------------------------------------------------------------- shared data
@pytest.mark.shared_data
def test_shared_resnet20_scores_published_accuracy_on_jpeg_test(cifar_jpeg_dir):
    from compress.measure import evaluate
    from compress.models import get_model, load_checkpoint
    from tests.conftest import shared_checkpoint

    data = get_dataset("imagefolder", cifar_jpeg_dir, normalization="imagenet")
    assert data.classes[:3] == ("airplane", "automobile", "bird") and len(data.test) == 10_000
    model = load_checkpoint(get_model("resnet20"), shared_checkpoint(20))
    acc = evaluate(model, data.loader("test", 500), progress=False)
    assert abs(acc["top1"] - 81.0) <= 0.3, acc


def test_datasets_cli_lists_registry(capsys):
    import json

    from search.cli import main

    assert main(["datasets", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == DATASETS.names()
    assert all(r["description"] and r["classes"] and r["needs_data_dir"] for r in rows)
    assert main(["datasets"]) == 0
    table = capsys.readouterr().out
    assert "cifar100" in table and "needs --data-dir" in table


def test_calib_batches_mix_the_classes(tmp_path):
    """The first calib batches feed BN recalibration and quantization ranges: ImageFolder lists
    images class by class, and a calib subset kept in that order would show them one class."""
    _write_jpegs(tmp_path, "train", {"a": 40, "b": 40, "c": 40, "d": 40})
    _write_jpegs(tmp_path, "test", {"a": 2, "b": 2, "c": 2, "d": 2}, seed=1)
    d = get_dataset("imagefolder", tmp_path, val_fraction=0.1, calib_size=64)
    first = next(iter(d.loader("calib", 16, shuffle=False)))[1]
    assert len(set(first.tolist())) >= 3
