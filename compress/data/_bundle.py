"""Datasets held as uint8 tensors, and the :class:`DataBundle` returned by ``get_dataset``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from compress.data import _transforms as T
from compress.data._errors import DatasetError

SPLITS = ("train", "val", "test", "calib")


class TensorImageDataset(Dataset):
    """Images in memory as ``uint8`` ``N x C x H x W`` plus ``int64`` labels.

    Yields ``(float C x H x W normalized tensor, int label)``. With ``augment=True`` each image
    gets a zero-padded random crop and a horizontal flip. ``__getitems__`` lets the DataLoader
    fetch a whole batch at once so conversion, augmentation and normalization run batched.
    ``rows`` (optional) selects rows of the storage: subsets share memory instead of copying.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float],
                 std: Sequence[float], *, augment: bool = False, padding: int | None = None,
                 rows: torch.Tensor | None = None):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 N x C x H x W, got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self._images = images
        self._labels = labels.to(torch.int64)
        self._rows = None if rows is None else torch.as_tensor(rows, dtype=torch.int64)
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.augment = augment
        self.padding = padding if padding is not None else T.crop_padding(images.shape[-1])

    def __len__(self) -> int:
        return len(self._images) if self._rows is None else len(self._rows)

    def _select(self, indices: torch.Tensor | Sequence[int]) -> torch.Tensor:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return idx if self._rows is None else self._rows[idx]

    @property
    def images(self) -> torch.Tensor:
        """This dataset's uint8 images ``N x C x H x W`` (a copy when it is a subset)."""
        return self._images if self._rows is None else self._images[self._rows]

    @property
    def labels(self) -> torch.Tensor:
        """This dataset's int64 labels."""
        return self._labels if self._rows is None else self._labels[self._rows]

    def subset(self, indices: torch.Tensor | Sequence[int], *, augment: bool | None = None) -> TensorImageDataset:
        """A view of the given rows (shares the storage), optionally with augmentation switched."""
        return TensorImageDataset(self._images, self._labels, self.mean, self.std,
                                  augment=self.augment if augment is None else augment, padding=self.padding,
                                  rows=self._select(indices))

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalized (and, when training, augmented) batch for ``indices``."""
        rows = self._select(indices)
        x = T.to_float(self._images[rows])
        if self.augment:
            x = T.random_crop_flip(x, self.padding)
        return T.normalize(x, self.mean, self.std), self._labels[rows]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = self.batch([int(i)])
        return x[0], int(y[0])

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        x, y = self.batch(indices)
        return list(zip(x.unbind(0), y.tolist()))


def _collate_tensor_batch(samples: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*samples)
    return torch.stack(xs), torch.as_tensor(ys, dtype=torch.int64)


def seeded_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into (kept, held_out) with ``round(n * fraction)`` held out, seeded."""
    if not 0.0 <= fraction < 1.0:
        raise DatasetError(f"val_fraction = {fraction}: allowed 0 <= val_fraction < 1")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = round(n * fraction)
    return perm[k:].sort().values, perm[:k].sort().values


def seeded_subset_indices(n: int, size: int, seed: int) -> torch.Tensor:
    """The first ``size`` entries of a seeded permutation of ``range(n)`` (all when smaller)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: min(size, n)]


@dataclass
class DataBundle:
    """One dataset's splits and facts. Splits are torch Datasets of ``(tensor, int)``.

    ``train`` is augmented (random crop + flip); ``val``, ``test`` and ``calib`` are not.
    ``calib`` is a small seeded subset of ``train`` for BN recalibration and quantization.
    """

    name: str
    num_classes: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    normalization: str
    train: Dataset
    val: Dataset
    test: Dataset
    calib: Dataset
    classes: tuple[str, ...] = ()

    def split(self, split: str) -> Dataset:
        if split not in SPLITS:
            raise DatasetError(f"{self.name}: unknown split {split!r}; allowed: {', '.join(SPLITS)}")
        return getattr(self, split)

    def loader(self, split: str, batch_size: int, shuffle: bool | None = None, seed: int = 0,
               limit: int | None = None, num_workers: int = 0, drop_last: bool | None = None) -> DataLoader:
        """A DataLoader over ``split``; deterministic given ``seed``.

        ``shuffle`` defaults to True for train only; ``limit`` keeps the first ``limit`` items
        of a seeded permutation (same subset for the same seed); ``drop_last`` defaults to True
        for train when at least one full batch exists.
        """
        if batch_size < 1:
            raise DatasetError(f"batch_size = {batch_size}: must be >= 1")
        ds = self.split(split)
        if limit is not None:
            if limit < 1:
                raise DatasetError(f"limit = {limit}: must be >= 1 or None")
            idx = seeded_subset_indices(len(ds), limit, seed).sort().values
            ds = ds.subset(idx) if isinstance(ds, TensorImageDataset) else Subset(ds, idx.tolist())
        if shuffle is None:
            shuffle = split == "train"
        if drop_last is None:
            drop_last = split == "train" and len(ds) >= batch_size
        kw: dict[str, Any] = {}
        if isinstance(ds, TensorImageDataset):
            kw["collate_fn"] = _collate_tensor_batch
        if num_workers > 0:
            kw["persistent_workers"] = False
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                          drop_last=drop_last, generator=torch.Generator().manual_seed(seed), **kw)

    def describe(self) -> dict[str, Any]:
        """Plain facts for logs and config files."""
        return {"name": self.name, "num_classes": self.num_classes, "input_size": self.input_size,
                "normalization": self.normalization, "mean": list(self.mean), "std": list(self.std),
                **{f"{s}_size": len(self.split(s)) for s in SPLITS}}
