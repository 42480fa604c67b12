"""Files written atomically (a reader sees the old file or the new one) with the mode the umask gives,
the temporary files that killed writers left behind, and whether a process still runs.

Every file the tool writes whole goes through :func:`atomic_path` (or :func:`write_text_atomic`):
results and snapshots, the study definition, reports, checkpoints, the count cache.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

STALE_S = 24 * 3600  # a temporary file this old is stale even where its process id is alive (reused)


def umask() -> int:
    """The process's umask (reading it means setting it: it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` (``.NAME.PID.XXXX.tmp``) to write; on success it
    replaces ``path``, with mode 0666 less the umask (as ``open(path, "w")`` would give; mkstemp's
    own is 0600); on failure it is removed. A temporary file that a killed writer of ``path``
    left behind is removed first (:func:`clean_stale`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def clean_stale(path: Path) -> list[Path]:
    """Remove the temporary files that killed writers of ``path`` left (``.NAME.PID.XXXX.tmp``
    whose process is gone, or any such file older than a day); the ones removed."""
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        try:
            age = time.time() - tmp.stat().st_mtime
            if not (pid.isdigit() and process_alive(int(pid))) or age > STALE_S:
                tmp.unlink()
                removed.append(tmp)
        except OSError:  # gone already, or not ours to remove
            continue
    return removed


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (this one, or another user's, counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
