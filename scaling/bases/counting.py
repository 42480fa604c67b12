"""FLOPs of a base network, counted by tracing it with fvcore, and cached on disk.

:func:`flops` builds the spec's network, traces it at batch 1 and the spec's resolution and
counts it with :func:`scaling.complexity.flop_analysis`: multiply-adds of convolutions,
linear layers and matrix products, one multiply-add being one FLOP, batch norm, pooling and
element-wise operations not counted, the unit :mod:`scaling.complexity` reports for B0 in.
A trace takes seconds (ResNet-50 at 224 px), so each count is kept in one JSON file in the
counts folder of the cache root (``ROOT/counts/bases-vN.json``, listed and cleared by
``scaling cache``), keyed by a digest of the network the spec builds (two specs that round
to the same network share an entry) and of what is counted; a grid counts in seconds the
second time. Without a usable cache root the counts are kept in memory for the run.
"""

from __future__ import annotations

import json
from pathlib import Path

from .networks import BaseSpec, build

VERSION = 1  # bump when the layout of the cache file or how a base is traced changes

_memory: dict[str, int] = {}  # the counts of this run, where there is no cache folder


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


def cache_key(spec: BaseSpec) -> str:
    """``KIND-DIGEST``: the base and a digest of the network it builds and of what is counted."""
    return f"{spec.kind}-{_digest(spec.architecture(), VERSION, _count_version())}"


def cache_path(cache_dir: str | Path | None = None) -> Path | None:
    """The cache file in ``cache_dir``, else in the cache root's counts folder; None: in memory."""
    folder = Path(cache_dir) if cache_dir is not None else _counts_folder()
    return folder / f"bases-v{VERSION}.json" if folder is not None else None


def _read(path: Path) -> dict[str, int]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, int)} if isinstance(data, dict) else {}


def _write(path: Path, key: str, value: int) -> None:
    from ..files import write_text_atomic

    data = _read(path)  # re-read: keep what other processes added since
    data[key] = value
    try:
        write_text_atomic(path, json.dumps(data, sort_keys=True, indent=0))
    except OSError:
        pass  # a cache that cannot be written is not an error


def trace(spec: BaseSpec) -> int:
    """Build the network, trace it at batch 1 and count its FLOPs (no cache)."""
    import importlib
    import warnings

    import torch

    with warnings.catch_warnings():  # fvcore's import touches the deprecated torch.jit.script
        warnings.simplefilter("ignore", FutureWarning)
        importlib.import_module("fvcore.nn")
    from ..complexity import flop_analysis

    model = build(spec).eval()
    x = torch.zeros(1, 3, spec.resolution, spec.resolution)
    with torch.no_grad():
        return int(flop_analysis(model, x).total())


def flops(spec: BaseSpec, cache_dir: str | Path | None = None) -> int:
    """Multiply-adds of one forward pass at batch 1 and the spec's resolution, from the cache
    when counted before, else traced (:func:`trace`) and stored.

    Args:
        spec: a :class:`~scaling.bases.ResNetSpec` or :class:`~scaling.bases.MobileNetV2Spec`.
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
