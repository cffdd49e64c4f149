"""Finalize a search: pick one point, fine-tune it fully, test it, export it.

``autocompress finalize RUN [--pick knee | --pick "max accuracy where latency_ratio <= 0.5" |
--trial N] [--epochs E] [--no-kd]``

Picking a trial (the knee of the Pareto front by default, ``max|min METRIC where ...``, or
``--trial N``) is :mod:`search.picking`.

The chosen recipe is fine-tuned with the space's ``budget.final`` schedule (``epochs``
overrides its length) with the distillation its proxy used: the built-in spaces fix KD during the
search, so every point keeps the recipe it was ranked under; only a policy without KD
(``distill.alpha`` 0, from a space that turns KD off) gets alpha 0.5 from the original model, unless
``kd=False``. It is then scored on val and **test**, its costs and measured
speed-up reported (``compress.measure.measure`` through :class:`search.baseline.Baseline`, as during
the search), and exported: ``RUN/final/{policy.yaml, model.pt}``
(``compress.artifact.save_compressed``), ``model.onnx`` (``compress.export.export_compressed``:
the ORT-native INT8 ONNX for x86 INT8 policies, verified by its accuracy on val),
``model.torchscript.pt`` (the PyTorch deploy model traced and frozen, ``compress.torchscript``:
what latency backend ``torchscript`` times; ``torch.jit.load`` it without this package),
``recipe.yaml`` (replayable, with provenance) and ``metrics.json``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch

from autocompress.rundir import atomic_write_json, load_run
from compress.apply import Compressed, calibration_batches
from compress.artifact import save_compressed
from compress.export import export_compressed
from compress.torchscript import TorchScriptError, export_torchscript
from search.baseline import Baseline
from search.picking import FinalizeError, choose_trial, parse_pick
from search.recipes import recipe_policy, run_space
from spaces.policy import FinetuneSpec, Policy

log = logging.getLogger("search.finalize")

DEFAULT_KD_ALPHA = 0.5


def final_schedule(space: Any, *, epochs: float | None = None, steps: int | None = None) -> FinetuneSpec:
    """The space's ``budget.final`` fine-tune schedule, its length overridden by ``epochs`` or ``steps``."""
    schedule = space.budget.final
    if epochs is not None and steps is not None:
        raise FinalizeError(f"--epochs {epochs} and --steps {steps}: give one of them")
    if epochs is not None:
        if epochs <= 0:
            raise FinalizeError(f"--epochs {epochs}: must be > 0")
        schedule = dataclasses.replace(schedule, epochs=float(epochs), steps=None)
    if steps is not None:
        if steps <= 0 or int(steps) != steps:
            raise FinalizeError(f"--steps {steps}: must be a whole number > 0")
        schedule = dataclasses.replace(schedule, epochs=None, steps=int(steps))
    return schedule


def final_policy(policy: Policy, space: Any, *, epochs: float | None = None, kd: bool = True,
                 steps: int | None = None) -> Policy:
    """The chosen recipe with the full fine-tune schedule (:func:`final_schedule`; the policy's own
    seed) and distillation settings (KD from the original unless ``kd=False``)."""
    schedule = final_schedule(space, epochs=epochs, steps=steps)
    distill = policy.distill
    if kd and distill.alpha == 0:
        distill = dataclasses.replace(distill, alpha=DEFAULT_KD_ALPHA)
    if not kd:
        distill = dataclasses.replace(distill, alpha=0.0, feature_weight=0.0)
    return policy.replace(finetune=dataclasses.replace(schedule, seed=policy.finetune.seed), distill=distill)


def finalize(run_dir: str | Path, pick: str = "knee", *, trial: int | None = None, epochs: float | None = None,
             kd: bool = True, device: str = "cpu", onnx: bool = True, progress: bool = True) -> dict[str, Any]:
    """Pick a point of ``run_dir``, fine-tune it fully, evaluate on val and test, export it.

    Returns the dict written to ``RUN/final/metrics.json``. See the module docstring.
    """
    run_dir = Path(run_dir)
    if trial is None:
        parse_pick(pick)  # a typo fails before anything is read
    run = load_run(run_dir)
    number, why = choose_trial(run, pick, trial=trial)
    space = run_space(run_dir)
    log.info("finalizing trial %d (%s)", number, why)
    chosen = recipe_policy(run, number)
    policy = final_policy(chosen, space, epochs=epochs, kd=kd)

    baseline = Baseline(space, run_dir, device=device, progress=progress)
    out, measured, finetune_s = finetune_and_measure(baseline, policy)
    final_dir = run_dir / "final"
    final_dir.mkdir(parents=True, exist_ok=True)
    save_compressed(final_dir, out.policy, out.model)
    onnx_info: dict[str, Any] = {}
    if onnx:
        onnx_info = _export_onnx(out, final_dir / "model.onnx", baseline.data, baseline.input_size)
    else:
        (final_dir / "model.onnx").unlink(missing_ok=True)  # never leave a stale export beside new weights
    example = torch.randn(1, 3, baseline.input_size, baseline.input_size)
    ts_info = torchscript_artifact(out.deploy, final_dir / "model.torchscript.pt", example,
                                   baseline.data.loader("val", 64, shuffle=False), int8_engine=out.int8_engine)
    record = run.record(number)
    provenance = {**chosen.provenance, "finalized_from_trial": number, "pick": why,
                  "search_metrics": dict(record.metrics)}
    out.policy.replace(provenance=provenance).save(final_dir / "recipe.yaml")
    metrics = {"dir": str(final_dir), "trial": number, "pick": why, "policy_hash": policy.hash(),
               "epochs": policy.finetune.epochs, "steps": getattr(out.train_result, "steps", None),
               "kd_alpha": policy.distill.alpha, **measured,
               "search_metrics": dict(record.metrics), "precision": dict(out.precision), "notes": list(out.notes),
               "finetune_seconds": round(finetune_s, 2), "onnx": onnx_info, "torchscript": ts_info,
               "files": sorted({p.name for p in final_dir.iterdir() if p.is_file() and not p.name.startswith(".")}
                               | {"metrics.json"})}
    atomic_write_json(final_dir / "metrics.json", metrics)
    log.info("final model: test top-1 %.2f%% (original %.2f%%), FLOPs x%.3f, speed-up x%.2f; written to %s",
             metrics["test_accuracy"], metrics["reference_test_accuracy"], metrics["flops_ratio"],
             metrics["speedup"] or float("nan"), final_dir)
    return metrics


def finetune_and_measure(baseline: Baseline, policy: Policy, *,
                         latency: bool = True) -> tuple[Compressed, dict[str, Any], float]:
    """Fully fine-tune ``policy`` (a :func:`final_policy`) from ``baseline``'s original model and
    measure it: ``(compressed, metrics, fine-tune seconds)``. The one path of ``finalize`` and
    ``autocompress audit``; ``metrics`` are val and test accuracy, costs and (``latency``, always in
    ``finalize``) the measured latency ratio against the original."""
    _ = baseline.reference  # prepared (and timed) outside the fine-tune
    t0 = time.perf_counter()
    out = baseline.apply_policy(policy)  # seeded as the objective's trials: `apply --verify` replays it
    finetune_s = time.perf_counter() - t0
    return out, _final_metrics(baseline, out, latency=latency), finetune_s


def _final_metrics(baseline: Baseline, out: Compressed, *, latency: bool = True) -> dict[str, Any]:
    """Val and test accuracy, costs and (``latency``) the measured speed-up of the final model,
    against the original's test accuracy."""
    batch = baseline.space.budget.eval_batch_size
    test_loader = baseline.data.loader("test", batch, shuffle=False)
    val = baseline.measure(out, loader=baseline.data.loader("val", batch, shuffle=False), latency=latency)
    test = baseline.measure(out, loader=test_loader, costs=False, latency=False)
    test_ref = baseline.measure(baseline.model, loader=test_loader, costs=False, latency=False)
    reference = baseline.reference
    ratio = val.latency_ratio
    metrics: dict[str, Any] = {
        "val_accuracy": val.accuracy,
        "test_accuracy": test.accuracy,
        "reference_val_accuracy": float(reference["accuracy"]) if reference.get("val_images") else None,
        "reference_test_accuracy": test_ref.accuracy,
        "test_accuracy_drop": test_ref.accuracy - test.accuracy,
        "test_images": test.images,
        "val_images": val.images,
        "flops": val.flops, "params": val.params, "size": val.size, "bops": val.bops,
        "flops_ratio": val.flops_ratio,
        "size_ratio": val.size / max(float(reference["size"]), 1.0),
        "latency_ratio": ratio,
        "latency_ci_low": val.latency_ci_low,
        "latency_ci_high": val.latency_ci_high,
        "latency_busy": val.latency_busy,
        "speedup": 1.0 / ratio if ratio is not None and ratio > 0 else None,
        **val.batch_metrics(speedup=True),  # latency@B, its CI, busy flag and speedup@B per other batch
    }
    if test.top5 is not None:
        metrics["test_top5"] = test.top5
    return metrics


def _export_onnx(out: Compressed, path: Path, data: Any, input_size: int) -> dict[str, Any]:
    """Export and verify the deploy artefact (``compress.export.export_compressed``: ORT-native INT8
    verified by accuracy on val, or float); a failure is reported in metrics.json, not fatal
    (weights are saved)."""
    example = torch.randn(1, 3, input_size, input_size)
    try:
        report = export_compressed(out, path, calib=calibration_batches(data), example=example,
                                   verify_loader=data.loader("val", 64, shuffle=False))
    except Exception as exc:  # noqa: BLE001 - keep the PyTorch artifact; say why ONNX failed
        log.warning("ONNX export failed: %s", exc)
        return {"path": None, "error": f"{type(exc).__name__}: {exc}"}
    info: dict[str, Any] = {}
    if dataclasses.is_dataclass(report):
        info.update({k: v for k, v in dataclasses.asdict(report).items()
                     if isinstance(v, (int, float, str, bool)) or v is None})
    info["path"] = path.name  # relative to RUN/final
    return info


def torchscript_artifact(deploy: torch.nn.Module, path: Path, example: torch.Tensor, verify_loader: Any,
                         verify_batches: int = 4, int8_engine: str | None = None) -> dict[str, Any]:
    """Write ``model.torchscript.pt``, the deploy model traced and frozen
    (:func:`compress.torchscript.export_torchscript`, checked against it on ``verify_batches``
    batches of ``verify_loader``); a failure is reported (``error``), not raised: the weights are kept.
    ``int8_engine`` (``Compressed.int8_engine``) is recorded: the PyTorch quantized engine a process
    must set before ``torch.jit.load`` of an INT8 model to run the kernels it was measured with."""
    path.unlink(missing_ok=True)  # never leave a stale export beside new weights
    if any(t.device.type != "cpu" for t in [*deploy.parameters(), *deploy.buffers()]):
        deploy = copy.deepcopy(deploy).cpu()  # fine-tuned on a GPU: the artefact is traced on the CPU
    try:
        report = export_torchscript(deploy, path, example, verify_loader=verify_loader,
                                    verify_batches=verify_batches)
    except TorchScriptError as exc:
        log.warning("TorchScript export failed: %s", exc)
        return {"path": None, "error": str(exc), "int8_engine": int8_engine}
    if int8_engine is not None:
        log.info("%s: INT8 weights for PyTorch's %r quantized engine; set torch.backends.quantized.engine = %r "
                 "before torch.jit.load", path, int8_engine, int8_engine)
    return {**dataclasses.asdict(report), "path": path.name, "int8_engine": int8_engine}


__all__ = ["DEFAULT_KD_ALPHA", "final_policy", "final_schedule", "finalize", "finetune_and_measure",
           "torchscript_artifact"]
