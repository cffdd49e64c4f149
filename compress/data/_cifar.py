"""CIFAR-10 / CIFAR-100 from the official "python version" batch files.

The batch files are pickles. They are read with a restricted unpickler that only builds
plain containers and numpy arrays (no arbitrary classes or calls), so a tampered file
cannot execute code. torchvision is only used for ``download=True`` (it verifies md5s).
"""

from __future__ import annotations

import io
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from compress.data._bundle import DataBundle
from compress.data._common import resize_uint8, resolve_normalization, tensor_bundle
from compress.data._errors import DatasetError

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path.home() / ".cache" / "autocompress" / "torchvision"


@dataclass(frozen=True)
class CifarLayout:
    name: str
    title: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    meta_key: str
    label_key: str
    num_classes: int


CIFAR10 = CifarLayout("cifar10", "CIFAR-10", "cifar-10-batches-py",
                      tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                      "batches.meta", "label_names", "labels", 10)
CIFAR100 = CifarLayout("cifar100", "CIFAR-100", "cifar-100-python", ("train",), ("test",),
                       "meta", "fine_label_names", "fine_labels", 100)

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except numpy's array reconstruction helpers."""

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: CIFAR batches hold only arrays and lists")


def read_batch(path: Path) -> dict:
    """Read one CIFAR batch file safely (latin1, as the originals are Python 2 pickles)."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayOnlyUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DatasetError(f"{path}: not a CIFAR python batch file ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a dict in a CIFAR batch file, found {type(obj).__name__}")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def find_batches(layout: CifarLayout, data_dir: str | Path | None, download: bool) -> Path:
    """The folder holding the batch files; downloads on request; else one clear error."""
    root = Path(data_dir).expanduser() if data_dir is not None else DEFAULT_ROOT
    for cand in (root / layout.folder, root):
        if all((cand / f).is_file() for f in layout.train_files + layout.test_files + (layout.meta_file,)):
            return cand
    if download:
        from torchvision import datasets

        cls = datasets.CIFAR10 if layout.name == "cifar10" else datasets.CIFAR100
        try:
            root.mkdir(parents=True, exist_ok=True)
            cls(str(root), train=True, download=True)
        except Exception as exc:  # noqa: BLE001 - network errors come in many types
            raise DatasetError(f"{layout.name}: download into {root} failed ({type(exc).__name__}: {exc}); "
                               f"offline? pass --data-dir DIR containing {layout.folder}") from None
        return root / layout.folder
    where = f"in {root}" if data_dir is not None else f"(no --data-dir given; looked in {root})"
    raise DatasetError(
        f"{layout.name}: no {layout.title} python batches {where}; pass --data-dir DIR containing "
        f"{layout.folder}, or --download (needs network), or use --dataset imagefolder --data-dir DIR "
        "for a JPEG copy with train/ and test/ class folders"
    )


def _read_split(folder: Path, files: tuple[str, ...], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for f in files:
        entry = read_batch(folder / f)
        if "data" not in entry or label_key not in entry:
            raise DatasetError(f"{folder / f}: missing 'data' or {label_key!r}; keys: {sorted(entry)}")
        data = np.asarray(entry["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DatasetError(f"{folder / f}: data has shape {data.shape}; expected N x 3072")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.extend(int(v) for v in entry[label_key])
    x = torch.from_numpy(np.concatenate(xs)).contiguous()
    y = torch.as_tensor(ys, dtype=torch.int64)
    if len(x) != len(y):
        raise DatasetError(f"{folder}: {len(x)} images but {len(y)} labels")
    return x, y


def build_cifar(layout: CifarLayout, data_dir=None, *, download=False, normalization=None, val_fraction=0.1,
                calib_size=512, seed=0, augment=True, input_size=None) -> DataBundle:
    folder = find_batches(layout, data_dir, download)
    log.info("%s: reading batches from %s", layout.name, folder)
    train = _read_split(folder, layout.train_files, layout.label_key)
    test = _read_split(folder, layout.test_files, layout.label_key)
    meta = read_batch(folder / layout.meta_file)
    classes = tuple(str(c) for c in meta.get(layout.meta_key, range(layout.num_classes)))
    for split, (_, y) in (("train", train), ("test", test)):
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= layout.num_classes):
            raise DatasetError(f"{folder}: {split} labels outside 0..{layout.num_classes - 1}")
    if input_size and input_size != 32:
        train = (resize_uint8(train[0], input_size), train[1])
        test = (resize_uint8(test[0], input_size), test[1])
    name, stats = resolve_normalization(layout.name, normalization, "imagenet")
    return tensor_bundle(layout.name, num_classes=layout.num_classes, classes=classes, normalization=name,
                         stats=stats, train=train, test=test, val=None, val_fraction=val_fraction,
                         calib_size=calib_size, seed=seed, augment=augment)


def build_cifar10(data_dir=None, **kw) -> DataBundle:
    """CIFAR-10 (torchvision python batches; --data-dir DIR or --download), 10 classes, 32x32."""
    return build_cifar(CIFAR10, data_dir, **kw)


def build_cifar100(data_dir=None, **kw) -> DataBundle:
    """CIFAR-100 (torchvision python batches; --data-dir DIR or --download), 100 classes, 32x32."""
    return build_cifar(CIFAR100, data_dir, **kw)
