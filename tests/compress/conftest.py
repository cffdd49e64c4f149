"""Fixtures shared by the compress tests: digits at 16x16 (``digits16``; the root ``digits`` fixture is
the dataset's default 32x32) and a ResNet-20 briefly trained on them (``trained``)."""

from __future__ import annotations

import pytest
import torch

from compress.models import get_model
from spaces.policy import FinetuneSpec

SIZE = 16  # digits at 16x16 keep every forward cheap


@pytest.fixture(scope="session")
def digits16():
    from compress.data import get_dataset

    return get_dataset("digits", input_size=SIZE)


@pytest.fixture(scope="session")
def trained(digits16):
    """A resnet20 briefly trained on digits (so accuracy comparisons mean something)."""
    from compress.train import fit

    torch.manual_seed(0)
    model = get_model("resnet20")
    fit(model, digits16.loader("train", 32, shuffle=True), FinetuneSpec(steps=80, batch_size=32, lr=0.05),
        progress=False)
    return model.eval()
