"""Build the uniform recipes shipped in ``spaces/recipes/`` (and used by the operator benchmark).

Group names come from :func:`compress.prune.list_groups` on the real model, never guessed.
Regenerate the shipped files with ``python -m compress._apply_recipes``.
"""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path

from compress.models import default_input_size, default_num_classes, get_model
from compress.prune import list_groups
from spaces.policy import DistillSpec, FinetuneSpec, LayerBits, ModelSpec, Policy, PruneSpec, QuantSpec

RECIPES_DIR = Path(__file__).resolve().parents[1] / "spaces" / "recipes"

INT8_X86 = QuantSpec(backend="x86", default=LayerBits(w=8, a=8))


@cache
def block_groups(model_name: str) -> tuple[str, ...]:
    """Names of the block-inner prune groups (``layerX.Y.conv1``) of a registry model."""
    return tuple(g.name for g in list_groups(get_model(model_name)) if g.kind == "block")


def uniform_block_inner(model_name: str, ratio: float, *, criterion: str = "l1",
                        quant: QuantSpec = QuantSpec(), distill: DistillSpec = DistillSpec(),
                        finetune: FinetuneSpec = FinetuneSpec(), num_classes: int | None = None,
                        input_size: int | None = None, provenance: dict | None = None) -> Policy:
    """A policy pruning every block-inner group of ``model_name`` by ``ratio``."""
    model = ModelSpec(name=model_name, num_classes=num_classes or default_num_classes(model_name),
                      input_size=input_size or default_input_size(model_name))
    ratios = {g: float(ratio) for g in block_groups(model_name)} if ratio > 0 else {}
    return Policy(model=model, prune=PruneSpec(criterion=criterion, ratios=ratios), quant=quant,
                  distill=distill, finetune=finetune, provenance=dict(provenance or {}))


def write_recipe(policy: Policy, path: Path, header: str) -> Path:
    """Save ``policy`` (``Policy.save``) and prepend ``header`` as YAML comments."""
    policy.save(path)
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.strip().splitlines())
    path.write_text(comment + path.read_text())
    return path


#: fine-tune used by the shipped recipes (1 epoch, SGD + cosine, batch 128)
ONE_EPOCH = FinetuneSpec(epochs=1.0, optimizer="sgd", lr=0.02, schedule="cosine", batch_size=128,
                         weight_decay=5e-4)


def shipped() -> dict[str, tuple[Policy, str]]:
    """File name -> (policy, header) of every recipe shipped in ``spaces/recipes``."""
    src = {"source": "compress._apply_recipes"}
    return {
        "resnet56-prune50.yaml": (
            uniform_block_inner("resnet56", 0.5, finetune=ONE_EPOCH, provenance=src),
            "ResNet-56 (CIFAR-10): uniform 50% block-inner pruning (every layerX.Y.conv1 group), L1 criterion.\n"
            "Float model; fine-tune 1 epoch SGD cosine. Example:\n"
            "  autocompress apply spaces/recipes/resnet56-prune50.yaml --dataset imagefolder \\\n"
            "      --data-dir ~/.cache/autocompress/cifar10-jpeg75 \\\n"
            "      --checkpoint ../shared/weights/cifar10-resnet/resnet56-4bfd9763.th --out runs/r56-p50"),
        "resnet56-prune50-int8.yaml": (
            uniform_block_inner("resnet56", 0.5, quant=INT8_X86, finetune=ONE_EPOCH, provenance=src),
            "ResNet-56 (CIFAR-10): uniform 50% block-inner pruning + INT8 (w8/a8) for every layer on x86.\n"
            "The fine-tune is quantization-aware (fake-quant); the deploy model is a real FX INT8 model."),
        "resnet20-prune30-kd.yaml": (
            uniform_block_inner("resnet20", 0.3,
                                distill=DistillSpec(teacher="self", alpha=0.2, temperature=4.0, teacher_bn_recal=40),
                                finetune=dataclasses.replace(ONE_EPOCH, lr=0.03), provenance=src),
            "ResNet-20 (CIFAR-10): uniform 30% block-inner pruning, L1 criterion, knowledge distillation\n"
            "from the unpruned input model (alpha 0.2, T 4; the teacher's BN statistics re-estimated on 40\n"
            "train batches first, since the shared weights were trained on PNG, not JPEG, CIFAR-10),\n"
            "1 epoch SGD lr 0.03 cosine, batch 128. Measured: 85.18% on the CIFAR-10 JPEG test split."),
    }


def main() -> None:
    for name, (policy, header) in shipped().items():
        write_recipe(policy, RECIPES_DIR / name, header)


if __name__ == "__main__":
    main()
