"""Pretrained weights from local files of this and other EfficientNet implementations."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from .checkpoint import read_file, weights_of
from .model import EfficientNet
from .spec import NetworkSpec, canonical_name, spec_for

SOURCES = ("scaling", "efficientnet_pytorch", "torchvision", "timm", "timm_tf")

# The first key of each layout, by which "auto" tells them apart.
_MARKERS = {
    "stem.conv.weight": "scaling",
    "_conv_stem.weight": "efficientnet_pytorch",
    "features.0.0.weight": "torchvision",
    "conv_stem.weight": "timm",
}

# Wrappers that training code leaves on every key (DataParallel, torch.compile).
_KEY_PREFIXES = ("module.", "_orig_mod.")

# torchvision's efficientnet_b0..b4 use BatchNorm2d's default eps; b5..b7 use 1e-3.
_TORCHVISION_DEFAULT_EPS = {f"efficientnet-b{i}" for i in range(5)}

_MAX_LISTED = 8  # problems quoted in a mismatch error


def load_pretrained(name, weights_path, num_classes: int = 1000, in_channels: int = 3,
                    source: str = "auto", **overrides) -> EfficientNet:
    """Build a network and fill it with weights read from a local file.

    The file is read with ``torch.load(..., map_location="cpu", weights_only=True)``
    (:func:`scaling.checkpoint.read_file`); it may hold a plain state dict, a dict with a
    ``"state_dict"``, ``"model"`` or ``"state_dict_ema"`` entry, or a weights file of ours
    (:meth:`EfficientNet.save`, or ``weights.pt`` of a training run).
    Every tensor of the file must map onto the network and every shape must match,
    with two exceptions: where ``num_classes`` differs from the file's classifier the
    new network keeps its fresh classifier, and where ``in_channels`` differs from the
    file's stem it keeps a fresh stem convolution (with a warning).

    Args:
        name: the network, such as ``efficientnet-b0``, ``b0`` or ``tf_efficientnet_b0``.
            For ``source="scaling"`` the spec comes from the file and ``name`` (if a
            known network) is only checked against it.
        weights_path: the local file.
        num_classes: classes of the new classifier.
        in_channels: input channels of the new stem.
        source: the layout of the file: ``"scaling"``, ``"efficientnet_pytorch"``,
            ``"torchvision"``, ``"timm"``, ``"timm_tf"`` or ``"auto"`` (from its keys;
            timm's layout counts as ``"timm_tf"`` where ``name`` starts with ``tf_`` or
            the file name contains ``tf_efficientnet``).
        **overrides: spec fields; ``padding`` and ``bn_eps`` replace the source's own.

    Returns:
        The network, in training mode like any new module.

    Raises:
        FileNotFoundError: where ``weights_path`` is not a file.
        ValueError: for an unknown source or network, a file of no known layout, or
            weights that do not fit the network (naming the first offending keys).
    """
    path = Path(weights_path).expanduser()
    if source not in SOURCES + ("auto",):
        raise ValueError(f"unknown source {source!r}; known: auto, {', '.join(SOURCES)}")
    tf_hint = _tf_hint(name, path)
    state, saved_spec = _read(path)
    if source == "auto":
        source = detect_source(state, tf=tf_hint)
        if source is None:
            raise ValueError(
                f"{path}: cannot tell the layout of the weights (first keys: "
                f"{', '.join(list(state)[:3])}); pass source= one of {', '.join(SOURCES)}"
            )

    if source == "scaling":
        spec = _scaling_spec(name, saved_spec, path, num_classes, in_channels, overrides)
    else:
        fields = dict(_source_fields(source, name))
        fields.update(overrides)
        spec = spec_for(_base_name(name), num_classes=num_classes, in_channels=in_channels, **fields)

    model = EfficientNet(spec)
    model.load_state_dict(_map_state(model, state, source, path))
    return model


def detect_source(state: Mapping, tf: bool = False) -> str | None:
    """The layout of a state dict, or ``None`` where it is none of the known ones.

    Args:
        state: the state dict (wrapper prefixes already stripped).
        tf: count timm's layout as ``"timm_tf"``.
    """
    for key, source in _MARKERS.items():
        if key in state:
            return "timm_tf" if source == "timm" and tf else source
    return None


# ---------------------------------------------------------------------------- reading


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The state dict of a file, wrappers removed, and the spec it carries (if any)."""
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {str(path)!r}")
    try:
        obj = read_file(path)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} holds more than tensors and plain containers ({str(err).splitlines()[0]}); "
            "it is not read, since that would run code from the file: save its state_dict() instead"
        ) from None
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")

    spec = None
    ours = weights_of(obj, path)  # a weights file of ours: its state dict is checked below like any other
    if ours is not None:
        state, spec = ours.state_dict, ours.spec
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        state = next((obj[k] for k in ("state_dict", "model", "state_dict_ema")
                      if isinstance(obj.get(k), Mapping)), None)
    if not isinstance(state, Mapping) or not state:
        raise ValueError(f"{path}: no state dict found (top-level keys: {', '.join(map(str, obj))})")

    bad = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise ValueError(f"{path}: entry {bad!r} is a {type(state[bad]).__name__}, not a tensor")
    state = dict(state)
    for prefix in _KEY_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state, (dict(spec) if spec is not None else None)


def _tf_hint(name, path: Path) -> bool:
    """Whether the name or the file name mark TensorFlow-ported timm weights."""
    n = name.strip().lower() if isinstance(name, str) else ""
    f = path.name.lower()
    return n.startswith(("tf_", "tf-")) or "tf_efficientnet" in f or "tf-efficientnet" in f


def _base_name(name) -> str:
    """The network name without a timm pretrained tag (``tf_efficientnet_b0.ns_jft_in1k``)."""
    if not isinstance(name, str):
        raise ValueError(f"a network name is needed to load these weights, got {name!r}")
    return name.split(".", 1)[0]


# ---------------------------------------------------------------------------- specs


def _source_fields(source: str, name) -> dict:
    """Padding and batch-norm eps of the implementation that wrote the weights."""
    if source in ("efficientnet_pytorch", "timm_tf"):
        return {"padding": "same", "bn_eps": 1e-3}
    if source == "timm":
        return {"padding": "symmetric", "bn_eps": 1e-5}
    # torchvision
    eps = 1e-5 if canonical_name(_base_name(name)) in _TORCHVISION_DEFAULT_EPS else 1e-3
    return {"padding": "symmetric", "bn_eps": eps}


def _scaling_spec(name, saved: dict | None, path: Path, num_classes: int, in_channels: int,
                  overrides: dict) -> NetworkSpec:
    """The spec of one of our checkpoints: from the file, else from the name."""
    if saved is None:  # a bare state dict in our layout
        return spec_for(_base_name(name), num_classes=num_classes, in_channels=in_channels, **overrides)
    spec = NetworkSpec.from_dict(saved)
    _check_name(name, spec, path)
    if num_classes != spec.num_classes:
        warnings.warn(
            f"{path} was saved with {spec.num_classes} classes; num_classes={num_classes} "
            "gives a fresh classifier",
            stacklevel=3,
        )
    return spec.replace(num_classes=num_classes, in_channels=in_channels, **overrides)


def _check_name(name, spec: NetworkSpec, path: Path) -> None:
    """Raise where ``name`` is a known network that the saved spec is not."""
    if not isinstance(name, str) or not name.strip() or name == spec.name:
        return
    try:
        wanted = spec_for(_base_name(name))
    except ValueError:
        return  # not a named network: nothing to check against
    shape = lambda s: (s.stem_width, tuple(b.encode() for b in s.stages()), s.head_width)  # noqa: E731
    if shape(wanted) != shape(spec):
        raise ValueError(
            f"{path} holds {spec.name or 'a network'} ({spec.architecture_key()}), "
            f"not {wanted.name} ({wanted.architecture_key()})"
        )


# ---------------------------------------------------------------------------- key maps


def _module_map(model: EfficientNet, source: str) -> dict[str, str]:
    """Our module names mapped to the source's, for every module that holds state."""
    if source == "scaling":
        return {n: n for n, m in model.named_modules() if n and not list(m.children())}

    blocks = list(model.blocks)
    m: dict[str, str] = {}
    if source == "efficientnet_pytorch":
        m.update({"stem.conv": "_conv_stem", "stem.bn": "_bn0", "head.conv": "_conv_head",
                  "head.bn": "_bn1", "classifier": "_fc"})
        parts = {"expand.conv": "_expand_conv", "expand.bn": "_bn0",
                 "depthwise.conv": "_depthwise_conv", "depthwise.bn": "_bn1",
                 "se.reduce": "_se_reduce", "se.expand": "_se_expand",
                 "project.conv": "_project_conv", "project.bn": "_bn2"}
        for i in range(len(blocks)):
            m.update({f"blocks.{i}.{ours}": f"_blocks.{i}.{theirs}" for ours, theirs in parts.items()})
        return m

    stages = model.stage_slices()
    if source == "torchvision":
        m.update({"stem.conv": "features.0.0", "stem.bn": "features.0.1",
                  "head.conv": f"features.{len(stages) + 1}.0",
                  "head.bn": f"features.{len(stages) + 1}.1", "classifier": "classifier.1"})
        for s, sl in enumerate(stages):
            for j, i in enumerate(range(sl.start, sl.stop)):
                prefix, k = f"features.{s + 1}.{j}.block", 0
                for part in ("expand", "depthwise", "se", "project"):
                    if getattr(blocks[i], part) is None:
                        continue
                    if part == "se":
                        m[f"blocks.{i}.se.reduce"] = f"{prefix}.{k}.fc1"
                        m[f"blocks.{i}.se.expand"] = f"{prefix}.{k}.fc2"
                    else:
                        m[f"blocks.{i}.{part}.conv"] = f"{prefix}.{k}.0"
                        m[f"blocks.{i}.{part}.bn"] = f"{prefix}.{k}.1"
                    k += 1
        return m

    # timm, timm_tf
    m.update({"stem.conv": "conv_stem", "stem.bn": "bn1", "head.conv": "conv_head",
              "head.bn": "bn2", "classifier": "classifier"})
    separable = {"depthwise.conv": "conv_dw", "depthwise.bn": "bn1", "project.conv": "conv_pw",
                 "project.bn": "bn2"}
    inverted = {"expand.conv": "conv_pw", "expand.bn": "bn1", "depthwise.conv": "conv_dw",
                "depthwise.bn": "bn2", "project.conv": "conv_pwl", "project.bn": "bn3"}
    for s, sl in enumerate(stages):
        for j, i in enumerate(range(sl.start, sl.stop)):
            parts = separable if blocks[i].expand is None else inverted
            parts = {**parts, "se.reduce": "se.conv_reduce", "se.expand": "se.conv_expand"}
            m.update({f"blocks.{i}.{ours}": f"blocks.{s}.{j}.{theirs}" for ours, theirs in parts.items()})
    return m


def _map_state(model: EfficientNet, state: dict[str, torch.Tensor], source: str,
               path: Path) -> dict[str, torch.Tensor]:
    """Our full state dict with the file's tensors in place; raise naming any misfit."""
    modules = _module_map(model, source)
    ours = model.state_dict()
    key_map = {}
    for key in ours:
        module, leaf = key.rsplit(".", 1)
        if module not in modules:
            raise ValueError(f"no {source} counterpart for our {key!r}")
        key_map[key] = f"{modules[module]}.{leaf}"

    keep_fresh = set()
    head_w, stem_w = key_map["classifier.weight"], key_map["stem.conv.weight"]
    if head_w in state and state[head_w].ndim == 2 and state[head_w].shape[0] != model.spec.num_classes:
        keep_fresh |= {"classifier.weight", "classifier.bias"}
    if stem_w in state and state[stem_w].ndim == 4 and state[stem_w].shape[1] != model.spec.in_channels:
        keep_fresh.add("stem.conv.weight")
        warnings.warn(
            f"in_channels={model.spec.in_channels} differs from the {state[stem_w].shape[1]} "
            f"input channels of {path.name}: the stem convolution keeps its fresh initialisation",
            stacklevel=4,
        )

    mismatched, missing, used = [], [], set()
    out = dict(ours)
    for key, target in ours.items():
        theirs = key_map[key]
        if theirs not in state:
            # Checkpoints older than PyTorch 0.4.1 lack the BN batch counters.
            if not key.endswith("num_batches_tracked"):
                missing.append(f"missing key {theirs!r} (for our {key!r})")
            continue
        used.add(theirs)
        value = state[theirs]
        if key in keep_fresh:
            continue
        if value.shape != target.shape:
            mismatched.append(
                f"shape mismatch at {theirs!r} (our {key!r}): {tuple(value.shape)} in the file, "
                f"{tuple(target.shape)} expected"
            )
            continue
        out[key] = value
    unexpected = [f"unexpected key {k!r}" for k in state if k not in used]

    problems = mismatched + missing + unexpected
    if problems:
        more = f"; ... {len(problems)} problems in all" if len(problems) > _MAX_LISTED else ""
        raise ValueError(
            f"{path.name} does not fit {model.spec.name or 'the network'} as {source} weights: "
            + "; ".join(problems[:_MAX_LISTED]) + more
        )
    return out
