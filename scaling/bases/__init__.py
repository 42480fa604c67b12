"""Scalable base networks other than EfficientNet-B0: ResNet-50 and MobileNetV2.

Each base has a frozen spec (:class:`ResNetSpec`, :class:`MobileNetV2Spec`) of width and
depth multipliers, resolution and classes, whose methods spell out the scaling rules
(channels by width, rounded to a multiple of 8 and never below 90% of the scaled value;
blocks per stage by depth, rounded up; :mod:`scaling.bases.rounding`). :func:`build` makes
the network with the package's own modules; at width 1 and depth 1 it is torchvision's
``resnet50`` or ``mobilenet_v2``, state dict included. :func:`flops` counts multiply-adds
with fvcore, cached on disk by the network (:mod:`scaling.bases.counting`).
"""

from .counting import flops, trace
from .mobilenet import MobileNetV2, MobileNetV2Spec
from .networks import KINDS, BaseSpec, build, spec_from_dict
from .resnet import ResNet, ResNetSpec
from .rounding import DIVISOR, ROUND_LIMIT, round_blocks, round_channels

__all__ = [
    "flops", "trace",
    "MobileNetV2", "MobileNetV2Spec", "ResNet", "ResNetSpec",
    "KINDS", "BaseSpec", "build", "spec_from_dict",
    "DIVISOR", "ROUND_LIMIT", "round_blocks", "round_channels",
]
