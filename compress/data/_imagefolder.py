"""Image folders (``DIR/train/<class>/*.jpg`` plus ``DIR/val`` and/or ``DIR/test``).

Small images (<= 64x64, <= 200k per split, e.g. the CIFAR-10 JPEG copy) are decoded once, in
parallel, into a uint8 tensor kept in memory and cached on disk under
``DIR/.autocompress-cache/<split>-<hash>.pt`` (or ``~/.cache/autocompress/imagefolder/`` when
DIR is read-only). The hash covers every file's path, size and mtime plus the decode size, so
any change invalidates the cache. Large images (ImageNet) use torchvision's lazy
``ImageFolder`` with the standard RandomResizedCrop / Resize+CenterCrop transforms.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset
from tqdm.auto import tqdm

from autocompress.rundir import atomic_path
from compress.data._bundle import DataBundle, seeded_split, seeded_subset_indices
from compress.data._common import resolve_normalization, tensor_bundle, warn_missing_classes
from compress.data._errors import DatasetError

log = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SMALL_MAX_SIDE = 64
SMALL_MAX_IMAGES = 200_000
CACHE_DIRNAME = ".autocompress-cache"
USER_CACHE = Path.home() / ".cache" / "autocompress" / "imagefolder"
CACHE_FORMAT = 1


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the split folder
    label: int
    size: int
    mtime_ns: int


def scan_split(split_dir: Path) -> tuple[tuple[str, ...], list[FileEntry]]:
    """Classes (sorted sub-folder names) and image files (sorted) of one split folder.

    Uses ``os.scandir`` with plain strings (no pathlib per file): 60k files take a fraction
    of a second, which matters because every load hashes the listing for the cache key.
    """
    classes = tuple(sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith(".")))
    if not classes:
        raise DatasetError(f"{split_dir}: no class folders; expected {split_dir}/<class>/<image>.jpg")
    files: list[FileEntry] = []
    for label, cls in enumerate(classes):
        _scan_dir(os.path.join(str(split_dir), cls), cls, label, files)
    if not files:
        raise DatasetError(f"{split_dir}: no images (allowed extensions: {', '.join(IMG_EXTENSIONS)})")
    return classes, files


def _scan_dir(path: str, rel: str, label: int, out: list[FileEntry]) -> None:
    entries = sorted(os.scandir(path), key=lambda e: e.name)
    for e in entries:
        if e.is_dir():
            _scan_dir(e.path, f"{rel}/{e.name}", label, out)
        elif e.name.lower().endswith(IMG_EXTENSIONS):
            st = e.stat()
            out.append(FileEntry(f"{rel}/{e.name}", label, st.st_size, st.st_mtime_ns))


def decode_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Decode one image to RGB uint8 ``H x W x 3`` at ``size`` (width, height)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != size:
            im = im.resize(size, Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8)


def probe_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header, without decoding."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
        raise DatasetError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None


def cache_key(split_dir: Path, classes: tuple[str, ...], files: list[FileEntry], size: tuple[int, int]) -> str:
    h = hashlib.sha256()
    h.update(f"v{CACHE_FORMAT}|{size}|{'/'.join(classes)}\n".encode())
    for f in files:
        h.update(f"{f.path}|{f.label}|{f.size}|{f.mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def cache_dir_for(root: Path) -> Path:
    """``root/.autocompress-cache`` when writable, else a per-folder dir under the user cache."""
    local = root / CACHE_DIRNAME
    try:
        local.mkdir(exist_ok=True)
        if os.access(local, os.W_OK):
            return local
    except OSError:
        pass
    fallback = USER_CACHE / hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def decode_all(split_dir: Path, files: list[FileEntry], size: tuple[int, int], desc: str) -> torch.Tensor:
    """Decode every file in parallel (PIL releases the GIL while decoding) into uint8 N x 3 x H x W."""
    w, h = size
    out = np.empty((len(files), h, w, 3), dtype=np.uint8)

    def work(i: int) -> int:
        path = split_dir / files[i].path
        try:
            out[i] = decode_image(path, size)
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
            raise DatasetError(f"{path}: cannot decode image ({type(exc).__name__}: {exc}); "
                               "remove or replace the file") from None
        return i

    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in tqdm(pool.map(work, range(len(files))), total=len(files), desc=desc, unit="img",
                      leave=False, mininterval=1.0):
            pass
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def load_split_tensors(root: Path, split: str, size: tuple[int, int] | None = None,
                       scan: tuple[tuple[str, ...], list[FileEntry]] | None = None
                       ) -> tuple[tuple[str, ...], torch.Tensor, torch.Tensor]:
    """(classes, uint8 images N x 3 x H x W, int64 labels) of ``root/split``, via the disk cache.

    ``scan`` is a :func:`scan_split` result to reuse (saves a second listing).
    """
    split_dir = root / split
    classes, files = scan if scan is not None else scan_split(split_dir)
    if size is None:
        size = probe_size(split_dir / files[0].path)
    key = cache_key(split_dir, classes, files, size)
    cdir = cache_dir_for(root)
    path = cdir / f"{split}-{key}.pt"
    if path.is_file():
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if obj.get("format") == CACHE_FORMAT and list(obj["classes"]) == list(classes):
                log.info("imagefolder: %s/%s from cache %s (%d images)", root.name, split, path, len(obj["labels"]))
                return classes, obj["images"], obj["labels"]
        except Exception as exc:  # noqa: BLE001 - a broken cache is rebuilt, not fatal
            log.warning("imagefolder: ignoring unreadable cache %s (%s)", path, exc)
    log.info("imagefolder: decoding %d images of %s (once; cached in %s)", len(files), split_dir, cdir)
    images = decode_all(split_dir, files, size, desc=f"decode {split}")
    labels = torch.as_tensor([f.label for f in files], dtype=torch.int64)
    with atomic_path(path) as tmp:
        torch.save({"format": CACHE_FORMAT, "classes": list(classes), "images": images, "labels": labels}, tmp)
    for stale in cdir.glob(f"{split}-*.pt"):
        if stale != path:
            stale.unlink(missing_ok=True)
    return classes, images, labels


def _splits(root: Path) -> tuple[str, str | None]:
    """(test split folder, val split folder or None). test/ wins; val/ is test when alone."""
    has_val, has_test = (root / "val").is_dir(), (root / "test").is_dir()
    if not (root / "train").is_dir() or not (has_val or has_test):
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise DatasetError(f"imagefolder: {root} needs train/ and val/ or test/ sub-folders "
                           f"(found: {', '.join(found) or 'nothing'}); pass --data-dir DIR with that layout")
    if has_test:
        return "test", ("val" if has_val else None)
    return "val", None


def _is_small(root: Path, split: str, files: list[FileEntry]) -> tuple[bool, tuple[int, int]]:
    """(small enough to hold in memory, size of the first image), probing 16 image headers."""
    probe = [files[i].path for i in range(0, len(files), max(1, len(files) // 16))][:16]
    sizes = [probe_size(root / split / p) for p in probe]
    small = max(max(s) for s in sizes) <= SMALL_MAX_SIDE and len(files) <= SMALL_MAX_IMAGES
    return small, sizes[0]


def build_imagefolder(data_dir=None, *, download=False, normalization=None, val_fraction=0.1, calib_size=512,
                      seed=0, augment=True, input_size=None) -> DataBundle:
    """Image folders DIR/{train,val|test}/<class>/*.jpg (ImageNet, Imagenette, the CIFAR-10 JPEG copy)."""
    if data_dir is None:
        raise DatasetError("imagefolder: pass --data-dir DIR containing train/ and val/ or test/ class folders")
    if download:
        raise DatasetError("imagefolder: --download is not available; pass --data-dir DIR with local images")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DatasetError(f"imagefolder: --data-dir {root} does not exist or is not a folder")
    test_split, val_split = _splits(root)
    train_scan = scan_split(root / "train")
    classes = train_scan[0]
    if len(classes) < 2:
        raise DatasetError(f"imagefolder {root}: {len(classes)} class found ({', '.join(classes)}); at least 2 "
                           f"needed (one folder per class under {root / 'train'})")
    small, first_size = _is_small(root, "train", train_scan[1])
    name, stats = resolve_normalization("imagefolder", normalization, "imagenet")
    if small:
        size = (input_size, input_size) if input_size else first_size
        classes, x_tr, y_tr = load_split_tensors(root, "train", size, scan=train_scan)
        test_classes, x_te, y_te = load_split_tensors(root, test_split, size)
        _check_classes(root, test_split, classes, test_classes)
        val = None
        if val_split is not None:
            val_classes, x_va, y_va = load_split_tensors(root, val_split, size)
            _check_classes(root, val_split, classes, val_classes)
            val = (x_va, y_va)
        if size[0] != size[1]:
            raise DatasetError(f"imagefolder: {root} images are {size[0]}x{size[1]}; "
                               "pass --input-size for square crops")
        return tensor_bundle("imagefolder", num_classes=len(classes), classes=classes, normalization=name,
                             stats=stats, train=(x_tr, y_tr), test=(x_te, y_te), val=val,
                             val_fraction=val_fraction, calib_size=calib_size, seed=seed, augment=augment)
    return _lazy_bundle(root, test_split, val_split, name, stats, val_fraction, calib_size, seed, augment,
                        input_size or 224)


def _check_classes(root: Path, split: str, train: tuple[str, ...], other: tuple[str, ...]) -> None:
    if train != other:
        diff = sorted(set(train) ^ set(other))[:10]
        raise DatasetError(f"imagefolder: {root}/{split} has different class folders than train/ "
                           f"(differing: {', '.join(diff) or 'order'})")


def _lazy_bundle(root, test_split, val_split, name, stats, val_fraction, calib_size, seed, augment, size):
    from torchvision import datasets
    from torchvision import transforms as T

    mean, std = stats
    norm = [T.ToTensor(), T.Normalize(mean, std)]
    train_tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *norm]) if augment else None
    eval_tf = T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size), *norm])
    train_aug = datasets.ImageFolder(str(root / "train"), transform=train_tf or eval_tf)
    train_eval = datasets.ImageFolder(str(root / "train"), transform=eval_tf)
    test = datasets.ImageFolder(str(root / test_split), transform=eval_tf)
    _check_classes(root, test_split, tuple(train_aug.classes), tuple(test.classes))
    if val_split is not None:
        val = datasets.ImageFolder(str(root / val_split), transform=eval_tf)
        _check_classes(root, val_split, tuple(train_aug.classes), tuple(val.classes))
        train = train_aug
        keep = torch.arange(len(train_aug))
    else:
        keep, held = seeded_split(len(train_aug), val_fraction, seed)
        train = Subset(train_aug, keep.tolist())
        val = Subset(train_eval, held.tolist())
    targets = train_aug.targets
    warn_missing_classes(f"imagefolder {root}", tuple(train_aug.classes), {
        "train": [targets[i] for i in keep.tolist()], "test": test.targets,
        "val": val.targets if val_split is not None else [targets[i] for i in held.tolist()]})
    # seeded random order, not sorted: ImageFolder lists images class by class (see _common.py)
    calib_idx = keep[seeded_subset_indices(len(keep), calib_size, seed + 1)]
    calib = Subset(train_eval, calib_idx.tolist())
    return DataBundle(name="imagefolder", num_classes=len(train_aug.classes), input_size=size, mean=mean, std=std,
                      normalization=name, train=train, val=val, test=test, calib=calib,
                      classes=tuple(train_aug.classes))
