"""The training loop: ``fit(model, loader, FinetuneSpec)``."""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from compress.train._errors import DivergenceError, TrainingError
from compress.train._schedule import lr_factor
from spaces.policy import FinetuneSpec

log = logging.getLogger(__name__)

ExtraLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], "torch.Tensor | None"]
#: on_step(step, loss, lr) is called after every optimizer step (1-based step); returning True stops.
OnStep = Callable[[int, float, float], "bool | None"]

LOSS_WINDOW = 50


@dataclass
class TrainResult:
    """What a ``fit`` call did. ``final_loss`` is the mean loss over the last 50 steps."""

    steps: int
    epochs: float
    final_loss: float
    images_per_s: float
    seconds: float
    initial_loss: float = float("nan")
    final_lr: float = 0.0
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def param_groups(model: nn.Module, extra: Iterable[nn.Parameter], weight_decay: float) -> list[dict]:
    """Two groups: weights (ndim > 1) decay; BN/bias/scalars (ndim <= 1) do not. Frozen params skipped."""
    seen: set[int] = set()
    decay, no_decay = [], []
    for p in list(model.parameters()) + list(extra):
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(groups: list[dict], spec: FinetuneSpec) -> torch.optim.Optimizer:
    if spec.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum,
                               nesterov=spec.nesterov and spec.momentum > 0)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=spec.lr)
    raise TrainingError(f"optimizer = {spec.optimizer!r}: allowed sgd, adamw")


def total_steps(loader: Any, spec: FinetuneSpec) -> tuple[int, int | None]:
    """(steps to run, batches per epoch or None). ``spec.steps`` wins over ``spec.epochs``."""
    try:
        per_epoch: int | None = len(loader)
    except TypeError:
        per_epoch = None
    if per_epoch == 0:
        raise TrainingError("the training loader yields no batches (dataset smaller than one batch with "
                            "drop_last, or empty)")
    if spec.steps is not None:
        return int(spec.steps), per_epoch
    if per_epoch is None:
        raise TrainingError("the training loader has no length; give the budget in steps")
    return max(1, math.ceil(float(spec.epochs) * per_epoch)), per_epoch  # type: ignore[arg-type]


def _reseed_loader(loader: Any, seed: int) -> None:
    gen = getattr(loader, "generator", None)
    if isinstance(gen, torch.Generator):
        gen.manual_seed(seed)
    sampler_gen = getattr(getattr(loader, "sampler", None), "generator", None)
    if isinstance(sampler_gen, torch.Generator) and sampler_gen is not gen:
        sampler_gen.manual_seed(seed)


@dataclass
class _Stepper:
    """One optimizer step of :func:`fit` (built once by :func:`_stepper`)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    extra_loss: ExtraLoss | None
    replaces_ce: bool
    params: list[nn.Parameter]
    device: torch.device
    use_amp: bool
    channels_last: bool
    grad_clip: float | None

    def __call__(self, inputs: torch.Tensor, targets: Any, lr: float, step: int) -> tuple[float, int]:
        """Train on one batch at learning rate ``lr``; returns (loss, images)."""
        inputs = inputs.to(self.device, non_blocking=True)
        targets = torch.as_tensor(targets).to(self.device, non_blocking=True)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=self.use_amp):
            outputs = self.model(inputs)
            loss = _loss(self.criterion, self.extra_loss, self.replaces_ce, inputs, outputs, targets)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise DivergenceError(step, value)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return value, int(targets.shape[0])


def _stepper(model: nn.Module, spec: FinetuneSpec, device: torch.device, extra_loss: ExtraLoss | None) -> _Stepper:
    """Move the model (and the extra loss) to ``device``; build the optimizer, scaler and loss."""
    cuda = device.type == "cuda"
    model.to(device)
    channels_last = cuda and spec.channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if extra_loss is not None and callable(getattr(extra_loss, "to", None)):
        extra_loss.to(device)
    extra_params = list(extra_loss.parameters()) if callable(getattr(extra_loss, "parameters", None)) else []
    groups = param_groups(model, extra_params, spec.weight_decay)
    if not groups:
        raise TrainingError("the model has no trainable parameters")
    use_amp = cuda and spec.amp
    return _Stepper(
        model=model, optimizer=build_optimizer(groups, spec), scaler=torch.amp.GradScaler("cuda", enabled=use_amp),
        criterion=nn.CrossEntropyLoss(label_smoothing=spec.label_smoothing), extra_loss=extra_loss,
        replaces_ce=bool(getattr(extra_loss, "replaces_ce", False) or getattr(extra_loss, "replace_ce", False)),
        params=[p for g in groups for p in g["params"]], device=device, use_amp=use_amp,
        channels_last=channels_last, grad_clip=spec.grad_clip)


@dataclass
class _Tally:
    """Steps, images and losses so far (the last :data:`LOSS_WINDOW` and the first ten)."""

    window: deque[float] = field(default_factory=lambda: deque(maxlen=LOSS_WINDOW))
    first: list[float] = field(default_factory=list)
    steps: int = 0
    images: int = 0

    def add(self, loss: float, images: int) -> None:
        self.steps += 1
        self.images += images
        self.window.append(loss)
        if len(self.first) < 10:
            self.first.append(loss)


def fit(model: nn.Module, train_loader: Iterable, spec: FinetuneSpec, *, device: str | torch.device = "cpu",
        extra_loss: ExtraLoss | None = None, progress: bool = True, desc: str = "finetune",
        on_step: OnStep | None = None) -> TrainResult:
    """Train ``model`` **in place** on ``train_loader`` following ``spec``; return a :class:`TrainResult`.

    * Optimizer SGD (momentum, Nesterov) or AdamW; weight decay on weights only (not on BN/bias).
    * Schedule ``cosine`` / ``onecycle`` / ``constant`` with linear warm-up (see ``lr_factor``),
      updated every step. Budget: ``spec.steps`` if set, else ``ceil(epochs * len(loader))``
      (fractional epochs allowed); the loader is re-iterated as needed.
    * Label smoothing, gradient clipping (global norm). AMP (fp16 + GradScaler) and
      channels_last only on CUDA.
    * ``spec.seed`` seeds torch and the loader's generator: runs on CPU are deterministic.
    * ``extra_loss(inputs, outputs, targets)`` is added to the cross-entropy; if it has
      ``replaces_ce = True`` (or ``replace_ce``) its return value is the whole loss. If it has
      ``parameters()`` those are optimized too (e.g. distillation adapters); if it has ``to()``
      it is moved to ``device``.
    * A NaN/inf loss raises :class:`DivergenceError` (with ``step`` and ``loss``).
    * ``on_step(step, loss, lr)`` runs after each step; returning True stops training early.

    The model is left in eval mode on ``device``.
    """
    device = torch.device(device)
    torch.manual_seed(spec.seed)
    _reseed_loader(train_loader, spec.seed)
    total, per_epoch = total_steps(train_loader, spec)
    step_on = _stepper(model, spec, device, extra_loss)
    model.train()
    tally = _Tally()
    lr, stopped = spec.lr, False
    bar = tqdm(total=total, desc=desc, unit="step", disable=not progress, leave=False, mininterval=0.5)
    t0 = time.perf_counter()
    try:
        while tally.steps < total and not stopped:
            got_batch = False
            for inputs, targets in train_loader:
                got_batch = True
                lr = spec.lr * lr_factor(spec.schedule, tally.steps, total, spec.warmup_steps)
                value, n = step_on(inputs, targets, lr, tally.steps)
                tally.add(value, n)
                if progress:
                    _show(bar, tally, lr, total, t0)
                if on_step is not None and on_step(tally.steps, value, lr):
                    stopped = True
                    break
                if tally.steps >= total:
                    break
            if not got_batch:
                raise TrainingError("the training loader yielded no batches")
    finally:
        bar.close()
        model.eval()
    seconds = time.perf_counter() - t0
    result = TrainResult(
        steps=tally.steps, epochs=(tally.steps / per_epoch) if per_epoch else float("nan"),
        final_loss=sum(tally.window) / len(tally.window), images_per_s=tally.images / max(seconds, 1e-9),
        seconds=seconds, initial_loss=sum(tally.first) / len(tally.first), final_lr=lr, stopped_early=stopped)
    log.info("%s: %d steps (%.2f epochs) in %.1fs, %.0f img/s, loss %.4f -> %.4f", desc, result.steps,
             result.epochs, seconds, result.images_per_s, result.initial_loss, result.final_loss)
    return result


def _show(bar: tqdm, tally: _Tally, lr: float, total: int, t0: float) -> None:
    bar.update(1)
    if tally.steps % 10 == 0 or tally.steps == total:
        elapsed = max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix(loss=f"{sum(tally.window) / len(tally.window):.3f}", lr=f"{lr:.3g}",
                        img_s=f"{tally.images / elapsed:.0f}", refresh=False)


def _loss(criterion: nn.Module, extra_loss: ExtraLoss | None, replaces_ce: bool, inputs: torch.Tensor,
          outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if extra_loss is None:
        return criterion(outputs, targets)
    extra = extra_loss(inputs, outputs, targets)
    if replaces_ce:
        if extra is None:
            raise TrainingError("extra_loss has replaces_ce=True but returned None")
        return extra
    ce = criterion(outputs, targets)
    return ce if extra is None else ce + extra
