"""Shared fixtures and helpers: tiny data on CPU, one intra-op thread, a private latency lock, lock
attempts from another process; real data from ../shared when present."""

from __future__ import annotations

import os

# Idle OpenMP workers sleep instead of spinning: on a busy 2-core machine spinning threads starve
# each other (measured: 9.6 -> 55 img/s for ResNet-20 training). Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import multiprocessing as mp
import tarfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import torch

from autocompress.rundir import file_lock

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AUTOCOMPRESS_SHARED", REPO.parent / "shared"))
CIFAR_ARCHIVE = SHARED / "data" / "cifar10-jpeg75.tar.xz"
WEIGHTS = SHARED / "weights" / "cifar10-resnet"
CACHE = Path(os.environ.get("AUTOCOMPRESS_CACHE", Path.home() / ".cache" / "autocompress"))

NO_SHARED = f"needs the shared data folder {SHARED} (real CIFAR-10 JPEG copy and checkpoints), which is absent"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "shared_data" in item.keywords and not CIFAR_ARCHIVE.is_file():
            item.add_marker(pytest.mark.skip(reason=NO_SHARED))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def digits():
    """The bundled digits dataset (8x8 scikit-learn digits, no download), loaded once per module."""
    from compress.data import get_dataset

    return get_dataset("digits")


@pytest.fixture(scope="session")
def digits16():
    """The digits at 16x16 (every forward cheap), shared by the tests that train a small model on them."""
    from compress.data import get_dataset

    return get_dataset("digits", input_size=16)


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared, oversubscribed 2-core box, 2 OpenMP threads spin at
    barriers and tiny convolutions become ~40x slower; 1 thread is steady."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def private_latency_lock(tmp_path, monkeypatch):
    """Tests never queue behind real measurements of other processes on this machine."""
    monkeypatch.setenv("AUTOCOMPRESS_LATENCY_LOCK", str(tmp_path / "latency.lock"))
    return tmp_path / "latency.lock"


def random_batches(n: int = 3, bs: int = 16, size: int = 8, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` seeded batches of random ``size`` x ``size`` images and labels of 10 classes."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(bs, 3, size, size, generator=g), torch.randint(0, 10, (bs,), generator=g))
            for _ in range(n)]


def _attempt(lock: Callable[[], AbstractContextManager], q) -> None:
    try:
        with lock():
            q.put("acquired")
    except TimeoutError as exc:
        q.put(f"timeout: {exc}")


def lock_attempt_in_child(lock: Callable[[], AbstractContextManager]) -> str:
    """Enter ``lock()`` (a lock that times out) in a forked process: ``"acquired"`` or ``"timeout: ..."``."""
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_attempt, args=(lock, q))
    p.start()
    p.join(10)
    return q.get(timeout=5)


def unpack_cifar_jpeg() -> Path:
    """Unpack the shared CIFAR-10 JPEG archive once (process-safe); return the ImageFolder root."""
    if not CIFAR_ARCHIVE.is_file():
        pytest.skip(NO_SHARED)
    dest = CACHE / "cifar10-jpeg75"
    done = dest / ".unpacked"
    if done.is_file():
        return _root(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with file_lock(CACHE / ".cifar10-jpeg75.lock"):
        if not done.is_file():
            with tarfile.open(CIFAR_ARCHIVE) as tar:
                tar.extractall(dest, filter="data")
            done.write_text("ok\n")
    return _root(dest)


def _root(dest: Path) -> Path:
    if (dest / "train").is_dir():
        return dest
    subs = [p for p in dest.iterdir() if p.is_dir() and (p / "train").is_dir()]
    assert subs, f"{CIFAR_ARCHIVE} did not unpack to an ImageFolder layout under {dest}"
    return subs[0]


@pytest.fixture(scope="session")
def cifar_jpeg_dir() -> Path:
    """Root of the unpacked CIFAR-10 JPEG copy (train/ and test/ in ImageFolder layout)."""
    return unpack_cifar_jpeg()


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    if not WEIGHTS.is_dir():
        pytest.skip(NO_SHARED)
    return WEIGHTS


def shared_checkpoint(depth: int) -> Path:
    files = sorted(WEIGHTS.glob(f"resnet{depth}-*.th"))
    if not files:
        pytest.skip(NO_SHARED)
    return files[0]


def resnet20_with_bn_stats(size: int = 8) -> torch.nn.Module:
    """A seeded random ResNet-20 (10 classes) whose BatchNorm statistics come from one pass over random
    ``size`` x ``size`` images (non-trivial, as in a trained network), in eval mode."""
    from compress.models import get_model

    torch.manual_seed(0)
    m = get_model("resnet20", num_classes=10)
    with torch.no_grad():
        m.train()
        for x, _ in random_batches(1, 32, size, seed=7):
            m(x)
    return m.eval()
