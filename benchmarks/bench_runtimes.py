"""Does the speed-up depend on the form the original is timed in? Each INT8 recipe and the float original,
both in each CPU runtime form, timed against each other interleaved in one process at batch 1 and 128
(``compress.measure.compare_latency``, torch CPU, ``--threads``)::

    python benchmarks/bench_runtimes.py --checkpoint runs/headline-r56/adapt/baseline/model.pt \\
        --recipes benchmarks/results/headline-r56-seeds/recipes/seed-flops-0.7-int8.yaml --out runs/runtimes.json

Forms (the headline and every ``torchscript`` latency time ``ts``, the default layout, on both sides;
``torchscript-cl`` latency times ``ts-cl`` on both):

- ``ts``: traced and frozen TorchScript (``compress.torchscript.freeze_torchscript``), NCHW input;
- ``ts-cl``: the same in channels_last layout (latency backend ``torchscript-cl``): the NCHW input is
  converted inside the frozen graph (a 128x3x32x32 copy, well under a millisecond);
- ``inductor``: ``torch.compile`` (inductor, weights frozen) of the float original; for the candidate,
  the recipe's float (pruned) model exported and quantized with torchao's PT2E ``X86InductorQuantizer``
  (the recipe's INT8 layers only, calibrated on the data's ``calib`` split), then compiled. Needs
  ``pip install torchao``; without it the form is left out and the JSON says why.

Each recipe's INT8 model is packed for ``--engine``. Speed is all this measures (each recipe is applied
without fine-tuning; the weights do not change the speed). Per recipe and batch the JSON has the speed-up
matrix (candidate form x reference form) and ``fastest_vs_fastest``: the candidate's best form against
the original's fastest form, the speed-up a user who deploys both at their best would see.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root and benchmarks/ importable
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from _recipe_inputs import (  # noqa: E402
    add_engine_arg,
    add_recipe_args,
    check_recipe_args,
    load_recipes,
    write_results,
)

log = logging.getLogger("bench_runtimes")
FORMS = ("ts", "ts-cl", "inductor")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_args(ap, "x86 INT8 policy files to time")
    add_engine_arg(ap, "--engine", "onednn", "quantized engine of the TorchScript INT8 forms (default onednn)")
    ap.add_argument("--forms", nargs="+", choices=FORMS, default=list(FORMS), help="runtime forms to time")
    ap.add_argument("--rounds", type=int, default=12)
    args = ap.parse_args(argv)
    check_recipe_args(ap, args)
    if args.rounds < 2:
        ap.error(f"--rounds {args.rounds}: must be >= 2")
    return args


def torchao_missing() -> str | None:
    """Why the ``inductor`` INT8 form cannot be built here (None: it can)."""
    import importlib.util

    if importlib.util.find_spec("torchao") is None:
        return "torchao is not installed (pip install torchao)"
    return None


def torchscript_form(model: Any, example: Any, channels_last: bool) -> Any:
    """``ts`` / ``ts-cl``: ``model`` traced and frozen in that layout, as latency backends ``torchscript`` /
    ``torchscript-cl`` time it (:func:`compress.torchscript.freeze_torchscript`: ``ts-cl`` converts the
    NCHW input to channels_last inside its graph)."""
    from compress.torchscript import freeze_torchscript

    return freeze_torchscript(model, example[:1], channels_last=channels_last)


def compiled(model: Any, example: Any) -> Any:
    """``torch.compile`` of ``model`` with frozen weights, compiled now (on ``example``) rather than when
    timed, under the inference mode the runners time in: another grad mode fails dynamo's guards and
    recompiles unfrozen (a PT2E INT8 model then runs its reference dequantize-conv-quantize graph)."""
    import torch
    import torch._inductor.config as inductor_config

    form = torch.compile(model, dynamic=False)
    with inductor_config.patch(freezing=True), torch.inference_mode():
        form(example)
    return form


def pt2e_int8(policy: Any, float_model: Any, data: Any, max_batch: int = 4096) -> Any:
    """The recipe's float model with its INT8 layers quantized by torchao's ``X86InductorQuantizer``
    (static, per-channel weights, calibrated on ``calib``), exported with a dynamic batch up to
    ``max_batch`` (at least 4096); not compiled."""
    import copy

    import torch
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    from compress.apply import calibration_batches
    from compress.models import quantizable_layers

    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    for layer in quantizable_layers(float_model):
        if policy.quant.bits_for(layer).w != 8:
            quantizer.set_module_name_qconfig(layer, None)
    calib = [x for x, _ in calibration_batches(data)]
    batch = torch.export.Dim("batch", min=1, max=max(4096, max_batch))  # calibration and every timed batch
    exported = torch.export.export(copy.deepcopy(float_model).eval(), (calib[0],),
                                   dynamic_shapes=({0: batch},)).module()
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for x in calib:
            prepared(x)
    converted = convert_pt2e(prepared)
    allow_exported_model_train_eval(converted)
    return converted


def candidates(policy: Any, original: Any, data: Any, args: argparse.Namespace,
               skipped: dict[str, str]) -> dict[str, Any]:
    """The candidate's model per form, built once per recipe: the INT8 deploy model packed for
    ``--engine`` (``ts``, ``ts-cl``) and the PT2E INT8 model (``inductor``; recorded in ``skipped``
    without torchao)."""
    from compress.apply import apply
    from spaces.policy import QuantSpec

    models = {}
    if any(form.startswith("ts") for form in args.forms):
        deploy = apply(policy, original, data=data, finetune=False, progress=False, bn_recal_batches=0,
                       engine=args.engine).deploy
        models.update({form: deploy for form in args.forms if form.startswith("ts")})
    if "inductor" in args.forms:
        if (why := torchao_missing()) is not None:
            skipped["inductor"] = why
        else:
            float_model = apply(policy.replace(quant=QuantSpec()), original, data=data, finetune=False,
                                progress=False, bn_recal_batches=0).deploy
            models["inductor"] = pt2e_int8(policy, float_model, data, max(args.batches))
    return models


def build_forms(models: dict[str, Any], original: Any, example: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(candidate forms, reference forms)`` at the example's batch size, for the forms in ``models``."""
    import torch

    cand, ref = {}, {}
    for form, model in models.items():
        if form.startswith("ts"):
            cand[form] = torchscript_form(model, example, form == "ts-cl")
            ref[form] = torchscript_form(original, example, form == "ts-cl")
        else:
            torch._dynamo.reset()  # each batch size compiles its own static graphs
            cand[form], ref[form] = compiled(model, example), compiled(original, example)
    return cand, ref


def time_recipe(policy: Any, original: Any, data: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Per batch: the speed-up of each candidate form over each reference form, and the best over the fastest."""
    import torch

    from compress.measure import compare_latency

    skipped: dict[str, str] = {}
    models, size, rows = candidates(policy, original, data, args, skipped), policy.model.input_size, {}
    for batch in args.batches:
        example = torch.randn(batch, 3, size, size)
        cand, ref = build_forms(models, original, example)
        matrix: dict[str, dict[str, Any]] = {}
        for cn, c in cand.items():
            for rn, r in ref.items():
                res = compare_latency(c, r, example, backend="torch", threads=args.threads, rounds=args.rounds)
                matrix.setdefault(cn, {})[rn] = {"speedup": 1 / res.ratio, "ci": [1 / res.ci_high, 1 / res.ci_low],
                                                 "candidate_ms": res.a.median_ms, "reference_ms": res.b.median_ms,
                                                 "busy": res.busy}
                log.info("%s b%d: candidate %s / original %s: %.2fx [%.2f, %.2f] (%.1f / %.1f ms)%s", policy.model.name,
                         batch, cn, rn, 1 / res.ratio, 1 / res.ci_high, 1 / res.ci_low, res.a.median_ms,
                         res.b.median_ms, " (busy)" if res.busy else "")
        rows[str(batch)] = {"speedup": matrix, "fastest_vs_fastest": fastest_vs_fastest(matrix)}
    return {"batches": rows, "skipped_forms": skipped}


def fastest_vs_fastest(matrix: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The candidate form with the largest worst-case speed-up, against the reference form it is slowest
    against (the original's fastest form)."""
    best = max(matrix, key=lambda c: min(v["speedup"] for v in matrix[c].values()))
    ref = min(matrix[best], key=lambda r: matrix[best][r]["speedup"])
    return {"candidate": best, "reference": ref, **matrix[best][ref]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = []
    for path, policy, original, data in load_recipes(args):
        results.append({"recipe": str(path), **time_recipe(policy, original, data, args)})
    write_results(args, "bench_runtimes.py", argv, engine=args.engine, threads=args.threads, rounds=args.rounds,
                  results=results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
