"""`autocompress finetune`: train a baseline or adapt a checkpoint; report val/test top-1.

Examples::

    autocompress finetune --model resnet20 --dataset digits --epochs 30 --lr 0.05 --out runs/r20-digits
    autocompress finetune --model resnet20 --checkpoint ../shared/weights/cifar10-resnet/resnet20-12fca82f.th \\
        --dataset imagefolder --data-dir ~/.cache/autocompress/cifar10-jpeg75 --epochs 1 --out /tmp/ft20

Writes ``DIR/model.pt`` (weights-only state_dict), ``DIR/config.json`` (the resolved config)
and ``DIR/metrics.json`` (val/test top-1 before and after, training stats).

Compressed models: ``--checkpoint DIR`` pointing at a compressed artifact (``policy.yaml`` +
``model.pt``, from ``autocompress apply``) is loaded with ``compress.artifact.load_compressed``
and fine-tuned as is. ``--recipe RECIPE.yaml`` supplies the fine-tune settings (flags override
them) and, when it prunes or quantizes, the float checkpoint is first compressed with
``compress.apply.apply(..., finetune=False)`` and then fine-tuned here (with its distillation).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search.cli import CLIError
from search.commands._inputs import checkpoint_file, split_accuracy
from spaces.policy import FinetuneSpec, Policy

log = logging.getLogger("autocompress.finetune")

#: CLI flag -> FinetuneSpec field, for overrides
_SPEC_FLAGS = ("lr", "batch_size", "optimizer", "schedule", "warmup_steps", "weight_decay", "momentum",
               "label_smoothing", "grad_clip", "seed")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("finetune", help="train a baseline or fine-tune a checkpoint on a dataset",
                       description="Train a model from scratch or fine-tune a checkpoint; report val and test "
                                   "top-1; write model.pt, config.json and metrics.json to --out.")
    p.add_argument("--model", default=None, help="model name (see `autocompress models`); default: the recipe's")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", default=None,
                     help="start from these weights (state_dict file, a finetune --out dir, or a compressed "
                          "artifact dir with policy.yaml)")
    src.add_argument("--weights", default=None, help="torchvision weights for ImageNet ResNets, e.g. IMAGENET1K_V1")
    p.add_argument("--dataset", default="digits", help="dataset name (see `autocompress datasets`; default digits)")
    p.add_argument("--data-dir", default=None, help="dataset root (where the dataset needs one)")
    p.add_argument("--download", action="store_true", help="download the dataset if missing (needs network)")
    p.add_argument("--normalization", default=None,
                   help="imagenet | cifar | the dataset's own (default: the dataset's; CIFAR/imagefolder use imagenet)")
    p.add_argument("--input-size", type=int, default=None, help="resize images to this size (default: native)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="held-out fraction of train used as val when the dataset has no val split")
    p.add_argument("--recipe", default=None, help="recipe / policy file: fine-tune settings (and compression)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=float, default=None, help="training epochs (fractions allowed)")
    budget.add_argument("--steps", type=int, default=None, help="training steps (optimizer updates)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 0.01)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default 128)")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default=None, help="optimizer (default sgd)")
    p.add_argument("--schedule", choices=("cosine", "onecycle", "constant"), default=None,
                   help="learning-rate schedule (default cosine)")
    p.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up steps (default 0)")
    p.add_argument("--weight-decay", type=float, default=None, help="weight decay (default 5e-4; not on BN/bias)")
    p.add_argument("--momentum", type=float, default=None, help="SGD momentum (default 0.9)")
    p.add_argument("--label-smoothing", type=float, default=None, help="label smoothing (default 0)")
    p.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm (default off)")
    p.add_argument("--seed", type=int, default=None, help="seed for weights, data order and augmentation")
    p.add_argument("--device", default="cpu", help="training device: cpu, cuda, cuda:N, mps (default cpu)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (default 0: in-process)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op CPU threads (default: torch's; 1 is often faster on a busy machine)")
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate at most this many images per split")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)
    return p


def resolve_spec(args: argparse.Namespace, base=None):
    """The FinetuneSpec: the recipe's (or the defaults), overridden by the given flags."""
    spec = base if base is not None else FinetuneSpec()
    changes: dict[str, Any] = {f: getattr(args, f) for f in _SPEC_FLAGS if getattr(args, f, None) is not None}
    if args.epochs is not None:
        changes.update(epochs=args.epochs, steps=None)
    if args.steps is not None:
        changes.update(steps=args.steps)
    return dataclasses.replace(spec, **changes)


def _is_artifact_dir(path: Path) -> bool:
    return path.is_dir() and any((path / n).is_file() for n in ("policy.yaml", "policy.json"))


def _load_artifact(path: Path, calib_loader):
    """(policy, trainable compressed model) from an ``autocompress apply`` output directory."""
    try:
        from compress.artifact import load_compressed
    except ImportError:
        raise CLIError(f"--checkpoint {path}: a compressed artifact directory, but compress.artifact "
                       "is not available in this installation") from None
    try:
        from compress.apply import rebuild_compressed
    except ImportError:
        rebuild_fn = None
    else:
        def rebuild_fn(policy, state):
            return rebuild_compressed(policy, state, calib_loader=calib_loader, source=str(path / "model.pt"))
    return load_compressed(path, rebuild_fn=rebuild_fn, calib_loader=calib_loader)


def _check_args(args: argparse.Namespace) -> None:
    from search.checks import check_data_dir, check_device, check_out_dir

    check_device(args.device)
    if not args.download:  # --download creates it
        check_data_dir(args.data_dir)
    check_out_dir(args.out)
    if args.num_workers < 0:
        raise CLIError(f"--num-workers {args.num_workers}: must be >= 0")
    if args.threads is not None:
        if args.threads < 1:
            raise CLIError(f"--threads {args.threads}: must be >= 1")
        torch.set_num_threads(args.threads)


def _recipe(args: argparse.Namespace):
    """(policy or None, compressed artifact dir or None, model name): from --recipe, a compressed
    --checkpoint directory and --model."""
    policy = Policy.load(args.recipe) if args.recipe else None
    artifact = Path(args.checkpoint).expanduser() if args.checkpoint else None
    if artifact is not None and not _is_artifact_dir(artifact):
        artifact = None
    if artifact is not None and policy is None:
        policy = Policy.load(next(p for p in (artifact / "policy.yaml", artifact / "policy.json") if p.is_file()))
    name = args.model or (policy.model.name if policy is not None else None)
    if name is None:
        raise CLIError("give --model NAME (see `autocompress models`) or --recipe RECIPE.yaml")
    if policy is not None and name != policy.model.name:
        raise CLIError(f"--model {name}: the recipe {args.recipe or artifact} is for {policy.model.name!r}")
    return policy, artifact, name


def _start_model(args: argparse.Namespace, name: str, data, artifact: Path | None):
    """(model, compressed artifact policy or None, where the weights come from)."""
    from compress.models import get_model, load_checkpoint, load_pretrained

    if artifact is not None:
        calib = data.loader("calib", 64, shuffle=False, limit=512)
        art_policy, model = _load_artifact(artifact, calib)
        return model, art_policy, f"compressed artifact {artifact}"
    model = get_model(name, num_classes=data.num_classes)
    if args.checkpoint:
        ckpt = checkpoint_file(args.checkpoint)
        load_checkpoint(model, ckpt)
        return model, None, str(ckpt)
    if args.weights:
        load_pretrained(model, name, args.weights)
        return model, None, f"torchvision {args.weights}"
    return model, None, "random init"


def _train(args: argparse.Namespace, model: nn.Module, policy, compressed: bool, data, spec, name: str):
    """Fine-tune (compressing first when the recipe says so); returns (model, policy, TrainResult)."""
    from compress.train import fit

    extra_loss = None
    if policy is not None and not compressed and (policy.prune.active or policy.quant.active):
        model, extra_loss, policy = _compress_for_finetune(policy, model, data, args.device)
    elif policy is not None and policy.distill.active and (not compressed or policy.distill.teacher != "self"):
        # teacher "self" is the uncompressed input model: for an artifact that model is gone
        extra_loss = _distill_loss(policy, model, None, args.device)
    loader = data.loader("train", spec.batch_size, seed=spec.seed, num_workers=args.num_workers)
    try:
        result = fit(model, loader, spec, device=args.device, extra_loss=extra_loss, progress=not args.no_progress,
                     desc=f"finetune {name}")
    finally:
        if extra_loss is not None and callable(getattr(extra_loss, "close", None)):
            extra_loss.close()
    return model.cpu().eval(), policy, result


def run(args: argparse.Namespace) -> int:
    from search.checks import output_dir

    _check_args(args)
    with output_dir(args.out, create=False, keep=lambda d: (d / "metrics.json").is_file()):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Load, fine-tune, evaluate and save (``run`` after the checks)."""
    from compress.data import get_dataset
    from compress.train import save_checkpoint

    t_start = time.perf_counter()
    policy, artifact, name = _recipe(args)
    spec = resolve_spec(args, policy.finetune if policy is not None else None)
    data = get_dataset(args.dataset, args.data_dir, download=args.download, normalization=args.normalization,
                       val_fraction=args.val_fraction, seed=spec.seed, input_size=args.input_size)
    log.info("dataset %s: %d train / %d val / %d test images, %d classes, %dx%d, normalization %s",
             data.name, len(data.train), len(data.val), len(data.test), data.num_classes, data.input_size,
             data.input_size, data.normalization)
    model, art_policy, source = _start_model(args, name, data, artifact)
    if art_policy is not None:
        policy = art_policy.replace(finetune=spec)  # the artifact's structure, the resolved schedule
    log.info("model %s from %s", name, source)

    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    before = split_accuracy(model, data, args.eval_limit, "before", args.device) if source != "random init" else None
    model, policy, result = _train(args, model, policy, art_policy is not None, data, spec, name)
    after = split_accuracy(model, data, args.eval_limit, "after")

    config = {
        "model": name, "num_classes": data.num_classes, "source": source, "checkpoint": args.checkpoint,
        "weights": args.weights, "recipe": args.recipe, "dataset": data.describe(), "data_dir": args.data_dir,
        "finetune": dataclasses.asdict(spec), "device": args.device, "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if art_policy is not None or (policy is not None and (policy.prune.active or policy.quant.active)):
        _save_compressed_or_plain(out, policy, model, config)
    else:
        save_checkpoint(out / "model.pt", model, config)
    metrics = {
        "model": name, "dataset": data.name, "val": after["val"], "test": after["test"],
        "before": before, "train": result.to_dict(), "seconds": round(time.perf_counter() - t_start, 2),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    line = (f"{name} on {data.name}: val top-1 {after['val']['top1']:.2f}%, test top-1 {after['test']['top1']:.2f}%"
            + (f" (before: val {before['val']['top1']:.2f}%, test {before['test']['top1']:.2f}%)" if before else "")
            + f"; {result.steps} steps in {result.seconds:.0f}s ({result.images_per_s:.0f} img/s)")
    log.info("%s; wrote %s", line, out)
    print(line)
    return 0


def _distill_loss(policy, student: nn.Module, original: nn.Module | None, device: str):
    from compress.distill import DistillLoss, build_teacher

    teacher = build_teacher(policy.distill, original if original is not None else student,
                            policy.model.num_classes).to(device)
    return DistillLoss(teacher, student.to(device), policy.distill,
                       label_smoothing=policy.finetune.label_smoothing, input_size=policy.model.input_size)


def _compress_for_finetune(policy, model: nn.Module, data, device: str):
    """Prune/fake-quantize ``model`` per ``policy`` without fine-tuning.

    Returns (trainable compressed model, its distillation loss or None, the policy with the
    exact kept channel indices recorded).
    """
    from compress.apply import apply

    result = apply(policy, model, data=data, finetune=False, device=device, progress=False)
    work = result.model
    extra = _distill_loss(result.policy, work, model, device) if result.policy.distill.active else None
    return work, extra, result.policy


def _save_compressed_or_plain(out: Path, policy, model: nn.Module, config: dict) -> None:
    from compress.train import save_checkpoint

    try:
        from compress.artifact import save_compressed
    except ImportError:
        log.warning("compress.artifact is not available: saving a plain state_dict of the compressed model")
        save_checkpoint(out / "model.pt", model, config)
        return
    save_compressed(out, policy, model)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
