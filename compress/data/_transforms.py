"""Batched tensor transforms for in-memory image datasets.

Images are stored as ``uint8`` tensors ``N x C x H x W``; a batch is converted to float,
augmented (zero-padded random crop, horizontal flip) and normalized in one go. Randomness
comes from torch's global RNG (seeded by :func:`compress.train.fit`, and per worker by the
DataLoader), so runs are deterministic given the seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

#: name -> (mean, std) of RGB channels in [0, 1]
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


def crop_padding(input_size: int) -> int:
    """Random-crop padding: 4 pixels at 32x32, scaled proportionally for larger inputs."""
    return max(1, round(4 * input_size / 32))


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 ``N x C x H x W`` -> float in [0, 1]."""
    return batch.to(torch.float32).div_(255.0)


def normalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Channel-wise ``(x - mean) / std`` on a float batch ``N x C x H x W`` (in place)."""
    m = torch.as_tensor(mean, dtype=batch.dtype).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=batch.dtype).view(1, -1, 1, 1)
    return batch.sub_(m).div_(s)


def random_crop_flip(batch: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad by ``padding``, take a random crop of the original size per image, flip half.

    Matches torchvision's ``RandomCrop(size, padding) + RandomHorizontalFlip()`` applied
    before normalization (padding is black).
    """
    n, _, h, w = batch.shape
    padded = F.pad(batch, (padding, padding, padding, padding))
    ys = torch.randint(0, 2 * padding + 1, (n,))
    xs = torch.randint(0, 2 * padding + 1, (n,))
    flips = torch.rand(n) < 0.5
    out = torch.empty_like(batch)
    for i in range(n):
        y, x = int(ys[i]), int(xs[i])
        crop = padded[i, :, y:y + h, x:x + w]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out
