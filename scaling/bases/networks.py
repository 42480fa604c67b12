"""The base networks by kind: one :func:`build` for any base spec, and specs from their dicts.

``kind`` names a base (``resnet50``, ``mobilenet_v2``); a spec's :meth:`to_dict` carries it,
so records can hold a spec and :func:`spec_from_dict` gives it back.
"""

from __future__ import annotations

from typing import Union

from torch import nn

from . import mobilenet, resnet
from .mobilenet import MobileNetV2Spec
from .resnet import ResNetSpec

BaseSpec = Union[ResNetSpec, MobileNetV2Spec]

KINDS = {resnet.KIND: ResNetSpec, mobilenet.KIND: MobileNetV2Spec}
_BUILDERS = {ResNetSpec: resnet.build, MobileNetV2Spec: mobilenet.build}


def build(spec: BaseSpec) -> nn.Module:
    """The network of ``spec`` (a ResNet-50 or MobileNetV2 spec), randomly initialised.

    Raises:
        TypeError: ``spec`` is not a base network spec.
    """
    builder = _BUILDERS.get(type(spec))
    if builder is None:
        raise TypeError(f"not a base network spec: {spec!r}")
    return builder(spec)


def spec_from_dict(d: dict) -> BaseSpec:
    """The spec that :meth:`to_dict` wrote.

    Raises:
        ValueError: an unknown ``kind``, or fields the spec does not have or refuses.
    """
    fields = dict(d)
    kind = fields.pop("kind", None)
    if kind not in KINDS:
        raise ValueError(f"unknown base network kind {kind!r}; known: {', '.join(KINDS)}")
    try:
        return KINDS[kind](**fields)
    except TypeError as e:
        raise ValueError(f"{kind}: {e}") from None
