"""Option-A (zero-padding) shortcuts as exactly equivalent fixed 1x1 strided convolutions.

Channel pruning tools trace tensors through ``F.pad`` without coupling the padded channel
range to the residual channels, so pruning an option-A ResNet silently misaligns the
shortcut. A 1x1 stride-``s`` convolution whose weight places input channel ``i`` at output
channel ``i + pad`` computes the very same tensor, and its rows/columns are sliced by the
pruner like any other conv, which keeps kept inputs mapped to kept outputs.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from compress.models import PadShortcut


def fixed_shortcut_conv(in_channels: int, pad: int, stride: int) -> nn.Conv2d:
    """A frozen 1x1 conv equivalent to :class:`PadShortcut` ``(pad, stride)`` on ``in_channels``."""
    out_channels = in_channels + 2 * pad
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        idx = torch.arange(in_channels)
        conv.weight[idx + pad, idx, 0, 0] = 1.0
    conv.weight.requires_grad_(False)
    conv.autocompress_fixed = True  # type: ignore[attr-defined]
    return conv


def has_option_a(model: nn.Module) -> bool:
    """True when ``model`` contains a zero-padding :class:`PadShortcut`."""
    return any(isinstance(m, PadShortcut) for m in model.modules())


def convert_option_a(model: nn.Module) -> nn.Module:
    """Return a copy of ``model`` with every :class:`PadShortcut` replaced by a fixed 1x1 conv.

    The replacement has ``requires_grad=False`` weights and ``autocompress_fixed = True``
    (so ``quantizable_layers`` skips it). Its input channel count is read from the block's
    ``conv1`` (the block input); outputs are identical to the original model's.
    """
    new = copy.deepcopy(model)
    for parent_name, parent in list(new.named_modules()):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, PadShortcut):
                continue
            conv1 = getattr(parent, "conv1", None)
            if not isinstance(conv1, nn.Conv2d):
                where = f"{parent_name}.{child_name}" if parent_name else child_name
                raise TypeError(f"{where}: PadShortcut outside a block with a conv1; cannot infer its input channels")
            fixed = fixed_shortcut_conv(conv1.in_channels, child.pad, child.stride)
            ref = conv1.weight
            fixed.to(device=ref.device, dtype=ref.dtype)
            setattr(parent, child_name, fixed)
    return new
