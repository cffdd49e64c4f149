"""Knowledge distillation: logit KD (Hinton et al.) and feature distillation with adapters.

:class:`DistillLoss` plugs into ``compress.train.fit(extra_loss=...)``. It *replaces* the
cross-entropy loss (``replaces_ce = True``) and returns::

    (1 - alpha) * CE(student, y; label_smoothing)
      + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
      + feature_weight * sum_l MSE(adapter_l(student_l), teacher_l)

The teacher runs once per batch, in eval mode under ``no_grad``; its logits and its features
come from that single forward pass. Student features are captured by forward hooks during the
student's own forward (the training loop has already run it). Where pruning changed a feature
width, a learnable 1x1 conv adapter (student C -> teacher C) bridges it; adapters are created
eagerly from a dry run so :meth:`DistillLoss.parameters` can be handed to the optimizer.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from compress.models import MODELS, get_model, load_checkpoint
from spaces._schema import FieldError
from spaces.policy import DistillSpec, PolicyError

log = logging.getLogger(__name__)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton KD loss: ``T^2 * KL(p_teacher || p_student)`` on temperature-softened logits.

    Averaged over the batch (``reduction="batchmean"``), so it is on the scale of the CE loss.
    """
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


def build_teacher(spec: DistillSpec, original: nn.Module, num_classes: int) -> nn.Module:
    """The teacher named by ``spec``: ``"self"`` = a frozen copy of ``original`` (the uncompressed
    input model); any registry model name with ``teacher_checkpoint`` = that model with those weights.

    The result is in eval mode with ``requires_grad=False`` everywhere.
    """
    if spec.teacher == "self":
        if spec.teacher_checkpoint is not None:
            raise PolicyError([FieldError("distill.teacher_checkpoint", spec.teacher_checkpoint,
                                          "only for a named teacher model (e.g. teacher: resnet56); "
                                          "teacher 'self' is the uncompressed input model")])
        teacher = copy.deepcopy(original)
    else:
        if spec.teacher not in MODELS:
            raise PolicyError([FieldError("distill.teacher", spec.teacher,
                                          "allowed 'self' or a model: " + ", ".join(MODELS.names()))])
        if spec.teacher_checkpoint is None:
            raise PolicyError([FieldError("distill.teacher_checkpoint", None,
                                          f"teacher {spec.teacher!r} needs trained weights: give a "
                                          "checkpoint path (an untrained teacher teaches nothing)")])
        if not Path(spec.teacher_checkpoint).is_file():
            raise PolicyError([FieldError("distill.teacher_checkpoint", spec.teacher_checkpoint,
                                          "no such file")])
        teacher = get_model(spec.teacher, num_classes=num_classes)
        load_checkpoint(teacher, spec.teacher_checkpoint)
    return freeze(teacher)


def freeze(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode and turn off its gradients (in place); return it."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class _Capture:
    """Forward hooks that keep the latest output of named modules."""

    def __init__(self, model: nn.Module, names: tuple[str, ...], role: str):
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            known = [n for n, m in model.named_children()] + [n for n in modules if n.count(".") == 1][:8]
            raise PolicyError([FieldError("distill.feature_layers", missing,
                                          f"no such module in the {role} ({type(model).__name__}); "
                                          f"module names look like: {', '.join(known)}")])
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [modules[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name: str):
        def hook(_module: nn.Module, _inputs, output) -> None:
            if isinstance(output, (tuple, list)):
                output = output[0]
            self.outputs[name] = output

        return hook

    def clear(self) -> None:
        self.outputs.clear()

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.outputs.clear()


def _adapter(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> nn.Module:
    """Identity when shapes agree; a 1x1 conv (or linear) from student to teacher channels otherwise."""
    if student_feat.shape[1:] == teacher_feat.shape[1:]:
        return nn.Identity()
    if student_feat.dim() != teacher_feat.dim() or student_feat.shape[2:] != teacher_feat.shape[2:]:
        raise ValueError(f"feature shapes differ beyond channels: student {tuple(student_feat.shape)} vs "
                         f"teacher {tuple(teacher_feat.shape)}")
    cs, ct = student_feat.shape[1], teacher_feat.shape[1]
    if student_feat.dim() == 4:
        return nn.Conv2d(cs, ct, kernel_size=1, bias=False)
    if student_feat.dim() == 2:
        return nn.Linear(cs, ct, bias=False)
    raise ValueError(f"feature distillation supports 2-D or 4-D features, got {tuple(student_feat.shape)}")


class DistillLoss:
    """Distillation loss for ``fit(extra_loss=...)``: ``loss(inputs, outputs, targets) -> total loss``.

    Args:
        teacher: frozen teacher (see :func:`build_teacher`); put in eval mode, gradients off.
        student: the model being trained (its forward output is ``outputs``); hooks are attached
            to it for feature distillation.
        spec: alpha, temperature, feature_weight, feature_layers.
        label_smoothing: applied to the CE part (from the FinetuneSpec).
        example: an input batch (or ``input_size`` for a random 3xHxW one) for the dry run that
            sizes the feature adapters; needed only when feature distillation is active.

    Use as a context manager or call :meth:`close` to remove the hooks.
    """

    replaces_ce = True
    replace_ce = True  # alias of replaces_ce (docs/ARCHITECTURE.md spells it this way)

    def __init__(self, teacher: nn.Module, student: nn.Module, spec: DistillSpec, *,
                 label_smoothing: float = 0.0, example: torch.Tensor | None = None,
                 input_size: int | None = None):
        if teacher is student:
            raise ValueError("teacher and student must be different modules (deep-copy the original)")
        self.teacher = freeze(teacher)
        self.student = student
        self.spec = spec
        self.label_smoothing = float(label_smoothing)
        self.use_features = spec.feature_weight > 0 and bool(spec.feature_layers)
        self.adapters = nn.ModuleDict()
        self._keys: dict[str, str] = {}
        self._t_cap: _Capture | None = None
        self._s_cap: _Capture | None = None
        self.last: dict[str, float] = {}
        if self.use_features:
            layers = tuple(spec.feature_layers)
            self._t_cap = _Capture(teacher, layers, "teacher")
            self._s_cap = _Capture(student, layers, "student")
            if example is None:
                if input_size is None:
                    raise ValueError("feature distillation needs `example` or `input_size` to size its adapters")
                example = torch.randn(2, 3, input_size, input_size)
            self._build_adapters(example)

    # ----- setup --------------------------------------------------------------------------
    def _build_adapters(self, example: torch.Tensor) -> None:
        device = _device_of(self.student)
        example = example.to(device)
        was_training = self.student.training
        try:
            self.student.eval()
            with torch.no_grad():
                self.student(example)
                self.teacher(example.to(_device_of(self.teacher)))
        finally:
            self.student.train(was_training)
        for i, name in enumerate(self.spec.feature_layers):
            s, t = self._s_cap.outputs.get(name), self._t_cap.outputs.get(name)
            if s is None or t is None:
                who = "student" if s is None else "teacher"
                raise PolicyError([FieldError(f"distill.feature_layers[{i}]", name,
                                              f"module was not called in the {who}'s forward pass "
                                              "(graph-transformed models call leaf modules only)")])
            key = f"f{i}"
            self._keys[name] = key
            self.adapters[key] = _adapter(s, t).to(device)
            if not isinstance(self.adapters[key], nn.Identity):
                log.info("feature KD %s: adapter %d -> %d channels", name, s.shape[1], t.shape[1])
        self._s_cap.clear()
        self._t_cap.clear()

    # ----- public API ----------------------------------------------------------------------
    def parameters(self) -> Iterator[nn.Parameter]:
        """Trainable adapter parameters (give them to the optimizer)."""
        return self.adapters.parameters()

    def to(self, device: str | torch.device) -> DistillLoss:
        self.teacher.to(device)
        self.adapters.to(device)
        return self

    def __call__(self, inputs: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Total loss for one batch; ``outputs`` are the student logits for ``inputs``."""
        spec = self.spec
        self.teacher.eval()  # the loop may have called .train() on everything it saw
        with torch.no_grad():
            t_logits = self.teacher(inputs)
        ce = F.cross_entropy(outputs.float(), targets, label_smoothing=self.label_smoothing)
        total = (1.0 - spec.alpha) * ce
        self.last = {"ce": float(ce.detach())}
        if spec.alpha > 0:
            kd = kd_loss(outputs, t_logits, spec.temperature)
            total = total + spec.alpha * kd
            self.last["kd"] = float(kd.detach())
        if self.use_features:
            feat = self.feature_loss()
            total = total + spec.feature_weight * feat
            self.last["feature"] = float(feat.detach())
        return total

    def feature_loss(self) -> torch.Tensor:
        """Mean over layers of MSE(adapter(student feature), teacher feature) from the last forwards."""
        assert self._s_cap is not None and self._t_cap is not None
        losses = []
        for name, key in self._keys.items():
            s, t = self._s_cap.outputs.get(name), self._t_cap.outputs.get(name)
            if s is None or t is None:
                raise RuntimeError(f"feature {name!r} was not captured; call the student on the batch first")
            losses.append(F.mse_loss(self.adapters[key](s).float(), t.detach().float()))
        self._s_cap.clear()
        self._t_cap.clear()
        return torch.stack(losses).mean()

    def close(self) -> None:
        """Remove all hooks (student and teacher)."""
        for cap in (self._s_cap, self._t_cap):
            if cap is not None:
                cap.close()

    def __enter__(self) -> DistillLoss:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


__all__ = ["DistillLoss", "build_teacher", "freeze", "kd_loss"]
