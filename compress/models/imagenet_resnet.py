"""ImageNet ResNets (18/34/50/101/152) on torchvision's definitions.

Parameter names are torchvision's, so torchvision checkpoints load. Blocks use a distinct
ReLU module per use (``relu1``, ``relu2``, ``relu3``; no parameters, so checkpoint keys are
unchanged), which graph-mode quantization needs. ``small_input=True`` swaps the stem for a
3x3 stride-1 conv without max-pool, for 32x32 inputs.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet as tv


class _SplitReLU(nn.Module):
    """A torchvision block with one ReLU module per use (``relu1`` .. ``relu<RELUS>``) instead of
    its shared ``relu``."""

    RELUS = 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        del self.relu
        for i in range(1, self.RELUS + 1):
            setattr(self, f"relu{i}", nn.ReLU(inplace=True))


class BasicBlock(_SplitReLU, tv.BasicBlock):
    RELUS = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class Bottleneck(_SplitReLU, tv.Bottleneck):
    RELUS = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + identity)


_LAYERS = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}


class ImageNetResNet(tv.ResNet):
    """torchvision ResNet with per-use ReLUs and an optional small-input stem."""

    def __init__(self, depth: int, num_classes: int = 1000, small_input: bool = False):
        block, layers = _LAYERS[depth]
        super().__init__(block, layers, num_classes=num_classes)
        self.depth = depth
        self.small_input = small_input
        if small_input:
            self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.maxpool = nn.Identity()
