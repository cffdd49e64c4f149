"""Fixtures shared by the compress tests: digits at 16x16 (``digits16``; the root ``digits`` fixture is
the dataset's default 32x32) and a ResNet-20 briefly trained on them (``trained``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compress.models import get_model
from spaces.policy import FinetuneSpec

SIZE = 16  # digits at 16x16 keep every forward cheap


def train_resnet20(data, steps: int, *, seed: int = 0) -> nn.Module:
    """A resnet20 trained for ``steps`` SGD steps (batch 32, lr 0.05, seed ``seed``) on ``data``'s
    train split, in eval mode."""
    from compress.train import fit

    torch.manual_seed(seed)
    model = get_model("resnet20")
    fit(model, data.loader("train", 32, shuffle=True), FinetuneSpec(steps=steps, batch_size=32, lr=0.05),
        progress=False)
    return model.eval()


@pytest.fixture(scope="session")
def trained(digits16):
    """A resnet20 briefly trained on digits (so accuracy comparisons mean something)."""
    return train_resnet20(digits16, 80)
