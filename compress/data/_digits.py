"""scikit-learn's bundled 8x8 handwritten digits, as 3-channel images (no download)."""

from __future__ import annotations

import functools

import torch

from compress.data._bundle import DataBundle
from compress.data._common import channel_stats, resize_uint8, resolve_normalization, tensor_bundle

#: fixed split fractions (train, val, test); the split itself is seeded and stratified
DIGITS_SPLIT = (0.70, 0.15, 0.15)
DIGITS_SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def _load_digits():
    from sklearn.datasets import load_digits

    return load_digits()


def digits_arrays(input_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as uint8 ``N x 3 x S x S`` (bilinear upsampled) and int64 labels."""
    d = _load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32)  # N x 8 x 8, values 0..16
    x = (x * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)
    x = resize_uint8(x, input_size).expand(-1, 3, -1, -1).contiguous()
    return x, torch.as_tensor(d.target, dtype=torch.int64)


def digits_split_indices() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stratified, fixed (seed 0) 70/15/15 train/val/test indices; disjoint and covering all."""
    from sklearn.model_selection import train_test_split

    y = _load_digits().target
    idx = list(range(len(y)))
    train, rest = train_test_split(idx, test_size=1.0 - DIGITS_SPLIT[0], stratify=y,
                                   random_state=DIGITS_SPLIT_SEED)
    rel_test = DIGITS_SPLIT[2] / (DIGITS_SPLIT[1] + DIGITS_SPLIT[2])
    val, test = train_test_split(rest, test_size=rel_test, stratify=y[rest], random_state=DIGITS_SPLIT_SEED)
    return tuple(torch.as_tensor(sorted(s), dtype=torch.int64) for s in (train, val, test))  # type: ignore[return-value]


def build_digits(data_dir=None, *, download=False, normalization=None, val_fraction=0.1, calib_size=512,
                 seed=0, augment=True, input_size=None) -> DataBundle:
    """8x8 handwritten digits (scikit-learn, 1,797 images), 10 classes, upsampled to 32x32; no download."""
    x, y = digits_arrays(input_size or 32)
    tr, va, te = digits_split_indices()
    name, stats = resolve_normalization("digits", normalization, "digits", own=channel_stats(x[tr]))
    return tensor_bundle("digits", num_classes=10, classes=tuple(str(i) for i in range(10)),
                         normalization=name, stats=stats, train=(x[tr], y[tr]), val=(x[va], y[va]),
                         test=(x[te], y[te]), val_fraction=val_fraction, calib_size=calib_size, seed=seed,
                         augment=augment)
