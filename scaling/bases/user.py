"""A user's network as a base: ``module:function``, called with ``width=`` and ``depth=`` (and
``num_classes=`` where it takes it), returning an ``nn.Module``.

:class:`UserSpec` holds the reference and the multipliers; the network is whatever the
function builds for them, so its FLOPs are counted by tracing it
(:func:`scaling.bases.counting.count`, cached on disk by the spec and the source of the
function's module). :func:`load_function` finds the function and checks its signature,
each refusal one line (:class:`BaseError`).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

from torch import nn

KIND = "user"


class BaseError(ValueError):
    """A base network that cannot be used: an unknown name, a module that does not import, a
    missing function or one of the wrong signature (one line; exit code 2 at the command line)."""


def split_reference(ref: str) -> tuple[str, str]:
    """``"pkg.mod:function"`` as ``("pkg.mod", "function")``.

    Raises:
        BaseError: not of the form module:function.
    """
    module, sep, function = ref.partition(":")
    if not sep or not module.strip() or not function.strip() or ":" in function:
        raise BaseError(f"base {ref!r}: a user's network is given as module:function, such as mynets:tiny")
    return module.strip(), function.strip()


def _import(module: str, ref: str):
    if os.getcwd() not in sys.path and "" not in sys.path:  # `scaling` the script: the working folder, as python -m
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - any failure of the user's import is theirs to see, in one line
        raise BaseError(f"base {ref!r}: cannot import module {module!r} ({type(e).__name__}: {e})") from None


def takes(fn: Callable, name: str) -> bool:
    """Whether ``fn`` accepts the keyword argument ``name`` (by name or through ``**kwargs``)."""
    params = inspect.signature(fn).parameters.values()
    return any(p.kind == p.VAR_KEYWORD or (p.name == name and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
               for p in params)


def load_function(ref: str) -> Callable:
    """The function ``ref`` (``module:function``) names, checked: it imports, exists, is callable
    and takes ``width`` and ``depth`` keyword arguments.

    Raises:
        BaseError: one line saying which of these fails.
    """
    module, name = split_reference(ref)
    mod = _import(module, ref)
    fn = getattr(mod, name, None)
    if fn is None:
        raise BaseError(f"base {ref!r}: module {module!r} has no function {name!r}")
    if not callable(fn):
        raise BaseError(f"base {ref!r}: {name!r} is not a function")
    try:
        ok = takes(fn, "width") and takes(fn, "depth")
    except (TypeError, ValueError):  # no signature to read
        ok = False
    if not ok:
        raise BaseError(f"base {ref!r}: {name} must take width= and depth= keyword arguments "
                        "(and num_classes= where it can)")
    return fn


def source_digest(ref: str) -> str:
    """A digest of the source file of ``ref``'s module ('' where it has none): counts cached
    for one version of the user's code are not read for another."""
    from ..digest import digest_text

    module, _ = split_reference(ref)
    mod = sys.modules.get(module) or _import(module, ref)
    path = getattr(mod, "__file__", None)
    try:
        return digest_text(Path(path).read_bytes(), 16) if path else ""
    except OSError:
        return ""


@dataclass(frozen=True)
class UserSpec:
    """A user's network ``function`` (``module:function``) at width and depth multipliers, a
    resolution and a number of classes.

    Raises:
        ValueError: a reference not of the form module:function, a width or depth that is not
            a positive finite number, a resolution or class count that is not a positive integer.
    """

    kind: ClassVar[str] = KIND
    in_channels: ClassVar[int] = 3

    function: str
    width: float = 1.0
    depth: float = 1.0
    resolution: int = 224
    num_classes: int = 1000
    name: str = ""

    def __post_init__(self) -> None:
        split_reference(self.function)
        for what, v in (("width", self.width), ("depth", self.depth)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                raise ValueError(f"{self.function}: {what} must be a positive finite number, got {v!r}")
        for what, v in (("resolution", self.resolution), ("num_classes", self.num_classes)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{self.function}: {what} must be a positive integer, got {v!r}")

    @property
    def base(self) -> str:
        return self.function

    def architecture(self) -> dict:
        """What the network depends on: the function and what it is called with (the multipliers
        to 8 decimals, so that the same multiplier reached two ways is one network)."""
        return dict(kind=KIND, function=self.function, width=round(float(self.width), 8),
                    depth=round(float(self.depth), 8), resolution=self.resolution, num_classes=self.num_classes)

    def architecture_key(self) -> str:
        from ..digest import digest

        short = split_reference(self.function)[1]
        return f"{short}_w{self.width:.4g}_d{self.depth:.4g}_r{self.resolution}_{digest(self.architecture(), length=8)}"

    def code_digest(self) -> str:
        """The digest of the function's module source: the count cache's key holds it."""
        return source_digest(self.function)

    def replace(self, **changes) -> "UserSpec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dict(kind=KIND, **dataclasses.asdict(self))


def build(spec: UserSpec) -> nn.Module:
    """The network the user's function builds for ``spec``.

    Raises:
        BaseError: the function cannot be loaded, or returns something other than an nn.Module.
    """
    fn = load_function(spec.function)
    kwargs = dict(width=spec.width, depth=spec.depth)
    if takes(fn, "num_classes"):
        kwargs["num_classes"] = spec.num_classes
    model = fn(**kwargs)
    if not isinstance(model, nn.Module):
        raise BaseError(f"base {spec.function!r}: returned {type(model).__name__}, not a torch.nn.Module")
    return model
