"""A user's network for the tests of ``--base module:function``: a tiny ConvNet that takes
``width`` and ``depth`` multipliers (channels rounded to whole numbers, blocks rounded up)."""

import math

from torch import nn


def tiny(width: float = 1.0, depth: float = 1.0, num_classes: int = 10) -> nn.Module:
    c = max(1, round(8 * width))
    layers = [nn.Conv2d(3, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
    for _ in range(math.ceil(2 * depth)):
        layers += [nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return nn.Sequential(*layers)


def no_width(depth: float = 1.0) -> nn.Module:
    return nn.Linear(1, 1)


def not_a_module(width: float = 1.0, depth: float = 1.0):
    return "a network"


NOT_CALLABLE = 3
