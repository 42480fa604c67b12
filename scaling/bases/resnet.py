"""A scalable ResNet-50: its spec, its scaling rules and the network, built with our own modules.

:class:`ResNetSpec` holds the multipliers; at width 1 and depth 1 :func:`build` gives
torchvision's ``resnet50`` (ResNet v1.5: the stride on the 3x3 convolution), the same
modules under the same names (``conv1``, ``bn1``, ``layer1`` .. ``layer4`` of bottleneck
blocks, ``fc``), so its state dict loads with ``strict=True`` and the outputs agree.
Width scales the stem and every stage's bottleneck channels (the output of a block is
:data:`EXPANSION` times them) by :func:`~scaling.bases.rounding.round_channels`; depth
scales every stage's block count, rounded up (:func:`~scaling.bases.rounding.round_blocks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .rounding import check_multipliers, round_blocks, round_channels
from .staged import StagedSpec

BASE = "resnet50"
KIND = "resnet50"
STEM_CHANNELS = 64  # the 7x7 stem convolution's output
STAGE_CHANNELS = (64, 128, 256, 512)  # bottleneck (inner) channels of layer1 .. layer4
STAGE_BLOCKS = (3, 4, 6, 3)  # bottleneck blocks of layer1 .. layer4
STAGE_STRIDES = (1, 2, 2, 2)  # stride of each stage's first block
EXPANSION = 4  # a bottleneck's output channels are EXPANSION times its inner channels


@dataclass(frozen=True)
class ResNetSpec(StagedSpec):
    """ResNet-50 scaled by width and depth, at a resolution, for a number of classes.

    Args:
        width: channel multiplier (> 0) of the stem and of every stage.
        depth: block-count multiplier (> 0) of every stage, rounded up (at least one block a stage).
        resolution: side of the square input, in pixels.
        num_classes: outputs of the classifier.
        name: a label (tables, run folders); not part of the network.

    Raises:
        ValueError: a width or depth that is not a positive finite number, a resolution or class
            count that is not a positive integer.
    """

    kind: ClassVar[str] = KIND
    base: ClassVar[str] = BASE  # the name --base and the records give it
    in_channels: ClassVar[int] = 3

    width: float = 1.0
    depth: float = 1.0
    resolution: int = 224
    num_classes: int = 1000
    name: str = ""  # what tables and run folders call it; counts nothing

    def __post_init__(self) -> None:
        check_multipliers(KIND, self.width, self.depth, self.resolution, self.num_classes)

    def stem_channels(self) -> int:
        """Output channels of the stem convolution: 64 scaled by width."""
        return round_channels(STEM_CHANNELS, self.width)

    def stage_channels(self) -> list[int]:
        """Bottleneck (inner) channels of layer1 .. layer4: (64, 128, 256, 512) scaled by width."""
        return [round_channels(c, self.width) for c in STAGE_CHANNELS]

    def stage_out_channels(self) -> list[int]:
        """Output channels of every block of layer1 .. layer4: EXPANSION times the inner ones."""
        return [EXPANSION * c for c in self.stage_channels()]

    def stage_blocks(self) -> list[int]:
        """Blocks of layer1 .. layer4: (3, 4, 6, 3) scaled by depth, rounded up."""
        return [round_blocks(n, self.depth) for n in STAGE_BLOCKS]

    def architecture(self) -> dict:
        """What the built network and its FLOPs depend on (the multipliers only through it)."""
        return dict(kind=KIND, stem=self.stem_channels(), channels=self.stage_channels(),
                    blocks=self.stage_blocks(), strides=list(STAGE_STRIDES), expansion=EXPANSION,
                    resolution=self.resolution, num_classes=self.num_classes)



class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand, each with batch norm; the input,
    projected by a strided 1x1 convolution and batch norm where the shape changes, is added
    before the last ReLU.

    Args:
        in_channels: channels of the block's input.
        channels: inner channels; the output has ``EXPANSION * channels``.
        stride: stride of the 3x3 convolution (and of the projection).
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        out_channels = EXPANSION * channels
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + shortcut)


class ResNet(nn.Module):
    """The network a :class:`ResNetSpec` describes: a 7x7 stride-2 stem with batch norm, ReLU
    and 3x3 stride-2 max pooling, four stages of :class:`Bottleneck` blocks, global average
    pooling and a linear classifier."""

    def __init__(self, spec: ResNetSpec):
        super().__init__()
        self.spec = spec
        stem = spec.stem_channels()
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        c_in = stem
        for i, (channels, blocks, stride) in enumerate(
                zip(spec.stage_channels(), spec.stage_blocks(), STAGE_STRIDES), start=1):
            stage = []
            for j in range(blocks):
                stage.append(Bottleneck(c_in, channels, stride if j == 0 else 1))
                c_in = EXPANSION * channels
            self.add_module(f"layer{i}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, spec.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build(spec: ResNetSpec) -> ResNet:
    """The (randomly initialised) network of ``spec``."""
    return ResNet(spec)
