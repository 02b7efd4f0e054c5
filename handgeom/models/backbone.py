"""The ResNet family every image network of handgeom shares (He et al., CVPR 2016).

``ResNet(depth)(images)`` returns the stride 4, 8, 16 and 32 feature maps (the outputs of the four
stages). ``width`` scales every stage's channels (64 is the paper's), so the ``cpu`` presets of the
networks can use a narrow ResNet-18. Torchvision's ImageNet weights load into the same module
layout when the user has them (:meth:`ResNet.load_torchvision`); torchvision is not a dependency.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "conv_bn_relu", "norm2d"]

LAYOUTS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3))}


def norm2d(channels: int, kind: str = "batch") -> nn.Module:
    """Batch norm (the papers'), or group norm (8 groups or fewer), which does not depend on the
    batch: small CPU batches, and data-parallel training that equals one process exactly."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    raise ValueError(f"norm must be 'batch' or 'group', got {kind!r}")


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, norm: str = "batch") -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), norm2d(cout, norm),
                         nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, norm: str = "batch"):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = norm2d(planes, norm)
        self.conv2 = nn.Conv2d(planes, cout, 3, 1, 1, bias=False)
        self.bn2 = norm2d(cout, norm)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), norm2d(cout, norm))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.residual(x) + identity)


class Bottleneck(BasicBlock):
    """1x1 - 3x3 - 1x1 convolutions with a residual connection (ResNet-50), stride on the 3x3."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, norm: str = "batch"):
        super().__init__(cin, planes, stride, norm)
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = norm2d(planes, norm)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = norm2d(cout, norm)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.bn3(self.conv3(self.relu(self.bn2(self.conv2(x)))))


class ResNet(nn.Module):
    """ResNet-18, -34 or -50 without its classifier: ``forward(x [B, C, H, W])`` returns the four
    stages' maps ``[s4, s8, s16, s32]`` with ``self.channels`` channels.

    Args:
        depth: 18, 34 or 50.
        width: channels of the first stage before expansion (64 in the paper).
        in_channels: input channels (3 for RGB).
        norm: ``"batch"`` (the paper's, and torchvision's weights) or ``"group"`` (see :func:`norm2d`).
    """

    def __init__(self, depth: int = 18, width: int = 64, in_channels: int = 3, norm: str = "batch"):
        super().__init__()
        if depth not in LAYOUTS:
            raise ValueError(f"ResNet: depth must be one of {sorted(LAYOUTS)}, got {depth!r}")
        if width < 1:
            raise ValueError(f"ResNet: width must be positive, got {width}")
        kind, counts = LAYOUTS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = norm2d(width, norm)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, self.channels = width, []
        for i, count in enumerate(counts):
            planes = width * 2 ** i
            blocks = [block(cin, planes, 1 if i == 0 else 2, norm)] + [block(planes * block.expansion, planes, 1, norm)
                                                                       for _ in range(count - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = planes * block.expansion
            self.channels.append(cin)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        maps = []
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            maps.append(x)
        return maps

    def load_torchvision(self, path: str | Path | None = None) -> "ResNet":
        """Loads torchvision's ImageNet weights of this depth (``width`` must be 64): from a state
        dict file ``path``, or, without it, through ``torchvision.models`` (which must be installed
        and may download them). The module layout is torchvision's, so keys match; the classifier
        is dropped."""
        if path is not None:
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            try:
                import torchvision
            except ImportError as error:
                raise ImportError("ResNet.load_torchvision: give a state dict path, or install torchvision") from error
            state = getattr(torchvision.models, f"resnet{self.depth}")(weights="DEFAULT").state_dict()
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        self.load_state_dict(state)
        return self
