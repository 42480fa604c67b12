"""FLOPs (multiply-adds), parameters and activations of a spec, through fvcore.

Two ways to the same numbers:

* :func:`count_traced` is plain fvcore: build the model, trace it at batch 1 and let
  ``FlopCountAnalysis`` / ``ActivationCountAnalysis`` count it (about 0.5 s for B0 on a
  laptop core).
* :func:`count` lists the layers the spec builds, with the shapes their inputs and
  outputs have at the spec's resolution, and applies fvcore's own per-operator counting
  functions (``conv_flop_count`` and the linear formula) to them. No model is built, so a
  whole grid is counted in milliseconds; the tests assert that both give identical numbers.

FLOPs here are multiply-adds of convolutions and linear layers (fvcore's handles for
``aten::_convolution``, ``aten::linear`` and the matrix products), as in the paper's
Table 2; batch norm, pooling and element-wise operations are not counted. Parameters
count every trainable tensor (batch-norm affine included); activations count the output
elements of convolutions and linear layers, as fvcore does.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from dataclasses import dataclass
from math import prod
from pathlib import Path

from .spec import NetworkSpec
from .files import write_text_atomic

COUNT_VERSION = 1  # bump when what is counted changes: invalidates disk caches

FLOP_OPS = (
    "aten::_convolution",
    "aten::linear",
    "aten::addmm",
    "aten::matmul",
    "aten::mm",
    "aten::bmm",
    "aten::einsum",
)


@dataclass(frozen=True)
class Complexity:
    flops: int  # multiply-adds at batch 1
    params: int
    activations: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Layer:
    """One convolution or linear layer of a network, as it runs at the spec's resolution."""

    name: str  # the module's name in scaling.model.EfficientNet
    stage: str  # stem, stage1 .. stageN, head, classifier
    kind: str  # conv or linear
    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: int  # the layer's weights and bias, plus the batch norm that follows it

    @property
    def flops(self) -> int:
        if self.kind == "conv":
            return int(_conv_flop_count()(list(self.x_shape), list(self.w_shape), list(self.out_shape)))
        # fvcore's linear_flop_jit: prod(input shape) * out_features
        return int(prod(self.x_shape) * self.w_shape[0])

    @property
    def activations(self) -> int:
        return int(prod(self.out_shape))


# ---------------------------------------------------------------------------- layers


def _out(size: int, stride: int) -> int:
    # Both "same" and symmetric (k // 2, odd k) padding give ceil(size / stride).
    return -(-size // stride)


def layers(spec: NetworkSpec, height: int | None = None, width: int | None = None) -> list[Layer]:
    """Every convolution and linear layer of the network the spec builds, in order."""
    h = height or spec.resolution
    w = width or spec.resolution
    out: list[Layer] = []

    def conv(name, stage, c_in, c_out, k, stride, groups=1, bn=True, bias=False):
        nonlocal h, w
        x_shape = (1, c_in, h, w)
        h, w = _out(h, stride), _out(w, stride)
        params = c_out * (c_in // groups) * k * k + (c_out if bias else 0) + (2 * c_out if bn else 0)
        out.append(Layer(name, stage, "conv", x_shape, (c_out, c_in // groups, k, k), (1, c_out, h, w), params))

    conv("stem.conv", "stem", spec.in_channels, spec.stem_width, 3, 2)
    index = 0
    for s, stage in enumerate(spec.stages(), start=1):
        for j in range(stage.repeats):
            name, tag = f"blocks.{index}", f"stage{s}"
            w_in = stage.w_in if j == 0 else stage.w_out
            stride = stage.stride if j == 0 else 1
            w_mid = w_in * stage.expand
            if stage.expand != 1:
                conv(f"{name}.expand.conv", tag, w_in, w_mid, 1, 1)
            conv(f"{name}.depthwise.conv", tag, w_mid, w_mid, stage.kernel, stride, groups=w_mid)
            if stage.se:
                squeezed = max(1, int(w_in * stage.se))
                keep = h, w
                h = w = 1
                conv(f"{name}.se.reduce", tag, w_mid, squeezed, 1, 1, bn=False, bias=True)
                conv(f"{name}.se.expand", tag, squeezed, w_mid, 1, 1, bn=False, bias=True)
                h, w = keep
            conv(f"{name}.project.conv", tag, w_mid, stage.w_out, 1, 1)
            index += 1
    conv("head.conv", "head", spec.stages()[-1].w_out, spec.head_width, 1, 1)
    c = spec.head_width
    out.append(Layer("classifier", "classifier", "linear", (1, c), (spec.num_classes, c),
                     (1, spec.num_classes), c * spec.num_classes + spec.num_classes))
    return out


def count(spec) -> Complexity:
    """FLOPs, parameters and activations of any base's spec (:mod:`scaling.bases`): for
    EfficientNet by fvcore's formulas over :func:`layers` (:func:`count_layers`), for the
    other bases by an fvcore trace cached on disk (:mod:`scaling.bases.counting`)."""
    from .bases import count as count_base

    return count_base(spec)


def count_layers(spec: NetworkSpec) -> Complexity:
    """FLOPs, parameters and activations of an EfficientNet by fvcore's formulas over :func:`layers`."""
    ls = layers(spec)
    return Complexity(
        flops=sum(l.flops for l in ls),
        params=sum(l.params for l in ls),
        activations=sum(l.activations for l in ls),
    )


def breakdown(spec, by: str = "stage"):
    """A DataFrame of FLOPs, parameters and activations per ``stage`` or per ``layer``: for
    EfficientNet from :func:`layers`, for a traced base from an fvcore trace
    (:func:`scaling.bases.counting.breakdown`)."""
    import pandas as pd

    from .bases import base_of

    if not base_of(spec).analytic:
        from .bases.counting import breakdown as traced_breakdown

        return traced_breakdown(spec, by)

    if by not in ("stage", "layer"):
        raise ValueError(f"by must be 'stage' or 'layer', got {by!r}")
    rows = [
        dict(stage=l.stage, layer=l.name, kind=l.kind, input=_shape(l.x_shape), output=_shape(l.out_shape),
             flops=l.flops, params=l.params, activations=l.activations)
        for l in layers(spec)
    ]
    df = pd.DataFrame(rows)
    if by == "stage":
        df = (df.groupby("stage", sort=False)[["flops", "params", "activations"]].sum().reset_index())
        df.insert(1, "layers", [sum(1 for l in layers(spec) if l.stage == s) for s in df["stage"]])
    return df


def _shape(s: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in s[1:])


# ---------------------------------------------------------------------------- plain fvcore


def _quiet_fvcore():
    logging.getLogger("fvcore").setLevel(logging.ERROR)


def _conv_flop_count():
    # fvcore's import touches the deprecated torch.jit.script: keep its warning out of the CLI.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn.jit_handles import conv_flop_count
    return conv_flop_count


def flop_analysis(model, inputs):
    """fvcore's FlopCountAnalysis restricted to convolutions, linear layers and matrix products."""
    from fvcore.nn import FlopCountAnalysis

    _quiet_fvcore()
    analysis = FlopCountAnalysis(model, inputs)
    handles = dict(analysis._op_handles)
    analysis.clear_op_handles()
    analysis.set_op_handle(**{op: handles[op] for op in FLOP_OPS})
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    return analysis


def count_traced(spec: NetworkSpec) -> Complexity:
    """Plain fvcore: build the model, trace it at batch 1 and count."""
    import torch
    from fvcore.nn import ActivationCountAnalysis, parameter_count

    from .model import EfficientNet

    model = EfficientNet(spec).eval()
    x = torch.zeros(1, spec.in_channels, spec.resolution, spec.resolution)
    with torch.no_grad():
        flops = flop_analysis(model, x).total()
        acts = ActivationCountAnalysis(model, x)
        acts.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        activations = acts.total()
    return Complexity(flops=int(flops), params=int(parameter_count(model)[""]), activations=int(activations))


# ---------------------------------------------------------------------------- cache


def default_cache_dir() -> Path | None:
    """``ROOT/counts`` of the one cache root (:func:`scaling.cache.cache_root`); None
    (said once, in a warning) when that cannot be used: the counts are then kept in memory."""
    from .cache import cache_root

    return cache_root("counts")


class CountCache:
    """Counts on disk, one JSON file keyed by the network (its architecture key); in memory
    only when there is no usable cache folder."""

    def __init__(self, directory: str | Path | None = None):
        folder = Path(directory) if directory is not None else default_cache_dir()
        self.path = folder / f"complexity-v{COUNT_VERSION}.json" if folder is not None else None
        self._data: dict[str, dict] | None = None
        self._dirty = False

    def _load(self) -> dict[str, dict]:
        if self._data is None and self.path is None:
            self._data = {}
        if self._data is None:
            try:
                self._data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self._data = {}
        return self._data

    def get(self, spec: NetworkSpec) -> Complexity | None:
        hit = self._load().get(spec.architecture_key())
        return Complexity(**hit) if hit else None

    def put(self, spec: NetworkSpec, c: Complexity) -> None:
        self._load()[spec.architecture_key()] = c.to_dict()
        self._dirty = True

    def save(self) -> None:
        if not self._dirty or self.path is None:
            return
        try:
            write_text_atomic(self.path, json.dumps(self._data, sort_keys=True))
            self._dirty = False
        except OSError:
            pass  # a cache that cannot be written is not an error


def count_many(specs, cache: CountCache | None = None) -> list[Complexity]:
    """Count every spec, reading and filling the disk cache."""
    from .bases import base_of

    cache = cache or CountCache()
    out = []
    for spec in specs:
        base = base_of(spec)
        if not base.analytic:  # a traced base: its own cache (keyed by its code too)
            out.append(base.count(spec))
            continue
        c = cache.get(spec)
        if c is None:
            c = count(spec)
            cache.put(spec, c)
        out.append(c)
    cache.save()
    return out
