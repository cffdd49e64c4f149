"""GPU check: the CUDA paths of autocompress, run for real on one GPU, in one command.

    python benchmarks/gpu_check.py                       # about 5-8 min on one H100/H200
    python benchmarks/gpu_check.py --out runs/gpu-check.json --parts 1,2,5

Uses the shared data (``../shared``, or ``$AUTOCOMPRESS_SHARED``: the CIFAR-10 JPEG copy and the He et al.
ResNet checkpoints); without it, scikit-learn's digits and untrained ResNets. Parts, each with its own
time cap, each ``pass``, ``fail`` or ``skipped`` with the reason:

1. fit ResNet-20 and ResNet-56 for one epoch (AMP + channels_last) on the GPU; the same fit on the CPU
   for a few steps; images/s of both and their ratio (passes at >= 10x).
2. CUDA-event latency (CUDA graphs, channels_last) at batch 1 and 128, with 95% intervals, of ResNet-56:
   the original, 50% pruned (every block and stage group, ``round_to: 8``) and fp16 (``convert``, cuda
   target); passes when fp16 is faster than fp32 at batch 128 and every pruned width is a multiple of 8.
3. TensorRT latency of the exported ONNX, fp16 and INT8 (symmetric Q/DQ), at batch 1 and 128, when
   ``tensorrt`` or ONNX Runtime's TensorRT provider imports (``pip install -e '.[gpu]'``); skipped with
   the reason otherwise. Passes when both engines agree with PyTorch on >= 90% of a real batch's top-1.
4. an 8-trial Ray search of ``resnet20-cifar10`` (``quickstart`` on digits), 4 trials at a time on one
   GPU (``--gpus-per-trial 0.25``), latency on cuda, shortened proxy; then ``finalize --device cuda``.
   Passes with exactly 8 complete trials (distinct trial numbers), latency-lock holds that never
   overlap (``AUTOCOMPRESS_LATENCY_LOG``), trials that really ran concurrently, and a finalized model.
5. ``pytest -m gpu``.

Prints a table and writes JSON (``--out``). Exit status: 0 when every part passed or was skipped,
1 when one failed, 2 without a CUDA device (one line, nothing run).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runs from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

NO_CUDA = "gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing to check"
CACHE = Path(os.environ.get("AUTOCOMPRESS_CACHE", Path.home() / ".cache" / "autocompress"))
PART_NAMES = {1: "fit: AMP + channels_last vs CPU", 2: "CUDA-event latency", 3: "TensorRT latency",
              4: "Ray search, 4 trials per GPU", 5: "pytest -m gpu"}

log = logging.getLogger("gpu_check")


@dataclass(frozen=True)
class Settings:
    """Sizes and limits of the check (``QUICK`` shrinks them for the CPU tests of this script)."""

    device: str = "cuda"
    batch: int = 128
    cpu_steps: int = 20
    fit_depths: tuple[int, ...] = (20, 56)
    digits_steps: int = 200  # GPU fit budget on digits (a digits epoch is ~10 steps)
    cifar_epochs: float = 1.0  # GPU fit budget on the CIFAR-10 JPEG copy
    latency_model: str = "resnet56"
    latency_batches: tuple[int, ...] = (1, 128)
    rounds: int = 15
    min_speedup: float = 10.0
    trials: int = 8
    concurrent: int = 4
    gpus_per_trial: float = 0.25
    proxy_steps: int = 30
    val_limit: int = 1000
    total_s: float = 465.0  # all parts together (data preparation included): 8 minutes with room to spare
    caps: dict[int, float] = field(default_factory=lambda: {1: 80.0, 2: 45.0, 3: 70.0, 4: 170.0, 5: 100.0})


QUICK = Settings(device="cpu", batch=16, cpu_steps=2, fit_depths=(20,), digits_steps=2, cifar_epochs=0.001,
                 latency_model="resnet20",
                 latency_batches=(1, 4), rounds=3, min_speedup=0.0, trials=3, concurrent=2, gpus_per_trial=0.0,
                 proxy_steps=2, val_limit=64, total_s=3600.0)


@dataclass
class PartResult:
    """One part's outcome: ``status`` pass / fail / skipped, the reason, its numbers."""

    part: int
    name: str
    status: str
    seconds: float = 0.0
    reason: str = ""
    numbers: dict[str, Any] = field(default_factory=dict)


class PartFailed(Exception):
    """A part's check did not hold (the message says which)."""


class Skip(Exception):
    """A part cannot run here (the message says why)."""


# ----- data ---------------------------------------------------------------------------------------


@dataclass
class Data:
    """What the parts train and calibrate on: the CIFAR-10 JPEG copy + checkpoints, or digits."""

    kind: str  # "cifar10-jpeg" | "digits"
    bundle: Any
    input_size: int
    weights: dict[int, Path]  # depth -> He et al. checkpoint
    data_dir: Path | None = None


def shared_dir() -> Path | None:
    """The shared folder: ``$AUTOCOMPRESS_SHARED``, ``../shared`` beside the checkout, or ``shared/`` in it."""
    env = os.environ.get("AUTOCOMPRESS_SHARED")
    for p in ([Path(env)] if env else []) + [REPO.parent / "shared", REPO / "shared"]:
        if (p / "data" / "cifar10-jpeg75.tar.xz").is_file():
            return p
    return None


def unpack_cifar(archive: Path) -> Path:
    """Unpack the CIFAR-10 JPEG archive once into the cache (process-safe); the ImageFolder root."""
    dest = CACHE / "cifar10-jpeg75"
    dest.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".cifar10-jpeg75.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (dest / ".unpacked").is_file():
            with tarfile.open(archive) as tar:
                tar.extractall(dest, filter="data")
            (dest / ".unpacked").write_text("ok\n")
    if (dest / "train").is_dir():
        return dest
    return next(p for p in dest.iterdir() if (p / "train").is_dir())


def load_data(input_size: int | None = None) -> Data:
    """The shared CIFAR-10 JPEG copy when present, else digits (at ``input_size``, default native)."""
    from compress.data import get_dataset

    shared = shared_dir()
    if shared is None:
        bundle = get_dataset("digits", input_size=input_size)
        return Data("digits", bundle, bundle.input_size, {})
    root = unpack_cifar(shared / "data" / "cifar10-jpeg75.tar.xz")
    weights = {d: p for d in (20, 56) for p in sorted((shared / "weights" / "cifar10-resnet").glob(f"resnet{d}-*.th"))}
    bundle = get_dataset("imagefolder", root, normalization="imagenet")
    return Data("cifar10-jpeg", bundle, 32, weights, root)


def resnet(depth: int, data: Data) -> Any:
    """CIFAR ResNet-``depth`` (option A) with the shared weights when present, in eval mode."""
    from compress.models import get_model, load_checkpoint

    model = get_model(f"resnet{depth}", num_classes=data.bundle.num_classes)
    if depth in data.weights:
        load_checkpoint(model, data.weights[depth])
    return model.eval()


# ----- part 1: fit ----------------------------------------------------------------------------------


def part_fit(s: Settings, data: Data, work: Path, out: dict[str, Any]) -> None:
    """Images/s of one fine-tuning epoch on the GPU (AMP + channels_last) against the CPU."""
    from compress.measure import evaluate
    from compress.train import fit
    from spaces.policy import FinetuneSpec

    loader = data.bundle.loader("train", s.batch, shuffle=True, seed=0)
    budget = {"epochs": s.cifar_epochs} if data.kind == "cifar10-jpeg" else {"epochs": None, "steps": s.digits_steps}
    spec = FinetuneSpec(lr=0.01, batch_size=s.batch, amp=True, channels_last=True, **budget)
    for depth in s.fit_depths:
        model = resnet(depth, data)
        cpu = fit(copy.deepcopy(model), loader, replace(spec, epochs=None, steps=s.cpu_steps), device="cpu",
                  progress=False, desc=f"r{depth}-cpu")
        fit(copy.deepcopy(model), loader, replace(spec, epochs=None, steps=5), device=s.device, progress=False,
            desc="warm-up")  # CUDA context, cuDNN algorithm choice
        res = fit(model, loader, spec, device=s.device, progress=False, desc=f"r{depth}-{s.device}")
        val = evaluate(model, data.bundle.loader("val", 256, shuffle=False), device=s.device, progress=False)
        ratio = res.images_per_s / max(cpu.images_per_s, 1e-9)
        out[f"resnet{depth}"] = {"gpu_images_per_s": round(res.images_per_s, 1),
                                 "cpu_images_per_s": round(cpu.images_per_s, 1), "speedup": round(ratio, 2),
                                 "steps": res.steps, "epochs": round(res.epochs, 3), "seconds": round(res.seconds, 2),
                                 "loss": [round(res.initial_loss, 4), round(res.final_loss, 4)],
                                 "val_top1": round(val["top1"], 2), "cpu_threads": _torch().get_num_threads()}
        if ratio < s.min_speedup:
            raise PartFailed(f"resnet{depth}: {res.images_per_s:.0f} img/s on {s.device} is {ratio:.1f}x the "
                             f"CPU's {cpu.images_per_s:.0f} (needs >= {s.min_speedup:g}x)")


# ----- part 2: CUDA-event latency ----------------------------------------------------------------------


def compressed_variants(model: Any, input_size: int, example: Any) -> tuple[Any, dict[str, int], Any]:
    """(50% pruned with round_to 8 over every block and stage group, its kept widths, fp16 model)."""
    from compress.prune import list_groups, prune
    from compress.quantize import convert
    from spaces.policy import LayerBits, PruneSpec, QuantSpec

    groups = list_groups(model, input_size=input_size)
    pruned, kept = prune(model, PruneSpec(ratios={g.name: 0.5 for g in groups}, round_to=8), input_size=input_size)
    fp16 = convert(model, QuantSpec(backend="cuda", default=LayerBits(16, 16)), None, example, target="cuda")
    return pruned.eval(), {g: len(k) for g, k in kept.items()}, fp16.model


def _ratio_row(r: Any) -> dict[str, Any]:
    def stats(st: Any) -> dict[str, Any]:
        return {"median_ms": round(st.median_ms, 4), "p10_ms": round(st.p10_ms, 4), "p90_ms": round(st.p90_ms, 4),
                "runs": st.runs, "mode": st.mode}

    return {"ratio": round(r.ratio, 4), "ci95": [round(r.ci_low, 4), round(r.ci_high, 4)],
            "speedup": round(r.speedup, 3), "busy": r.busy, "model": stats(r.a), "original": stats(r.b)}


def part_latency(s: Settings, data: Data, work: Path, out: dict[str, Any]) -> None:
    """Pruned and fp16 ResNet-56 against the original, CUDA events, batch 1 and 128."""
    import torch

    from compress.measure import compare_latency

    depth = int(s.latency_model.removeprefix("resnet"))
    model = resnet(depth, data)
    size = data.input_size
    pruned, widths, fp16 = compressed_variants(model, size, torch.randn(1, 3, size, size))
    bad = {g: w for g, w in widths.items() if w % 8}
    out.update(model=s.latency_model, pruned_widths=widths)
    for b in s.latency_batches:
        x = torch.randn(b, 3, size, size)
        for name, m in (("pruned50-r8", pruned), ("fp16", fp16)):
            r = compare_latency(m, model, x, device=s.device, rounds=s.rounds, warmup_s=0.3)
            out[f"{name}@b{b}"] = _ratio_row(r)
    top = max(s.latency_batches)
    fp16_ratio = out[f"fp16@b{top}"]["ratio"]
    if bad:
        raise PartFailed(f"pruned widths not multiples of 8: {bad}")
    if fp16_ratio >= 1.0:
        raise PartFailed(f"fp16 is not faster than fp32 at batch {top}: time ratio {fp16_ratio:.3f}")


# ----- part 3: TensorRT ------------------------------------------------------------------------------


def _real_batch(data: Data, n: int) -> Any:
    import torch

    xs = []
    for x, _ in data.bundle.loader("val", min(n, 256), shuffle=False):
        xs.append(x)
        if sum(len(t) for t in xs) >= n:
            break
    x = torch.cat(xs)[:n]
    return x if len(x) == n else x.repeat((n + len(x) - 1) // len(x), 1, 1, 1)[:n]


def export_engines_onnx(model: Any, data: Data, work: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    """The fp16 and INT8 (symmetric Q/DQ) ONNX files of ``model``, verified in ONNX Runtime, and the
    PyTorch models they were exported from."""
    from compress.apply import CALIB_BATCH_SIZE
    from compress.export import export_onnx
    from compress.quantize import convert
    from spaces.policy import LayerBits, QuantSpec

    example = _real_batch(data, 1)
    calib = [b for _, b in zip(range(8), data.bundle.loader("calib", CALIB_BATCH_SIZE, shuffle=False))]
    val = data.bundle.loader("val", 64, shuffle=False)
    fp16 = convert(model, QuantSpec(backend="cuda", default=LayerBits(16, 16)), None, example, target="cuda")
    int8 = convert(model, QuantSpec(backend="tensorrt", default=LayerBits(8, 8)), calib, example, target="tensorrt")
    paths = {"fp16": work / "fp16.onnx", "int8": work / "int8-qdq.onnx"}
    export_onnx(fp16.model, paths["fp16"], example, verify_loader=val)
    export_onnx(int8.model, paths["int8"], example, verify_loader=val)
    return paths, {"fp16": fp16.model, "int8": int8.model}


#: largest relative logit error of an engine against the PyTorch model it was exported from
TRT_MAX_ERROR = {"fp16": 0.02, "int8": 0.05}


def _engines(provider: str, paths: dict[str, Path], top: Any, device: str) -> dict[str, Any]:
    """What each runner is built from: one engine per precision for every batch (profile 1..top)
    with the ``tensorrt`` package; the ONNX path (an engine per runner) with ONNX Runtime's provider."""
    import torch

    from compress.measure._tensorrt import build_engine

    if provider != "tensorrt":
        return dict(paths)
    with torch.cuda.device(torch.device(device)):
        return {k: build_engine(p, top) for k, p in paths.items()}


def part_tensorrt(s: Settings, data: Data, work: Path, out: dict[str, Any]) -> None:
    """TensorRT engines of the fp16 and INT8 Q/DQ exports: agreement with PyTorch, then latency."""
    import torch

    from compress.measure import compare_latency, tensorrt_provider
    from compress.measure._tensorrt import INSTALL_HINT, tensorrt_runner

    provider, reason = tensorrt_provider()
    if provider is None:
        raise Skip(f"no TensorRT here ({reason}); {INSTALL_HINT}")
    model = resnet(int(s.latency_model.removeprefix("resnet")), data)
    paths, deployed = export_engines_onnx(model, data, work)
    out.update(provider=provider, model=s.latency_model, onnx={k: str(p) for k, p in paths.items()})
    t0 = time.perf_counter()
    sources = _engines(provider, paths, _real_batch(data, max(s.latency_batches)), s.device)
    out["build_s"] = round(time.perf_counter() - t0, 1)
    deployed = {k: m.to(s.device) for k, m in deployed.items()}
    for b in s.latency_batches:
        x = _real_batch(data, b)
        runners = {k: tensorrt_runner(src, x, device=s.device) for k, src in sources.items()}
        with torch.no_grad():
            top1 = model(x).argmax(1)
            for k, r in runners.items():
                r.run_ms()
                y, ref = r.output(), deployed[k](x.to(s.device)).float().cpu()
                err = float((y - ref).norm() / ref.norm())
                out[f"{k}@b{b}"] = {"rel_error_vs_pytorch": round(err, 5),
                                    "top1_agreement_vs_fp32": round(float((y.argmax(1) == top1).float().mean()), 4)}
                if err > TRT_MAX_ERROR[k]:
                    raise PartFailed(f"TensorRT {k} engine at batch {b}: logits differ from PyTorch's by {err:.3%} "
                                     f"(allowed {TRT_MAX_ERROR[k]:.0%})")
        r = compare_latency(runners["int8"], runners["fp16"], x, backend="tensorrt", device=s.device,
                            rounds=s.rounds, warmup_s=0.3)
        row = _ratio_row(r)
        out[f"int8-vs-fp16@b{b}"] = {**row, "int8": row.pop("model"), "fp16": row.pop("original")}


# ----- part 4: Ray search ----------------------------------------------------------------------------


def search_command(s: Settings, data: Data, run_dir: Path) -> list[str]:
    """The ``autocompress search`` command of part 4 (shortened proxy, latency on the device)."""
    space = "resnet20-cifar10" if data.kind == "cifar10-jpeg" else "quickstart"
    sets = [f"budget.finetune.steps={s.proxy_steps}", f"budget.val_limit={s.val_limit}", "budget.latency.rounds=8",
            "budget.latency.warmup_s=0.2", "budget.bn_recal_batches=5", f"budget.latency.device={s.device}",
            "quant.weight_bits=[8, 16, 32]"]
    sets.append("quant.backend=cuda" if s.device.startswith("cuda") else "quant.backend=x86")
    if data.kind == "cifar10-jpeg":
        sets += [f"model.checkpoint={data.weights[20]}", f"data.data_dir={data.data_dir}"]
    else:
        sets += ["model.baseline.epochs=2"]
    cmd = [sys.executable, "-m", "search.cli", "search", space, "--backend", "ray", "--trials", str(s.trials),
           "--max-concurrent", str(s.concurrent), "--device", s.device, "--out", str(run_dir), "--no-progress",
           "--json"]
    if s.gpus_per_trial > 0:
        cmd += ["--gpus-per-trial", str(s.gpus_per_trial)]
    for item in sets:
        cmd += ["--set", item]
    return cmd


def _run(cmd: list[str], env: dict[str, str], timeout: float, log_path: Path) -> subprocess.CompletedProcess:
    with open(log_path, "w") as fh:
        try:
            return subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=fh, text=True,
                                  timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            raise PartFailed(f"`{' '.join(cmd[2:5])}` ran past {timeout:.0f} s (log: {log_path})") from None


def max_concurrency(records: list[Any]) -> int:
    """Most trials whose [started, finished] intervals overlap at one moment."""
    events = []
    for r in records:
        if r.started and r.finished:
            events += [(datetime.fromisoformat(r.started), 1), (datetime.fromisoformat(r.finished), -1)]
    best = now = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        now += step
        best = max(best, now)
    return best


def check_search(run_dir: Path, lock_log: Path, trials: int, concurrent: int,
                 out: dict[str, Any] | None = None) -> dict[str, Any]:
    """The counts, the lock's audit log and the concurrency of a finished part-4 search (into ``out``,
    also when a check fails)."""
    from autocompress.rundir import read_records
    from compress.measure import overlapping_holds, read_lock_log

    records = read_records(run_dir)
    complete = [r for r in records if r.status == "complete"]
    numbers = [r.trial for r in complete]
    holds = read_lock_log(lock_log) if lock_log.is_file() else []
    overlaps = overlapping_holds(holds)
    out = {} if out is None else out
    out.update(complete=len(complete), failed=len(records) - len(complete), trial_numbers=sorted(numbers),
               latency_holds=len(holds), overlapping_holds=len(overlaps), workers=len({r.worker for r in complete}),
               max_concurrent_trials=max_concurrency(complete))
    problems = []
    if len(complete) != trials or len(set(numbers)) != len(numbers):
        problems.append(f"{len(complete)} complete records (trial numbers {sorted(numbers)}); "
                        f"expected exactly {trials}")
    if not holds:
        problems.append(f"no latency measurement recorded in {lock_log}")
    if overlaps:
        problems.append(f"{len(overlaps)} latency measurements overlapped: the lock did not serialise them")
    if concurrent > 1 and out["max_concurrent_trials"] < 2:
        problems.append("trials never ran concurrently")
    if problems:
        raise PartFailed("; ".join(problems))
    return out


def part_search(s: Settings, data: Data, work: Path, out: dict[str, Any], timeout: float) -> None:
    """Ray search on one GPU, checked, then finalized on the device (a fresh run: an earlier one is removed)."""
    run_dir, holds = work / "ray-search", work / "latency-holds.jsonl"
    shutil.rmtree(run_dir, ignore_errors=True)
    holds.unlink(missing_ok=True)
    pythonpath = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": pythonpath,
           "AUTOCOMPRESS_LATENCY_LOCK": str(work / "latency.lock"),
           "AUTOCOMPRESS_LATENCY_LOG": str(holds)}
    t0 = time.perf_counter()
    cmd = search_command(s, data, run_dir)
    proc = _run(cmd, env, timeout * 0.75, work / "search.log")
    if proc.returncode != 0:
        raise PartFailed(f"search exited {proc.returncode}: {_tail(work / 'search.log')}")
    out.update(command=" ".join(cmd[2:]), search_s=round(time.perf_counter() - t0, 1), summary=last_json(proc.stdout))
    check_search(run_dir, holds, s.trials, s.concurrent, out)
    t1 = time.perf_counter()
    fin = [sys.executable, "-m", "search.cli", "finalize", str(run_dir), "--device", s.device, "--epochs", "1",
           "--no-progress", "--format", "json"]
    proc = _run(fin, env, timeout - (t1 - t0), work / "finalize.log")
    if proc.returncode != 0:
        raise PartFailed(f"finalize exited {proc.returncode}: {_tail(work / 'finalize.log')}")
    final = last_json(proc.stdout)
    out["finalize"] = {k: final.get(k) for k in ("trial", "test_accuracy", "reference_test_accuracy", "flops_ratio",
                                                   "latency_ratio", "latency_ci_low", "latency_ci_high", "speedup")}
    out["finalize"]["onnx"] = "ok" if (final.get("onnx") or {}).get("path") else (final.get("onnx") or {}).get("error")
    out["finalize_s"] = round(time.perf_counter() - t1, 1)


def last_json(text: str) -> dict[str, Any]:
    """The last JSON document printed (from a line holding only ``{``) in a command's output."""
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].strip() == "{":
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads("\n".join(lines[i:]))
    raise PartFailed(f"no JSON summary in the command's output: {text[-300:]!r}")


def _tail(path: Path, lines: int = 3) -> str:
    text = path.read_text(errors="replace").strip().splitlines() if path.is_file() else []
    return " | ".join(text[-lines:])


# ----- part 5: pytest -m gpu ----------------------------------------------------------------------------


def part_pytest(s: Settings, data: Data, work: Path, out: dict[str, Any], timeout: float) -> None:
    """The gpu-marked tests, in a subprocess."""
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"]
    proc = _run(cmd, dict(os.environ), timeout, work / "pytest-gpu.log")
    summary = next((ln for ln in reversed(proc.stdout.strip().splitlines()) if " in " in ln), proc.stdout[-200:])
    out["summary"] = summary.strip("= ")
    if proc.returncode != 0:
        raise PartFailed(f"pytest -m gpu exited {proc.returncode}: {out['summary']}")


# ----- driver ------------------------------------------------------------------------------------------


def _torch() -> Any:
    import torch

    return torch


@contextlib.contextmanager
def _timed(result: PartResult) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
        result.status = "pass"
    except Skip as exc:
        result.status, result.reason = "skipped", str(exc)
    except PartFailed as exc:
        result.status, result.reason = "fail", str(exc)
    except Exception as exc:  # noqa: BLE001 - a crash fails this part; the others still run
        result.status, result.reason = "fail", f"{type(exc).__name__}: {exc}"
        log.debug("part %d crashed:\n%s", result.part, traceback.format_exc())
    finally:
        result.seconds = round(time.perf_counter() - t0, 1)


def run_parts(s: Settings, parts: list[int], work: Path, data: Data, started: float | None = None) -> list[PartResult]:
    """Run the chosen parts in order; each is capped (its own cap, and what is left of ``s.total_s``
    since ``started``) and never stops the others."""
    deadline = (time.perf_counter() if started is None else started) + s.total_s
    calls: dict[int, Callable[[dict[str, Any], float], None]] = {
        1: lambda out, cap: part_fit(s, data, work, out), 2: lambda out, cap: part_latency(s, data, work, out),
        3: lambda out, cap: part_tensorrt(s, data, work, out), 4: lambda out, cap: part_search(s, data, work, out, cap),
        5: lambda out, cap: part_pytest(s, data, work, out, cap)}
    results = []
    for p in parts:
        res = PartResult(p, PART_NAMES[p], "fail")
        cap = min(s.caps[p], deadline - time.perf_counter())
        if cap < 10:
            res.reason = f"not run: the {s.total_s:.0f} s budget of the whole check is spent"
            results.append(res)
            continue
        with _timed(res):  # numbers filled so far are kept when the part fails
            calls[p](res.numbers, cap)
        if res.status == "pass" and res.seconds > cap:
            res.status, res.reason = "fail", f"took {res.seconds:.0f} s, over its {cap:.0f} s cap"
        log.info("part %d %s: %s (%.1f s) %s", p, res.name, res.status, res.seconds, res.reason)
        results.append(res)
    return results


def _headline(r: PartResult) -> str:
    n = r.numbers
    if r.status != "pass":
        return r.reason
    if r.part == 1:
        return "; ".join(f"{k}: {v['gpu_images_per_s']:.0f} vs {v['cpu_images_per_s']:.0f} img/s = {v['speedup']:.1f}x"
                         for k, v in n.items())
    if r.part in (2, 3):
        keys = [k for k in n if "@b" in k and isinstance(n[k], dict) and "ratio" in n[k]]
        return "; ".join(f"{k} x{n[k]['ratio']:.3f} [{n[k]['ci95'][0]:.3f}-{n[k]['ci95'][1]:.3f}]" for k in keys)
    if r.part == 4:
        return (f"{n['complete']} complete, up to {n['max_concurrent_trials']} at once, "
                f"{n['latency_holds']} lock holds "
                f"(0 overlapping); final test top-1 {n['finalize']['test_accuracy']:.2f}")
    return n.get("summary", "")


def format_table(results: list[PartResult]) -> str:
    """The plain-text table printed at the end."""
    rows = [("part", "check", "status", "s", "result")]
    rows += [(str(r.part), r.name, r.status, f"{r.seconds:.0f}", _headline(r)) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4] for row in rows)


def environment(s: Settings, data: Data) -> dict[str, Any]:
    """Date, GPU, versions and data of the run (the JSON header)."""
    torch = _torch()
    trt = None
    with contextlib.suppress(Exception):
        import tensorrt

        trt = tensorrt.__version__
    gpu = torch.cuda.get_device_name(0) if s.device.startswith("cuda") else platform.processor() or "cpu"
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": s.device, "gpu": gpu,
            "torch": torch.__version__, "cuda": torch.version.cuda, "tensorrt": trt, "data": data.kind,
            "host": platform.node(), "cpu_count": os.cpu_count()}


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/gpu-check.json", help="JSON results (default runs/gpu-check.json)")
    ap.add_argument("--parts", default="1,2,3,4,5", help="comma-separated parts to run (default all)")
    ap.add_argument("--quick-cpu", action="store_true", help=argparse.SUPPRESS)  # the CPU tests of this script
    args = ap.parse_args(argv)
    parts = sorted({int(p) for p in args.parts.split(",") if p.strip()})
    if not set(parts) <= set(PART_NAMES):
        ap.error(f"--parts {args.parts}: allowed {', '.join(map(str, PART_NAMES))}")
    s = settings or (QUICK if args.quick_cpu else Settings())
    torch = _torch()
    if s.device.startswith("cuda") and not torch.cuda.is_available():
        print(NO_CUDA)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(args.out)
    work = out.with_suffix("")
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = load_data()
    results = run_parts(s, parts, work, data, started=t0)
    doc = {**environment(s, data), "total_s": round(time.perf_counter() - t0, 1),
           "passed": all(r.status != "fail" for r in results), "parts": [asdict(r) for r in results]}
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"\ngpu_check on {doc['gpu']} ({doc['date']}, data {doc['data']}, {doc['total_s']:.0f} s):")
    print(format_table(results))
    print(f"JSON: {out}")
    return 0 if doc["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
