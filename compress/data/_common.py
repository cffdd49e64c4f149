"""Helpers shared by the dataset builders: normalization choice, resizing, bundling splits."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from compress.data._bundle import DataBundle, TensorImageDataset, seeded_split, seeded_subset_indices
from compress.data._errors import DatasetError
from compress.data._transforms import NORMALIZATIONS

log = logging.getLogger(__name__)

Stats = tuple[tuple[float, float, float], tuple[float, float, float]]


def resolve_normalization(dataset: str, normalization: str | None, default: str,
                          own: Stats | None = None) -> tuple[str, Stats]:
    """Pick (name, (mean, std)): a preset, or the dataset's own statistics where it has them."""
    name = normalization or default
    options = dict(NORMALIZATIONS)
    if own is not None:
        options[dataset] = own
    if name not in options:
        raise DatasetError(f"{dataset}: normalization = {name!r}; allowed: {', '.join(options)}")
    return name, options[name]


def warn_missing_classes(name: str, classes: Sequence[str], labels: Mapping[str, Sequence[int] | torch.Tensor]) -> None:
    """Log a warning for every split (``{split: labels}``) that lacks classes another split has
    (e.g. an empty class folder in val/): its accuracy then says nothing about those classes."""
    present = {split: {int(v) for v in (y.tolist() if isinstance(y, torch.Tensor) else y)}
               for split, y in labels.items()}
    seen = set().union(*present.values()) if present else set()
    for split, have in present.items():
        missing = sorted(seen - have)
        if missing:
            names = [classes[i] if i < len(classes) else str(i) for i in missing]
            log.warning("%s: split %s has no images of %d class(es) the other splits have: %s", name, split,
                        len(names), ", ".join(names[:10]) + (" ..." if len(names) > 10 else ""))


def channel_stats(images: torch.Tensor) -> Stats:
    """Per-channel mean/std of uint8 images ``N x C x H x W`` scaled to [0, 1]."""
    x = images.to(torch.float64).div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3))
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)  # type: ignore[return-value]


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of uint8 ``N x C x H x W`` to ``size x size``."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = []
    for chunk in images.split(4096):
        y = F.interpolate(chunk.to(torch.float32), size=(size, size), mode="bilinear",
                          align_corners=False, antialias=True)
        out.append(y.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def tensor_bundle(name: str, *, num_classes: int, classes: tuple[str, ...], normalization: str,
                  stats: Stats, train: tuple[torch.Tensor, torch.Tensor],
                  test: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor] | None,
                  val_fraction: float, calib_size: int, seed: int, augment: bool) -> DataBundle:
    """Bundle in-memory splits; without ``val`` a seeded ``val_fraction`` of train becomes val."""
    mean, std = stats
    full = TensorImageDataset(train[0], train[1], mean, std, augment=augment)
    if val is None:
        keep, held = seeded_split(len(full), val_fraction, seed)
        if len(held) == 0:
            raise DatasetError(f"{name}: val_fraction = {val_fraction} leaves no validation images; "
                               "allowed 0 < val_fraction < 1")
        train_ds = full.subset(keep)
        val_ds = full.subset(held, augment=False)
    else:
        train_ds = full
        val_ds = TensorImageDataset(val[0], val[1], mean, std)
    test_ds = TensorImageDataset(test[0], test[1], mean, std)
    warn_missing_classes(name, classes, {"train": train_ds.labels, "val": val_ds.labels, "test": test_ds.labels})
    # seeded random order, not sorted: datasets are stored class by class, so the first calib
    # batches (BN recalibration, quantization ranges) must mix the classes
    calib_ds = train_ds.subset(seeded_subset_indices(len(train_ds), calib_size, seed + 1), augment=False)
    size = int(train[0].shape[-1])
    log.debug("%s: train %d, val %d, test %d, calib %d images of %dx%d", name, len(train_ds), len(val_ds),
              len(test_ds), len(calib_ds), size, size)
    return DataBundle(name=name, num_classes=num_classes, input_size=size, mean=mean, std=std,
                      normalization=normalization, train=train_ds, val=val_ds, test=test_ds, calib=calib_ds,
                      classes=classes)
