"""A scalable MobileNetV2: its spec, its scaling rules and the network, built with our own modules.

:class:`MobileNetV2Spec` holds the multipliers; at width 1 and depth 1 :func:`build` gives
torchvision's ``mobilenet_v2``, the same modules under the same names (``features.0`` the
stem, ``features.1`` .. ``features.17`` the inverted residual blocks, ``features.18`` the
1x1 head, ``classifier.1`` the linear layer), so its state dict loads with ``strict=True``
and the outputs agree. The blocks follow :data:`SETTINGS`, the paper's (t, c, n, s) rows:
width scales every c, and the stem, by :func:`~scaling.bases.rounding.round_channels`
(torchvision's ``_make_divisible`` with divisor 8; the head only grows, as in torchvision:
it is scaled by ``max(1, width)``); depth scales every n, rounded up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from .rounding import check_multipliers, round_blocks, round_channels
from .staged import StagedSpec

BASE = "mobilenetv2"
KIND = "mobilenet_v2"
STEM_CHANNELS = 32  # the 3x3 stride-2 stem convolution's output
HEAD_CHANNELS = 1280  # the last 1x1 convolution's output, before pooling


class Setting(NamedTuple):
    """One row of MobileNetV2's table (Sandler et al. 2018, Table 2): a stage of ``n``
    inverted residual blocks of expansion ``t`` and ``c`` output channels, the first with
    stride ``s``."""

    t: int
    c: int
    n: int
    s: int


SETTINGS = (
    Setting(1, 16, 1, 1),
    Setting(6, 24, 2, 2),
    Setting(6, 32, 3, 2),
    Setting(6, 64, 4, 2),
    Setting(6, 96, 3, 1),
    Setting(6, 160, 3, 2),
    Setting(6, 320, 1, 1),
)


@dataclass(frozen=True)
class MobileNetV2Spec(StagedSpec):
    """MobileNetV2 scaled by width and depth, at a resolution, for a number of classes.

    Args:
        width: channel multiplier (> 0) of the stem, every stage and (above 1) the head.
        depth: block-count multiplier (> 0) of every stage, rounded up (at least one block a stage).
        resolution: side of the square input, in pixels.
        num_classes: outputs of the classifier.
        dropout: dropout before the classifier (torchvision's 0.2); counts nothing.
        name: a label (tables, run folders); not part of the network.

    Raises:
        ValueError: a width or depth that is not a positive finite number, a resolution or class
            count that is not a positive integer, a dropout outside [0, 1).
    """

    kind: ClassVar[str] = KIND
    base: ClassVar[str] = BASE  # the name --base and the records give it
    in_channels: ClassVar[int] = 3

    width: float = 1.0
    depth: float = 1.0
    resolution: int = 224
    num_classes: int = 1000
    dropout: float = 0.2
    name: str = ""  # what tables and run folders call it; counts nothing

    def __post_init__(self) -> None:
        check_multipliers(KIND, self.width, self.depth, self.resolution, self.num_classes)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"{KIND}: dropout must lie in [0, 1), got {self.dropout!r}")

    def stem_channels(self) -> int:
        """Output channels of the stem: 32 scaled by width."""
        return round_channels(STEM_CHANNELS, self.width)

    def head_channels(self) -> int:
        """Output channels of the last 1x1 convolution: 1280 scaled by ``max(1, width)``."""
        return round_channels(HEAD_CHANNELS, max(1.0, self.width))

    def settings(self) -> list[Setting]:
        """The scaled (t, c, n, s) rows: c by width (rounded to 8), n by depth (rounded up)."""
        return [Setting(t, round_channels(c, self.width), round_blocks(n, self.depth), s) for t, c, n, s in SETTINGS]

    def stage_channels(self) -> list[int]:
        return [row.c for row in self.settings()]

    def stage_blocks(self) -> list[int]:
        return [row.n for row in self.settings()]

    def architecture(self) -> dict:
        """What the built network and its FLOPs depend on (the multipliers only through it)."""
        return dict(kind=KIND, stem=self.stem_channels(), settings=[list(r) for r in self.settings()],
                    head=self.head_channels(), resolution=self.resolution, num_classes=self.num_classes)



class ConvBNReLU6(nn.Sequential):
    """Convolution (no bias, "same" padding for odd kernels), batch norm, ReLU6: ``.0``, ``.1``, ``.2``."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=(kernel - 1) // 2,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """A 1x1 expansion to ``t`` times the input (skipped where t is 1), a 3x3 depthwise
    convolution carrying the stride, and a linear 1x1 projection with batch norm, all in
    ``conv``; the input is added where the stride is 1 and the channels do not change.

    Args:
        in_channels: channels of the block's input.
        out_channels: channels of its output.
        stride: stride of the depthwise convolution (1 or 2).
        expand: expansion ratio t; the inner channels are ``round(in_channels * t)``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand: int):
        super().__init__()
        inner = int(round(in_channels * expand))
        self.residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU6(in_channels, inner, kernel=1))
        layers += [ConvBNReLU6(inner, inner, stride=stride, groups=inner),
                   nn.Conv2d(inner, out_channels, 1, bias=False),
                   nn.BatchNorm2d(out_channels)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    """The network a :class:`MobileNetV2Spec` describes: ``features`` (stem, blocks, head),
    global average pooling, ``classifier`` (dropout, linear)."""

    def __init__(self, spec: MobileNetV2Spec):
        super().__init__()
        self.spec = spec
        c_in = spec.stem_channels()
        features: list[nn.Module] = [ConvBNReLU6(3, c_in, stride=2)]
        for t, c, n, s in spec.settings():
            for j in range(n):
                features.append(InvertedResidual(c_in, c, s if j == 0 else 1, t))
                c_in = c
        features.append(ConvBNReLU6(c_in, spec.head_channels(), kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=spec.dropout), nn.Linear(spec.head_channels(), spec.num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def build(spec: MobileNetV2Spec) -> MobileNetV2:
    """The (randomly initialised) network of ``spec``."""
    return MobileNetV2(spec)
