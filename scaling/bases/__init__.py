"""The base networks a study scales, behind one interface (:class:`Base`): EfficientNet-B0 (the
default), ResNet-50, MobileNetV2, and a user's ``module:function``.

ResNet-50 and MobileNetV2 have frozen specs (:class:`ResNetSpec`, :class:`MobileNetV2Spec`) of
width and depth multipliers, resolution and classes, whose methods spell out the scaling rules
(channels by width, rounded to a multiple of 8 and never below 90% of the scaled value;
blocks per stage by depth, rounded up; :mod:`scaling.bases.rounding`); at width 1 and depth 1
:func:`build` gives torchvision's ``resnet50`` or ``mobilenet_v2``, state dict included. A
user's network (:class:`UserSpec`) is what its function builds for ``width=`` and ``depth=``.
EfficientNet-B0 is counted from its layers' shapes (:mod:`scaling.complexity`), the others by
an fvcore trace cached on disk by the network (:mod:`scaling.bases.counting`).
:func:`get_base` gives a base by name, :func:`base_of` a spec's.
"""

from .base import (ALIASES, BASES, DEFAULT, Base, Structure, base_name, base_of, build, canonical, count,
                   get_base, spec_from_dict, structure)
from .counting import flops, trace
from .mobilenet import MobileNetV2, MobileNetV2Spec
from .networks import KINDS, BaseSpec
from .resnet import ResNet, ResNetSpec
from .rounding import DIVISOR, ROUND_LIMIT, round_blocks, round_channels
from .user import BaseError, UserSpec, load_function

__all__ = [
    "ALIASES", "BASES", "DEFAULT", "Base", "Structure", "base_name", "base_of", "build", "canonical", "count",
    "get_base", "spec_from_dict", "structure",
    "flops", "trace",
    "MobileNetV2", "MobileNetV2Spec", "ResNet", "ResNetSpec", "UserSpec", "BaseError", "load_function",
    "KINDS", "BaseSpec",
    "DIVISOR", "ROUND_LIMIT", "round_blocks", "round_channels",
]
