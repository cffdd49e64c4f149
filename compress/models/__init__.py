"""Model registry: CIFAR ResNets and torchvision ImageNet ResNets.

>>> model = get_model("resnet20", num_classes=10)
>>> model = build_model(ModelSpec(name="resnet18", num_classes=100, small_input=True))
"""

from __future__ import annotations

from torch import nn

from compress.models.checkpoint import CheckpointError, load_checkpoint, load_pretrained
from compress.models.cifar_resnet import CifarResNet, PadShortcut
from compress.models.imagenet_resnet import ImageNetResNet
from compress.registry import Registry
from spaces.policy import MODEL_FAMILIES, ModelSpec

MODELS: Registry = Registry("model")

#: the families' depths, default classes and input size are the Policy's (``spaces.policy.MODEL_FAMILIES``)
CIFAR = MODEL_FAMILIES["cifar"]
IMAGENET = MODEL_FAMILIES["imagenet"]


def _cifar_factory(depth: int):
    def build(num_classes: int = CIFAR.num_classes, shortcut: str | None = None, small_input: bool = False,
              **_: object):
        if small_input:
            raise ValueError(f"resnet{depth}: small_input applies to ImageNet ResNets only")
        return CifarResNet(depth, num_classes=num_classes, shortcut=shortcut or "A")

    build.__doc__ = f"CIFAR ResNet-{depth} (He et al. 2016), 3 stages of 16/32/64 channels, 32x32 input"
    build.default_input_size = CIFAR.input_size  # type: ignore[attr-defined]
    build.default_num_classes = CIFAR.num_classes  # type: ignore[attr-defined]
    return build


def _imagenet_factory(depth: int):
    def build(num_classes: int = IMAGENET.num_classes, shortcut: str | None = None, small_input: bool = False,
              **_: object):
        if shortcut is not None:
            raise ValueError(f"resnet{depth}: shortcut applies to CIFAR ResNets only (torchvision uses 1x1 conv)")
        return ImageNetResNet(depth, num_classes=num_classes, small_input=small_input)

    build.__doc__ = f"torchvision ResNet-{depth}, 224x224 input (small_input=True: 32x32 stem)"
    build.default_input_size = IMAGENET.input_size  # type: ignore[attr-defined]
    build.default_num_classes = IMAGENET.num_classes  # type: ignore[attr-defined]
    return build


for _d in CIFAR.depths:
    MODELS.register(f"resnet{_d}")(_cifar_factory(_d))
for _d in IMAGENET.depths:
    MODELS.register(f"resnet{_d}")(_imagenet_factory(_d))


def default_input_size(name: str) -> int:
    return MODELS.get(name).default_input_size


def default_num_classes(name: str) -> int:
    return MODELS.get(name).default_num_classes


def build_model(spec: ModelSpec) -> nn.Module:
    """Build an untrained model from a policy's :class:`ModelSpec`."""
    return MODELS.get(spec.name)(num_classes=spec.num_classes, shortcut=spec.shortcut, small_input=spec.small_input)


def get_model(name: str, num_classes: int | None = None, **kwargs) -> nn.Module:
    """Build a registered model by name; unknown names list the known ones."""
    factory = MODELS.get(name)
    return factory(num_classes=num_classes or factory.default_num_classes, **kwargs)


def is_cifar(name: str) -> bool:
    return default_input_size(name) == CIFAR.input_size


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of Conv2d and Linear modules in network order (fixed, non-trainable convs excluded)."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not getattr(m, "autocompress_fixed", False):
            out.append(name)
    return out


__all__ = [
    "MODELS", "CheckpointError", "CifarResNet", "ImageNetResNet", "PadShortcut", "build_model",
    "default_input_size", "default_num_classes", "get_model", "is_cifar", "load_checkpoint",
    "load_pretrained", "quantizable_layers",
]
