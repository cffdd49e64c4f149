"""Datasets: a registry of image classification datasets returning a :class:`DataBundle`.

>>> data = get_dataset("digits")                      # bundled with scikit-learn, no download
>>> loader = data.loader("train", batch_size=128)     # augmented, shuffled, seeded
>>> data = get_dataset("imagefolder", "~/.cache/autocompress/cifar10-jpeg75")

Every bundle has train/val/test/calib splits yielding ``(float C x H x W normalized, int)``.
When a dataset has no val split, a seeded ``val_fraction`` of train becomes val.
"""

from __future__ import annotations

from pathlib import Path

from compress.data._bundle import SPLITS, DataBundle, TensorImageDataset
from compress.data._cifar import build_cifar10, build_cifar100
from compress.data._digits import build_digits
from compress.data._errors import DatasetError
from compress.data._imagefolder import build_imagefolder
from compress.data._transforms import NORMALIZATIONS
from compress.registry import Registry

DATASETS: Registry = Registry("dataset")
DATASETS.register("digits")(build_digits)
DATASETS.register("cifar10")(build_cifar10)
DATASETS.register("cifar100")(build_cifar100)
DATASETS.register("imagefolder")(build_imagefolder)

#: facts for listings: name -> (classes, input size, needs --data-dir)
DATASET_FACTS: dict[str, tuple[str, str, str]] = {
    "digits": ("10", "32", "no (bundled with scikit-learn)"),
    "cifar10": ("10", "32", "yes, or --download"),
    "cifar100": ("100", "32", "yes, or --download"),
    "imagefolder": ("folders", "native (<=64 cached) or 224", "yes"),
}

DEFAULT_DATASET = "digits"


def get_dataset(name: str, data_dir: str | Path | None = None, *, download: bool = False,
                normalization: str | None = None, val_fraction: float = 0.1, calib_size: int = 512,
                seed: int = 0, augment: bool = True, input_size: int | None = None) -> DataBundle:
    """Build the registered dataset ``name``; unknown names list the known ones.

    ``normalization``: ``"imagenet"`` (default for cifar10/cifar100/imagefolder, what the shared
    CIFAR checkpoints were trained with), ``"cifar"``, or the dataset's own statistics
    (``"digits"``, its default). ``val_fraction`` applies when the dataset has no val split;
    ``calib_size`` and ``seed`` choose the calibration subset. ``augment=False`` turns off the
    train split's random crop + flip. ``input_size`` resizes images (default: native size).
    """
    builder = DATASETS.get(name)
    if calib_size < 1:
        raise DatasetError(f"calib_size = {calib_size}: must be >= 1")
    return builder(data_dir, download=download, normalization=normalization, val_fraction=val_fraction,
                   calib_size=calib_size, seed=seed, augment=augment, input_size=input_size)


__all__ = ["DATASETS", "DATASET_FACTS", "DEFAULT_DATASET", "DataBundle", "DatasetError", "NORMALIZATIONS",
           "SPLITS", "TensorImageDataset", "get_dataset"]
