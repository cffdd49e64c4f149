"""Apply a Policy to a model: validate -> prune -> BN recalibration -> QAT prep -> fine-tune
(with distillation) -> convert for the target. One order, in one place, no I/O.

>>> out = apply(Policy.load("spaces/recipes/resnet20-prune30-kd.yaml"), model, data=bundle)
>>> out.policy.prune.kept     # exact kept channel indices per group (for a lossless reload)
>>> out.deploy                # INT8 (x86) or float model for latency / export
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from compress._timing import phase
from compress.distill import DistillLoss, build_teacher, freeze
from compress.models import CifarResNet, ImageNetResNet, build_model, quantizable_layers
from compress.models.checkpoint import load_state_dict_checked
from compress.prune import block_errors, convert_option_a, list_groups, prune, rebuild
from compress.quantize import check_bits, convert, fake_quantize
from compress.quantize._engine import resolve_engine
from compress.train import bn_recalibrate, fit
from spaces._schema import FieldError
from spaces.policy import Policy, PolicyError

log = logging.getLogger(__name__)

#: calibration defaults: batches of this size from the bundle's ``calib`` split
CALIB_BATCH_SIZE = 64
CALIB_BATCHES = 8


@dataclass
class Compressed:
    """The result of :func:`apply`.

    ``model`` is the trainable model (float, or fake-quantized for QAT) that
    ``compress.artifact.save_compressed`` stores; ``deploy`` is the converted model used for
    latency and export (INT8 for x86 quantization, float otherwise).
    """

    policy: Policy
    model: nn.Module
    deploy: nn.Module
    precision: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    train_result: Any = None
    timings: dict[str, float] = field(default_factory=dict)
    #: the PyTorch quantized engine ``deploy``'s INT8 weights are packed for (None: no x86 INT8 layer)
    int8_engine: str | None = None

    def scored(self, layers: Sequence[str]) -> tuple[nn.Module, str]:
        """The model whose accuracy to report, and which one it is: ``deploy`` when it runs exactly
        the policy's precision on these quantizable ``layers`` (float, x86 INT8 with 8-bit
        activations, or the ``tensorrt`` Q/DQ model, which simulates the engine bit for bit),
        else ``model``, the fake-quant simulation (sub-8-bit activations on x86, the ``cuda``
        target's quantized layers)."""
        q = self.policy.quant
        if not q.active or q.backend == "tensorrt" or (
                q.backend == "x86" and all(q.bits_for(layer).a in (8, 16, 32) for layer in layers)):
            return self.deploy, "deploy"
        return self.model, "fake-quant simulation"


def model_name_of(model: nn.Module) -> str | None:
    """Registry name of a model built by ``compress.models`` (``resnet20``, ``resnet18``...), else None."""
    if isinstance(model, (CifarResNet, ImageNetResNet)):
        return f"resnet{model.depth}"
    return getattr(model, "autocompress_name", None)


def num_classes_of(model: nn.Module) -> int | None:
    """Number of outputs of the classifier (last Linear layer), or None."""
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last.out_features if last is not None else None


def validate(policy: Policy, model: nn.Module) -> None:
    """Raise :class:`PolicyError` naming every field of ``policy`` that does not fit ``model``.

    Checks the model name and class count, dropped blocks, prune group names and ratios, quantizable layer
    names, distillation feature layers, and the backend's supported bit-widths.
    """
    errors: list[FieldError] = []
    n = num_classes_of(model)
    if n is not None and n != policy.model.num_classes:
        errors.append(FieldError("model.num_classes", policy.model.num_classes,
                                 f"the model has {n} output classes"))
    try:
        groups = {g.name: g.channels for g in list_groups(model)}
        policy.check_against(groups, quantizable_layers(model), model_name=model_name_of(model))
    except PolicyError as exc:
        errors.extend(exc.errors)
    errors.extend(block_errors(policy.prune.drop, model))
    errors.extend(_backend_errors(policy, model))
    if errors:
        raise PolicyError(errors)


def _backend_errors(policy: Policy, model: nn.Module) -> list[FieldError]:
    """Bit-widths the target backend cannot run (``compress.quantize.check_bits``)."""
    if not policy.quant.active or policy.quant.backend == "none":  # 'none' + bits: check_against says so
        return []

    try:
        check_bits(policy.quant)
    except PolicyError as exc:
        return list(exc.errors)
    return []


def apply(policy: Policy, model: nn.Module, *, data: Any = None, teacher: nn.Module | None = None,
          finetune: bool = True, device: str = "cpu", progress: bool = True,
          calib_batches: int = CALIB_BATCHES, bn_recal_batches: int = 20, engine: str = "x86") -> Compressed:
    """Compress ``model`` as ``policy`` says; ``model`` itself is never modified.

    Order: validate -> prune (blocks of ``prune.drop`` removed, then channels; ``kept`` recorded
    into the returned policy; a policy that already has ``kept`` is replayed exactly) -> BN
    recalibration on calib batches (when pruned) -> fake-quantize (QAT) when quantization is
    active -> fine-tune with ``policy.finetune`` (distillation from ``teacher``, default the
    uncompressed input, when ``policy.distill`` is active; skipped with ``finetune=False``) ->
    convert for ``policy.quant.backend``.

    Args:
        data: a ``compress.data.DataBundle``; needed for fine-tuning, calibration (quantization,
            BN recalibration) and Taylor pruning.
        teacher: overrides the teacher built from ``policy.distill``.
        calib_batches / bn_recal_batches: batches of the ``calib`` split for quantization
            calibration / BN recalibration.
        engine: x86 INT8 only, the PyTorch quantized engine to pack for (``x86``, ``fbgemm`` or
            ``onednn``; ``compress.quantize._engine``); an unknown one fails before any work.
    """
    original = model
    resolve_engine(engine)
    validate(policy, original)
    _check_data_needs(policy, data, finetune)
    timings: dict[str, float] = {}
    notes: list[str] = []
    input_size = policy.model.input_size
    work = copy.deepcopy(original).cpu()

    # 1. prune -------------------------------------------------------------------------------
    if policy.prune.active:
        with phase(timings, "prune"):
            if policy.prune.kept:
                notes.append("pruning replayed from the recorded kept indices")
            taylor = policy.prune.criterion == "taylor" and not policy.prune.kept
            work, kept = prune(work, policy.prune, input_size=input_size,
                               data=_batches(data, "calib", calib_batches) if taylor else None)
            policy = policy.replace(prune=dataclasses.replace(
                policy.prune, kept={k: tuple(int(i) for i in v) for k, v in kept.items()}))
        # 2. BN recalibration: cheap recovery of the statistics the removed channels disturbed
        if data is not None and bn_recal_batches > 0:
            with phase(timings, "recalibrate"):
                bn_recalibrate(work, _recal_batches(data, bn_recal_batches), bn_recal_batches, device=device)

    # 3. QAT preparation ---------------------------------------------------------------------
    if policy.quant.active:
        with phase(timings, "quantize"):
            work = fake_quantize(work, policy.quant, _batches(data, "calib", calib_batches))

    # 4. fine-tune (KD) ---------------------------------------------------------------------------
    train_result = None
    if finetune:
        with phase(timings, "finetune"):
            train_result = _finetune(policy, original, work, data, teacher, device, progress)
    work = work.cpu().eval()

    # 5. convert for the target ------------------------------------------------------------------
    with phase(timings, "convert"):
        example = next(iter(_batches(data, "calib", 1)))[0][:1] if data is not None else \
            torch.randn(1, 3, input_size, input_size)
        calib = _batches(data, "calib", calib_batches) if data is not None else None
        result = convert(work, policy.quant, calib, example, engine=engine)
    notes.extend(n for n in result.notes if n)
    return Compressed(policy=policy, model=work, deploy=result.model, precision=dict(result.precision),
                      notes=notes, train_result=train_result, timings=timings, int8_engine=result.int8_engine)


def _check_data_needs(policy: Policy, data: Any, finetune: bool) -> None:
    if data is not None:
        return
    needs = []
    if finetune:
        needs.append("fine-tuning (pass finetune=False to skip it)")
    if policy.quant.active:
        needs.append("quantization calibration")
    if policy.prune.active and policy.prune.criterion == "taylor" and not policy.prune.kept:
        needs.append("Taylor pruning")
    if needs:
        raise ValueError("apply: data=None, but " + " and ".join(needs) + " need a DataBundle")


def _recal_batches(data: Any, n: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches for BN recalibration: the calib split when it holds ``n`` batches, else the train
    split (seeded shuffle). BN statistics need thousands of images: on the shared ResNet-20 and
    CIFAR-10 JPEG, 512 images cost 1.2 points of top-1 while 5k images gained 2.6."""
    calib = data.split("calib") if hasattr(data, "split") else None
    split = "calib" if calib is not None and len(calib) >= n * CALIB_BATCH_SIZE else "train"
    loader = data.loader(split, CALIB_BATCH_SIZE, shuffle=split == "train", seed=0)
    return (b for _, b in zip(range(n), loader))


def calibration_batches(data: Any, n: int = CALIB_BATCHES) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` batches of the ``calib`` split that :func:`apply` calibrates on (a list)."""
    return _batches(data, "calib", n)


def _batches(data: Any, split: str, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` batches of a split (deterministic), materialised so they can be reused."""
    if data is None:
        return []
    out = []
    for i, batch in enumerate(data.loader(split, CALIB_BATCH_SIZE, shuffle=False)):
        if i >= n:
            break
        out.append(batch)
    return out


def _finetune(policy: Policy, original: nn.Module, work: nn.Module, data: Any, teacher: nn.Module | None,
              device: str, progress: bool):
    spec = policy.finetune
    loader = data.loader("train", spec.batch_size, shuffle=True, seed=spec.seed)
    kd = None
    if policy.distill.active:
        t = freeze(copy.deepcopy(teacher)) if teacher is not None else \
            build_teacher(policy.distill, original, policy.model.num_classes)
        t.to(device)
        if policy.distill.teacher_bn_recal > 0:
            # re-estimate the teacher's BN statistics on the target data (e.g. weights trained on PNG
            # CIFAR-10 distilling on a JPEG copy): cheap domain adaptation, weights untouched
            bn_recalibrate(t, data.loader("train", spec.batch_size, shuffle=True, seed=spec.seed + 1),
                           policy.distill.teacher_bn_recal, device=device)
            freeze(t)
        work.to(device)
        kd = DistillLoss(t, work, policy.distill, label_smoothing=spec.label_smoothing,
                         input_size=policy.model.input_size)
    try:
        return fit(work, loader, spec, device=device, extra_loss=kd, progress=progress, desc="finetune")
    finally:
        if kd is not None:
            kd.close()


def rebuild_compressed(policy: Policy, state_dict: Mapping[str, torch.Tensor], *,
                       calib_loader: Iterable | None = None, calib_batches: int = 8,
                       source: str = "<state_dict>") -> nn.Module:
    """Re-create the trainable model that :func:`apply` returned, from its policy and weights.

    Builds ``policy.model``, drops ``policy.prune.drop``, replays ``policy.prune.kept`` (exact channel
    indices), wraps the quantized layers in fake-quant modules when ``policy.quant`` is active, and loads
    ``state_dict`` strictly (a mismatch lists keys and shapes). Fake-quant activation ranges
    are not part of the state_dict: pass ``calib_loader`` to calibrate them (``convert``
    re-calibrates on its own). No pickled modules are involved.
    """
    if any(r > 0 for r in policy.prune.ratios.values()) and not policy.prune.kept:
        raise PolicyError([FieldError("prune.kept", {}, "a pruned model's policy must record the kept "
                                      "channel indices (the policy returned by apply has them)")], source)
    model = build_model(policy.model)
    # pruned models (and artifacts, which save_compressed writes option-A converted) hold the
    # converted structure; an unpruned apply() result may still have its padding shortcuts
    converted_keys = set(convert_option_a(model).state_dict()) - set(model.state_dict())
    if policy.prune.kept or policy.prune.drop or converted_keys & set(state_dict):
        model = rebuild(model, policy.prune.kept, input_size=policy.model.input_size, drop=policy.prune.drop)
    # fake-quant layers keep the float layers' state_dict keys: load first, then calibrate
    load_state_dict_checked(model, state_dict, source=source)
    if policy.quant.active:
        model = fake_quantize(model, policy.quant, calib_loader, calib_batches=calib_batches)
    return model.eval()


__all__ = ["Compressed", "apply", "calibration_batches", "model_name_of", "num_classes_of", "rebuild_compressed",
           "validate"]
