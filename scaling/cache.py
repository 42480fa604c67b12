"""The one cache root, shared by every cache of the package.

The root (:func:`cache_root`) is ``$SCALING_CACHE``, else the platform's user cache folder
(``$XDG_CACHE_HOME/scaling`` or ``~/.cache/scaling`` on Linux, through platformdirs). The
data cache lives in ``ROOT/data`` (:mod:`scaling.data.cache`), the complexity counts in
``ROOT/counts`` (:mod:`scaling.complexity`); ``scaling cache`` lists and clears both. A root
that cannot be used (a file, a HOME that is empty or missing, a folder that cannot be
written) is said once, in one warning line, and the caches are kept in memory for the run
instead. Names inside it are digests (:mod:`scaling.digest`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "SCALING_CACHE"
_warned: set[str] = set()


def warn_once(text: str) -> None:
    """Log ``text`` as a warning, once per process."""
    if text not in _warned:
        _warned.add(text)
        log.warning("%s", text)


def _default_root() -> tuple[Path | None, str]:
    """The platform's user cache folder, or None and why there is none."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(xdg):  # platformdirs then uses ~/.cache: HOME must be a real folder
        home = os.environ.get("HOME")
        if home is not None and not home.strip():
            return None, "HOME is empty"
        if home is not None and (not os.path.isabs(home) or not os.path.isdir(home)):
            return None, f"HOME={home} is not a folder"
    import platformdirs

    return Path(platformdirs.user_cache_dir("scaling", appauthor=False)), ""


def usable(path: Path) -> str:
    """'' when ``path`` is (or can be made) a writable folder; else what is wrong with it."""
    if path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError as e:
        return f"{path} cannot be written ({e.strerror or e})"
    return ""


def resolve_root(kind: str = "") -> tuple[Path | None, str]:
    """(the cache folder, '') or (None, what is wrong), without warning; see :func:`cache_root`."""
    env = os.environ.get(ENV)
    if env:
        root, why, name = Path(env).expanduser(), "", f"{ENV}={env}"
    else:
        (root, why), name = _default_root(), "the user cache folder"
    path = root / kind if root is not None and kind else root
    if path is not None:
        why = usable(root) or usable(path)
    return (None, f"{name}: {why}") if why else (path, "")


def cache_root(kind: str = "") -> Path | None:
    """The cache folder (``kind``: ``data``, ``counts`` or '' for the root), or None: keep it in memory.

    ``$SCALING_CACHE`` names the root; else the platform's user cache folder. When the
    folder cannot be used, one warning says why and that the cache is kept in memory.
    """
    path, why = resolve_root(kind)
    if why:
        warn_once(f"no usable cache folder ({why}): the {kind or 'data and counts'} cache is kept in "
                  f"memory for this run; set {ENV} to a writable folder to keep it")
        return None
    return path
