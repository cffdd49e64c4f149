"""Operator benchmark: what pruning, INT8 and both buy on CPU, and what KD fine-tuning recovers.

Every latency number is a ratio against the *original* model, measured interleaved in one
process after warm-up (``compress.measure.compare_latency``) on ``--threads`` threads, with a
bootstrap CI. Cases (``--cases`` picks some; default all)::

    r56-prune50        ResNet-56, uniform 50% block-inner pruning, torch      target >= 1.6x @b1, >= 2.2x @b128
    r56-int8           ResNet-56, x86 INT8 (FX), torch
    r56-prune50-int8   ResNet-56, 50% + INT8, torch                            target >= 2.3x @b1, >= 6.5x @b128
    ort-*              the same three with ONNX Runtime: the compressed ONNX vs the fp32 ONNX of the
                       original; INT8 cases time the ORT-native INT8 artefact (compress.onnx_int8)
                       ort-r56-int8 target >= 3x @b1, >= 4x @b128;
                       ort-r56-prune50-int8 target >= 3x @b1, >= 5x @b128
    ort-r56-prune50-int8-vs-int8   the pruned INT8 artefact vs the unpruned one: never slower (>= 1x)
    r18-prune50-int8   ResNet-18 at 224x224, 50% + INT8, torch                 target >= 8x @b1

``--accuracy``: shared ResNet-20, recipe ``resnet20-prune30-kd.yaml`` (30% uniform block-inner,
1 epoch KD from the unpruned model) on the CIFAR-10 JPEG copy; must reach >= 85.0% top-1 on
its test split, and INT8 conversion may cost at most 0.5 points. Reports wall time.

Run ``python benchmarks/bench_operators.py --quick --cases r56-prune50 --batches 1`` to smoke
test; the full run wants a quiet machine. Prints a table and writes ``--out`` JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AUTOCOMPRESS_SHARED", REPO.parent / "shared"))
CIFAR_DIR = Path(os.environ.get("AUTOCOMPRESS_CACHE", Path.home() / ".cache" / "autocompress")) / "cifar10-jpeg75"
WEIGHTS = SHARED / "weights" / "cifar10-resnet"

log = logging.getLogger("bench_operators")


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    prune: float
    int8: bool
    backend: str  # torch | onnxruntime
    targets: dict[int, float]  # batch -> minimum speedup
    versus_int8: bool = False  # baseline: the unpruned INT8 model instead of the original


CASES = [
    Case("r56-prune50", "resnet56", 0.5, False, "torch", {1: 1.6, 128: 2.2}),
    Case("r56-int8", "resnet56", 0.0, True, "torch", {}),
    Case("r56-prune50-int8", "resnet56", 0.5, True, "torch", {1: 2.3, 128: 6.5}),
    Case("ort-r56-prune50", "resnet56", 0.5, False, "onnxruntime", {}),
    Case("ort-r56-int8", "resnet56", 0.0, True, "onnxruntime", {1: 3.0, 128: 4.0}),
    Case("ort-r56-prune50-int8", "resnet56", 0.5, True, "onnxruntime", {1: 3.0, 128: 5.0}),
    Case("ort-r56-prune50-int8-vs-int8", "resnet56", 0.5, True, "onnxruntime", {1: 1.0, 128: 1.0}, True),
    Case("r18-prune50-int8", "resnet18", 0.5, True, "torch", {1: 8.0}),
]
CASE_NAMES = [c.name for c in CASES]


# ----- building compressed models ------------------------------------------------------------------
def _original(name: str) -> torch.nn.Module:
    from compress.models import get_model, load_checkpoint

    model = get_model(name)
    ckpts = sorted(WEIGHTS.glob(f"{name}-*.th"))
    if ckpts:  # trained weights where shared (latency does not depend on them, calibration ranges do)
        load_checkpoint(model, ckpts[0])
    return model.eval()


@cache
def _calibration(input_size: int, n: int = 4, batch: int = 32) -> tuple[list, str]:
    """Calibration batches: the CIFAR-10 JPEG calib split for 32x32 models when present, else
    random normal images (only latency is measured on them, never accuracy)."""
    if input_size == 32 and (CIFAR_DIR / "train").is_dir():
        from compress.data import get_dataset

        data = get_dataset("imagefolder", CIFAR_DIR)
        batches = []
        for i, b in enumerate(data.loader("calib", batch, shuffle=False)):
            if i >= n:
                break
            batches.append(b)
        return batches, "cifar10-jpeg calib split"
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(batch if input_size <= 64 else 4, 3, input_size, input_size, generator=g),
             torch.zeros(batch if input_size <= 64 else 4, dtype=torch.long)) for _ in range(n)], \
        "random normal inputs (latency only)"


@dataclass(frozen=True)
class Built:
    """A case's models: the original, the compressed float structure, the PyTorch deploy model."""

    original: torch.nn.Module
    structure: torch.nn.Module
    deploy: torch.nn.Module
    quant: Any  # spaces.policy.QuantSpec
    calib: list
    facts: dict[str, Any]

    def onnx(self, path: Path) -> Path:
        """The ONNX deploy artefact: ORT-native INT8 (``compress.onnx_int8``) or the float export."""
        from compress.export import export_onnx
        from compress.onnx_int8 import export_onnx_int8

        if self.quant.active:
            export_onnx_int8(self.structure, self.quant, self.calib, path)
        else:
            export_onnx(self.deploy, path, self.calib[0][0][:1])
        return path


def compressed(case: Case, prune_ratio: float | None = None) -> Built:
    """The models of ``case`` (no fine-tune); ``prune_ratio`` overrides the case's."""
    from compress._apply_recipes import INT8_X86, uniform_block_inner
    from compress.models import default_input_size
    from compress.prune import prune
    from compress.quantize import convert
    from spaces.policy import QuantSpec

    original = _original(case.model)
    size = default_input_size(case.model)
    ratio = case.prune if prune_ratio is None else prune_ratio
    policy = uniform_block_inner(case.model, ratio, quant=INT8_X86 if case.int8 else QuantSpec())
    calib, calib_what = _calibration(size)
    t0 = time.perf_counter()
    pruned = prune(original, policy.prune, input_size=size)[0] if policy.prune.active else original
    deploy = convert(pruned, policy.quant, calib, calib[0][0][:1]).model if case.int8 else pruned.eval()
    return Built(original, pruned, deploy, policy.quant, calib,
                 {"input_size": size, "calibration": calib_what, "build_s": round(time.perf_counter() - t0, 2)})


# ----- latency ---------------------------------------------------------------------------------------
def run_case(case: Case, batches: list[int], threads: int, rounds: int, tmp: Path) -> dict[str, Any]:
    from compress.measure import compare_latency, count_flops

    built = compressed(case)
    base = compressed(case, prune_ratio=0.0) if case.versus_int8 else None
    size = built.facts["input_size"]
    reference = base.structure if base is not None else built.original
    out: dict[str, Any] = {"case": case.name, "model": case.model, "prune": case.prune, "int8": case.int8,
                           "backend": case.backend, "baseline": "unpruned int8" if base else "original",
                           **built.facts,
                           "flops_ratio": round(count_flops(built.structure, size) / count_flops(reference, size), 4)}
    a, b = built.deploy, base.deploy if base is not None else built.original
    if case.backend == "onnxruntime":
        from compress.export import export_onnx

        a = built.onnx(tmp / f"{case.name}.onnx")
        if base is not None:
            b = base.onnx(tmp / f"{case.name}-int8.onnx")
        else:
            b = export_onnx(built.original, tmp / f"{case.name}-original.onnx", torch.randn(1, 3, size, size)).path
    for batch in batches:
        example = torch.randn(batch, 3, size, size)
        r = compare_latency(a, b, example, backend=case.backend, threads=threads, rounds=rounds)
        target = case.targets.get(batch)
        out[f"b{batch}"] = {"speedup": round(r.speedup, 3), "ratio": round(r.ratio, 4),
                            "ci_low": round(r.ci_low, 4), "ci_high": round(r.ci_high, 4),
                            "compressed_ms": round(r.a.median_ms, 3), "original_ms": round(r.b.median_ms, 3),
                            "busy": r.busy, "busy_reason": r.busy_reason, "target_speedup": target,
                            "meets_target": None if target is None else bool(r.speedup >= target)}
        log.info("%s b%d: %.2fx faster (ratio %.3f [%.3f, %.3f])%s", case.name, batch, r.speedup, r.ratio,
                 r.ci_low, r.ci_high, " BUSY" if r.busy else "")
    return out


# ----- accuracy --------------------------------------------------------------------------------------
def run_accuracy(steps: int | None, eval_limit: int | None, device: str) -> dict[str, Any]:
    """Shared ResNet-20 + resnet20-prune30-kd.yaml on CIFAR-10 JPEG; INT8 conversion of the result.

    The recipe re-estimates the (unpruned) teacher's BatchNorm statistics on 40 train batches
    (``distill.teacher_bn_recal``): the shared weights were trained on PNG CIFAR-10, and their BN
    statistics do not match JPEG inputs (81.0% -> ~83.8% on test).
    """
    import dataclasses

    from compress._apply_recipes import INT8_X86, RECIPES_DIR
    from compress.apply import apply
    from compress.data import get_dataset
    from compress.measure import evaluate
    from compress.quantize import convert
    from spaces.policy import Policy

    ckpt = WEIGHTS / "resnet20-12fca82f.th"
    if not ckpt.is_file() or not (CIFAR_DIR / "train").is_dir():
        raise SystemExit(f"--accuracy needs {ckpt} and the unpacked CIFAR-10 JPEG copy at {CIFAR_DIR}")
    t0 = time.perf_counter()
    policy = Policy.load(RECIPES_DIR / "resnet20-prune30-kd.yaml")
    if steps is not None:
        policy = policy.replace(finetune=dataclasses.replace(policy.finetune, steps=steps))
    original = _original("resnet20")
    data = get_dataset("imagefolder", CIFAR_DIR)

    def acc(model: torch.nn.Module) -> float:
        loader = data.loader("test", 256, shuffle=False, limit=eval_limit)
        return evaluate(model, loader, progress=False)["top1"]

    before = acc(original)
    result = apply(policy, original, data=data, device=device)
    t_apply = time.perf_counter() - t0
    float_top1 = acc(result.deploy)
    calib = [b for i, b in zip(range(8), data.loader("calib", 64, shuffle=False))]
    int8 = convert(result.model.cpu(), INT8_X86, calib, calib[0][0][:1]).model
    int8_top1 = acc(int8)
    return {"original_top1": before, "pruned_kd_top1": float_top1, "int8_top1": int8_top1,
            "int8_cost_pt": round(float_top1 - int8_top1, 3), "target_top1": 85.0, "max_int8_cost_pt": 0.5,
            "meets_top1": float_top1 >= 85.0, "meets_int8": float_top1 - int8_top1 <= 0.5,
            "finetune": result.train_result.to_dict() if result.train_result else None,
            "timings": result.timings, "apply_wall_s": round(t_apply, 1),
            "wall_s": round(time.perf_counter() - t0, 1), "eval_images": eval_limit or "all"}


# ----- output ---------------------------------------------------------------------------------------
def table(results: list[dict[str, Any]], batches: list[int]) -> str:
    head = ["case", "backend", "flops"] + [f"b{b} speedup [CI]" for b in batches]
    rows = [head]
    for r in results:
        row = [r["case"], r["backend"], f"{r['flops_ratio']:.3f}"]
        for b in batches:
            m = r.get(f"b{b}")
            if m is None:
                row.append("-")
                continue
            lo, hi = 1 / m["ci_high"], 1 / m["ci_low"]
            flag = "" if m["meets_target"] is None else (" ok" if m["meets_target"] else f" <{m['target_speedup']}")
            row.append(f"{m['speedup']:.2f}x [{lo:.2f}, {hi:.2f}]{flag}{' busy' if m['busy'] else ''}")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--cases", nargs="+", choices=CASE_NAMES, default=CASE_NAMES, metavar="CASE",
                   help="cases to run: " + ", ".join(CASE_NAMES))
    p.add_argument("--batches", nargs="+", type=int, default=None, help="batch sizes (default 1 128)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="fewer timing rounds, batch 1 and 32; accuracy on 20 steps")
    p.add_argument("--accuracy", action="store_true", help="also run the ResNet-20 KD accuracy check")
    p.add_argument("--no-latency", action="store_true", help="skip the latency cases")
    p.add_argument("--device", default="cpu", help="device for the accuracy fine-tune")
    p.add_argument("--out", default=None, help="write results as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("fvcore", "iopath"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    batches = args.batches or ([1, 32] if args.quick else [1, 128])
    rounds = 6 if args.quick else 20
    report: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor(),
                    "cores": os.cpu_count(), "threads": args.threads},
        "quick": args.quick, "batches": batches, "rounds": rounds, "cases": []}
    t0 = time.perf_counter()
    if not args.no_latency:
        selected = [c for c in CASES if c.name in args.cases]
        with tempfile.TemporaryDirectory() as tmp:
            for case in selected:
                case_batches = [b for b in batches if case.model != "resnet18" or b <= 32]
                report["cases"].append(run_case(case, case_batches, args.threads, rounds, Path(tmp)))
        print(table(report["cases"], batches))
    if args.accuracy:
        report["accuracy"] = run_accuracy(20 if args.quick else None, 1000 if args.quick else None, args.device)
        a = report["accuracy"]
        print(f"accuracy: original {a['original_top1']:.2f}%  pruned+KD {a['pruned_kd_top1']:.2f}% "
              f"(target >= 85.0: {'ok' if a['meets_top1'] else 'MISSED'})  int8 {a['int8_top1']:.2f}% "
              f"(cost {a['int8_cost_pt']:+.2f} pt, max 0.5: {'ok' if a['meets_int8'] else 'MISSED'})  "
              f"wall {a['wall_s']:.0f}s")
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
        log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
