"""The complexity of a base network: from its layers' shapes (:func:`shapes`: ResNet-50 and
MobileNetV2, built on the meta device) or, for a user's network, by tracing it with fvcore,
cached on disk.

:func:`count` builds the spec's network, traces it at batch 1 and the spec's resolution and
counts it as :func:`scaling.complexity.count_traced` counts B0: FLOPs by
:func:`scaling.complexity.flop_analysis` (multiply-adds of convolutions, linear layers and
matrix products, one multiply-add being one FLOP; batch norm, pooling and element-wise
operations not counted), parameters, and activations (fvcore's: the outputs of
convolutions and linear layers), with the largest single such output (what an evaluation
batch's memory is bounded by). A trace takes seconds (ResNet-50 at 224 px), so each count
is kept in one JSON file in the counts folder of the cache root
(``ROOT/counts/bases-vN.json``, listed and cleared by ``scaling cache``), keyed by a digest
of the network the spec builds (two specs that round to the same network share an entry),
of what is counted, and for a user's network of its module's source; a grid counts in
seconds the second time. Without a usable cache root the counts are kept in memory for the run.
"""

from __future__ import annotations

import json
from pathlib import Path

from .networks import BaseSpec

VERSION = 2  # bump when the layout of the cache file or how a base is traced changes

_memory: dict[str, dict] = {}  # the counts of this run, where there is no cache folder


def _count_version() -> int:
    from ..complexity import COUNT_VERSION

    return COUNT_VERSION


def _digest(*parts) -> str:
    try:  # the package's one digest helper, where it exists
        from ..digest import digest
    except ImportError:
        from ..data.cache import digest
    return digest(*parts)


def _counts_folder() -> Path | None:
    try:  # the package's one cache root, where it exists
        from ..cache import cache_root
    except ImportError:
        from ..data.cache import cache_root
    return cache_root("counts")


FIELDS = ("flops", "params", "activations", "largest")  # what one entry holds


def cache_key(spec: BaseSpec) -> str:
    """``KIND-DIGEST``: the base and a digest of the network it builds, of what is counted and,
    for a network of the user's code (a spec with ``code_digest``), of that code."""
    code = spec.code_digest() if hasattr(spec, "code_digest") else ""
    return f"{spec.kind}-{_digest(spec.architecture(), VERSION, _count_version(), code)}"


def cache_path(cache_dir: str | Path | None = None) -> Path | None:
    """The cache file in ``cache_dir``, else in the cache root's counts folder; None: in memory."""
    folder = Path(cache_dir) if cache_dir is not None else _counts_folder()
    return folder / f"bases-v{VERSION}.json" if folder is not None else None


def _entry(v) -> bool:
    return isinstance(v, dict) and all(isinstance(v.get(k), int) for k in FIELDS)


def _read(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if _entry(v)} if isinstance(data, dict) else {}


def _write(path: Path, key: str, value: dict) -> None:
    from ..files import write_text_atomic

    data = _read(path)  # re-read: keep what other processes added since
    data[key] = value
    try:
        write_text_atomic(path, json.dumps(data, sort_keys=True, indent=0))
    except OSError:
        pass  # a cache that cannot be written is not an error


def trace(spec) -> dict:
    """Build the network, trace it at batch 1 and count it (no cache): ``flops``, ``params``,
    ``activations`` and ``largest`` (the largest output of one convolution or linear layer)."""
    import importlib
    import warnings

    import torch
    from torch import nn

    with warnings.catch_warnings():  # fvcore's import touches the deprecated torch.jit.script
        warnings.simplefilter("ignore", FutureWarning)
        importlib.import_module("fvcore.nn")
    from fvcore.nn import ActivationCountAnalysis

    from ..complexity import flop_analysis
    from .base import build

    model = build(spec).eval()
    x = torch.zeros(1, spec.in_channels, spec.resolution, spec.resolution)
    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel()))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x)
        for h in hooks:
            h.remove()
        flops = int(flop_analysis(model, x).total())
        acts = ActivationCountAnalysis(model, x)
        acts.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        activations = int(acts.total())
    params = sum(p.numel() for p in model.parameters())  # as fvcore's parameter_count
    return dict(flops=flops, params=int(params), activations=activations,
                largest=max(sizes) if sizes else activations)


def shapes(spec) -> dict:
    """:func:`trace`'s counts from the layers' shapes, for a network whose counted operations
    are all its ``nn.Conv2d`` and ``nn.Linear`` modules (ResNet-50's and MobileNetV2's): the
    network is built on the meta device (no initialisation), given zeroed memory on the CPU
    and run once on a zero image at batch 1 with a hook on each of those layers, each
    counted as fvcore counts it: a convolution's FLOPs are its output's elements times
    (in channels / groups) x kernel area, a linear layer's its output's elements times its
    inputs, and its activations its output's elements. 0.2-0.4 s where a trace takes
    0.6-1.4 s (tests/test_bases.py checks it equals the trace). The meta
    device alone would do without the memory, but its kernels run in Python, about 1 ms
    each: slower than computing."""
    import math

    import torch
    from torch import nn

    from .base import build

    with torch.device("meta"):
        model = build(spec).eval()
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            t.zero_()  # not left uninitialised: stray denormals or NaNs would slow the forward pass
    counts = {"flops": 0, "activations": 0, "largest": 0}

    def hook(module, _inputs, out) -> None:  # returns None: a hook's value would replace the output
        n = out.numel()
        per = (module.in_channels // module.groups) * math.prod(module.kernel_size) \
            if isinstance(module, nn.Conv2d) else module.in_features
        counts["flops"] += n * per
        counts["activations"] += n
        counts["largest"] = max(counts["largest"], n)

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(torch.zeros(1, spec.in_channels, spec.resolution, spec.resolution))
    finally:
        for h in hooks:
            h.remove()
    return dict(counts, params=int(sum(p.numel() for p in model.parameters())))


def counted(spec, cache_dir: str | Path | None = None) -> dict:
    """The spec's entry (:data:`FIELDS`), from the cache when counted before, else traced
    (:func:`trace`) and stored.

    Args:
        spec: a base spec (:mod:`scaling.bases`): ResNet-50, MobileNetV2 or a user's network.
        cache_dir: the folder of the cache file; by default the cache root's ``counts``.
    """
    key = cache_key(spec)
    path = cache_path(cache_dir)
    if path is None:
        if key not in _memory:
            _memory[key] = trace(spec)
        return _memory[key]
    hit = _read(path).get(key)
    if hit is not None:
        return hit
    value = trace(spec)
    _write(path, key, value)
    return value


def count(spec, cache_dir: str | Path | None = None):
    """FLOPs, parameters and activations of the spec's network, as a
    :class:`scaling.complexity.Complexity` (from the cache where counted before)."""
    from ..complexity import Complexity

    c = counted(spec, cache_dir)
    return Complexity(flops=c["flops"], params=c["params"], activations=c["activations"])


def flops(spec, cache_dir: str | Path | None = None) -> int:
    """Multiply-adds of one forward pass at batch 1 and the spec's resolution (cached)."""
    return counted(spec, cache_dir)["flops"]


def breakdown(spec, by: str = "stage"):
    """A DataFrame of FLOPs, parameters and activations per ``stage`` (the network's top-level
    modules) or per ``layer`` (each convolution and linear layer), from an fvcore trace (not
    cached: one network, as ``scaling flops`` asks). A layer's parameters are its own (batch
    norm's are in its stage's)."""
    import pandas as pd
    import torch
    from fvcore.nn import ActivationCountAnalysis
    from torch import nn

    from ..complexity import flop_analysis
    from .base import build

    if by not in ("stage", "layer"):
        raise ValueError(f"by must be 'stage' or 'layer', got {by!r}")
    model = build(spec).eval()
    x = torch.zeros(1, spec.in_channels, spec.resolution, spec.resolution)
    shapes: dict[str, tuple] = {}

    def keep_shapes(name):
        def hook(module, inputs, output) -> None:  # returns None: a hook's value would replace the output
            shapes.setdefault(name, (tuple(inputs[0].shape), tuple(output.shape)))
        return hook

    hooks = [m.register_forward_hook(keep_shapes(n))
             for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x)
        for h in hooks:
            h.remove()
        flops = flop_analysis(model, x).by_module()
        acts = ActivationCountAnalysis(model, x)
        acts.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        activations = acts.by_module()
    text = lambda s: "x".join(str(v) for v in s[1:])  # noqa: E731
    if by == "layer":
        rows = [dict(stage=n.split(".")[0], layer=n, kind="conv" if isinstance(m, nn.Conv2d) else "linear",
                     input=text(shapes[n][0]), output=text(shapes[n][1]), flops=int(flops.get(n, 0)),
                     params=sum(p.numel() for p in m.parameters()), activations=int(activations.get(n, 0)))
                for n, m in model.named_modules() if n in shapes]
        return pd.DataFrame(rows)
    rows = [dict(stage=n, layers=sum(1 for k in shapes if k == n or k.startswith(n + ".")), flops=int(flops.get(n, 0)),
                 params=sum(p.numel() for p in m.parameters()), activations=int(activations.get(n, 0)))
            for n, m in model.named_children()]
    return pd.DataFrame(rows)
