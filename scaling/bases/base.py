"""One interface for the base network a study scales: EfficientNet-B0, ResNet-50, MobileNetV2 or a user's function.

A :class:`Base` says what the rest of the tool needs of a network, whatever it is:

* ``name``: what ``--base`` and ``base = "..."`` in a study file call it, and what a trial records;
* :meth:`~Base.spec`: its spec at width and depth multipliers, a resolution and classes. A spec
  is frozen and JSON (``to_dict``; :func:`spec_from_dict` reads it back) and has ``width``,
  ``depth``, ``resolution``, ``num_classes``, ``name``, ``in_channels``, ``replace``,
  ``architecture()`` (what the network is: grids merge by it) and ``architecture_key()``;
  :mod:`scaling.compound` scales it by replacing width, depth and resolution;
* :meth:`~Base.build`: the network, an ``nn.Module``;
* :meth:`~Base.count`: FLOPs, parameters and activations (a :class:`scaling.complexity.Complexity`):
  analytic for EfficientNet (``analytic``: from its own table of layer shapes, no network built),
  from the layers' shapes of the network built on the meta device for ResNet-50 and MobileNetV2,
  an fvcore trace cached on disk for a user's network (:mod:`scaling.bases.counting`);
* :meth:`~Base.structure`: blocks and channels per stage, for tables and records (None where
  the base does not know them: a user's network);
* :meth:`~Base.smallest_side`: the side of the smallest feature map batch norm normalises (None: unknown).

:func:`get_base` gives the base of a name (``module:function`` for a user's network, checked:
it imports, it exists, it takes ``width`` and ``depth``), :func:`base_of` that of a spec;
:func:`build`, :func:`count` and :func:`structure` go through it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol

from torch import nn

from . import counting, mobilenet, resnet, user
from .mobilenet import MobileNetV2Spec
from .resnet import ResNetSpec
from .user import BaseError, UserSpec

DEFAULT = "efficientnet-b0"


@dataclass(frozen=True)
class Structure:
    """Blocks and output channels per stage, and the stem's and head's channels (None: none of its own)."""

    repeats: tuple[int, ...]
    channels: tuple[int, ...]
    stem: int | None = None
    head: int | None = None

    @property
    def repeats_text(self) -> str:
        return "-".join(str(n) for n in self.repeats)

    @property
    def channels_text(self) -> str:
        """Stage outputs: "16-24-40-80-112-192-320" (what a trial records)."""
        return "-".join(str(c) for c in self.channels)

    @property
    def widths_text(self) -> str:
        """Stem, stages and head: "32-16-...-320-1280" (what the tables show)."""
        ends = [self.stem] if self.stem is not None else []
        return "-".join(str(c) for c in ends + list(self.channels) + ([self.head] if self.head is not None else []))


class Base(Protocol):
    name: str
    analytic: bool  # counted from its own table of layer shapes, without building the network

    def spec(self, width: float = 1.0, depth: float = 1.0, resolution: int = 224, num_classes: int = 1000): ...

    def build(self, spec) -> nn.Module: ...

    def count(self, spec): ...

    def largest_activation(self, spec) -> int: ...

    def structure(self, spec) -> Structure | None: ...

    def smallest_side(self, spec) -> int | None: ...


def _halved(side: int, strides) -> int:
    for s in strides:
        side = -(-side // s)
    return side


class EfficientNetB0:
    """EfficientNet-B0 (:class:`scaling.spec.NetworkSpec`), counted from its layers' shapes."""

    name = DEFAULT
    analytic = True

    def spec(self, width: float = 1.0, depth: float = 1.0, resolution: int = 224, num_classes: int = 1000):
        from ..spec import spec_for

        return spec_for(DEFAULT, width=width, depth=depth, resolution=resolution, num_classes=num_classes)

    def build(self, spec) -> nn.Module:
        from ..model import EfficientNet

        return EfficientNet(spec)

    def count(self, spec):
        from ..complexity import count_layers

        return count_layers(spec)

    def largest_activation(self, spec) -> int:
        from ..complexity import layers

        return max(layer.activations for layer in layers(spec))

    def structure(self, spec) -> Structure:
        stages = spec.stages()
        return Structure(tuple(s.repeats for s in stages), tuple(s.w_out for s in stages), spec.stem_width,
                         spec.head_width)

    def smallest_side(self, spec) -> int:
        return _halved(spec.resolution, [2] + [s.stride for s in spec.stages()])


class Traced:
    """A base counted by an fvcore trace of the network it builds, cached on disk."""

    analytic = False

    def count(self, spec):
        return counting.count(spec)

    def largest_activation(self, spec) -> int:
        return counting.counted(spec)["largest"]


class FromShapes:
    """A built-in base counted from its layers' shapes on the meta device (:func:`counting.shapes`):
    every counted operation of its network is an ``nn.Conv2d`` or an ``nn.Linear``."""

    analytic = False  # no layer table of its own: breakdowns are traced

    def count(self, spec):
        from ..complexity import Complexity

        c = _shape_counts(spec)
        return Complexity(flops=c["flops"], params=c["params"], activations=c["activations"])

    def largest_activation(self, spec) -> int:
        return _shape_counts(spec)["largest"]


@functools.lru_cache(maxsize=4096)
def _shape_counts(spec) -> dict:
    return counting.shapes(spec)


class ResNet50(FromShapes):
    name = resnet.BASE

    def spec(self, width: float = 1.0, depth: float = 1.0, resolution: int = 224, num_classes: int = 1000):
        return ResNetSpec(width=width, depth=depth, resolution=resolution, num_classes=num_classes, name=self.name)

    def build(self, spec) -> nn.Module:
        return resnet.build(spec)

    def structure(self, spec) -> Structure:
        return Structure(tuple(spec.stage_blocks()), tuple(spec.stage_out_channels()), spec.stem_channels())

    def smallest_side(self, spec) -> int:
        return _halved(spec.resolution, (2, 2) + resnet.STAGE_STRIDES)  # stem, max pooling, the stages


class MobileNetV2(FromShapes):
    name = mobilenet.BASE

    def spec(self, width: float = 1.0, depth: float = 1.0, resolution: int = 224, num_classes: int = 1000):
        return MobileNetV2Spec(width=width, depth=depth, resolution=resolution, num_classes=num_classes,
                               name=self.name)

    def build(self, spec) -> nn.Module:
        return mobilenet.build(spec)

    def structure(self, spec) -> Structure:
        return Structure(tuple(spec.stage_blocks()), tuple(spec.stage_channels()), spec.stem_channels(),
                         spec.head_channels())

    def smallest_side(self, spec) -> int:
        return _halved(spec.resolution, [2] + [row.s for row in spec.settings()])


class UserBase(Traced):
    """A user's function ``module:function`` (:mod:`scaling.bases.user`)."""

    def __init__(self, function: str):
        self.name = function

    def spec(self, width: float = 1.0, depth: float = 1.0, resolution: int = 224, num_classes: int = 1000):
        return UserSpec(function=self.name, width=width, depth=depth, resolution=resolution,
                        num_classes=num_classes, name=user.split_reference(self.name)[1])

    def build(self, spec) -> nn.Module:
        return user.build(spec)

    def structure(self, spec) -> None:
        return None

    def smallest_side(self, spec) -> None:
        return None


BASES: dict[str, Base] = {b.name: b for b in (EfficientNetB0(), ResNet50(), MobileNetV2())}
ALIASES = {"b0": DEFAULT, "efficientnet_b0": DEFAULT, "efficientnet": DEFAULT, "resnet-50": "resnet50",
           "resnet_50": "resnet50", "mobilenet_v2": "mobilenetv2", "mobilenet-v2": "mobilenetv2"}
_BY_TYPE = {ResNetSpec: BASES["resnet50"], MobileNetV2Spec: BASES["mobilenetv2"]}


def canonical(name: str) -> str:
    """The base's name as studies record it: a built-in base's (aliases accepted), or the
    ``module:function`` as given (its form checked, not imported).

    Raises:
        BaseError: neither a built-in base nor of the form module:function.
    """
    if not isinstance(name, str) or not name.strip():
        raise BaseError(f"base {name!r}: give {', '.join(BASES)} or module:function")
    n = name.strip()
    if ":" in n:
        user.split_reference(n)
        return n
    n = ALIASES.get(n.lower(), n.lower())
    if n not in BASES:
        raise BaseError(f"unknown base {name!r}; known: {', '.join(BASES)}, or module:function for a network "
                        "of your own")
    return n


def get_base(name: str = DEFAULT) -> Base:
    """The base called ``name``; a user's function is imported and its signature checked.

    Raises:
        BaseError: one line: an unknown name, a module that does not import, a missing
            function, one that does not take width= and depth=.
    """
    n = canonical(name)
    if n in BASES:
        return BASES[n]
    user.load_function(n)
    return UserBase(n)


def base_of(spec) -> Base:
    """The base whose spec ``spec`` is.

    Raises:
        TypeError: ``spec`` is not a network spec.
    """
    from ..spec import NetworkSpec

    if isinstance(spec, NetworkSpec):
        return BASES[DEFAULT]
    if isinstance(spec, UserSpec):
        return UserBase(spec.function)
    found = _BY_TYPE.get(type(spec))
    if found is None:
        raise TypeError(f"not a base network spec: {spec!r}")
    return found


def base_name(spec) -> str:
    """What a trial records as its base: ``efficientnet-b0``, ``resnet50``, ``mobilenetv2``, ``module:function``."""
    return base_of(spec).name


def build(spec) -> nn.Module:
    """The (randomly initialised) network of any base's spec.

    Raises:
        TypeError: ``spec`` is not a network spec.
    """
    return base_of(spec).build(spec)


def count(spec):
    """FLOPs, parameters and activations of any base's spec (:class:`scaling.complexity.Complexity`)."""
    return base_of(spec).count(spec)


def structure(spec) -> Structure | None:
    return base_of(spec).structure(spec)


def spec_from_dict(d: dict):
    """The spec that a spec's ``to_dict`` wrote: EfficientNet's (no ``kind``), a base's or a user's.

    Raises:
        ValueError: an unknown ``kind``, or fields the spec does not have or refuses.
    """
    from ..spec import NetworkSpec
    from .networks import spec_from_dict as base_spec_from_dict

    if "kind" not in d:
        return NetworkSpec.from_dict(d)
    if d["kind"] == user.KIND:
        fields = {k: v for k, v in d.items() if k != "kind"}
        try:
            return UserSpec(**fields)
        except TypeError as e:
            raise ValueError(f"{user.KIND}: {e}") from None
    return base_spec_from_dict(d)
