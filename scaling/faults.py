"""Faults of the machine under a study, each told in one line: a full disk, a read-only folder,
a damaged storage file.

Errors reach us wrapped (Optuna's StorageInternalError around SQLAlchemy's error around
sqlite3's, an AssertionError raised while Optuna handled one of them); :func:`storage_fault`
walks the chain of causes and names the fault and the folder or file it is about.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
from pathlib import Path

from .study import StudyError

_FULL = ("database or disk is full", "disk is full", "no space left")
_READ_ONLY = ("readonly database", "read-only", "unable to open database file")
_DAMAGED = ("database disk image is malformed", "file is not a database", "malformed database schema")


class NoSpace(StudyError):
    """No space left on a folder: the search stops (exit code 2); its trial is queued again by the next run."""

    def __init__(self, folder: Path | None, needed_bytes: int | None = None):
        self.folder = folder
        where = str(folder) if folder is not None else "the disk"
        free = f"{needed_bytes / 1e6:,.1f} MB needed" if needed_bytes else ""
        with contextlib.suppress(OSError, TypeError):
            free += ("; " if free else "") + f"{shutil.disk_usage(folder).free / 2**20:.0f} MB free"
        super().__init__(f"no space left on {where}: {free + '; ' if free else ''}free some and run the same "
                         "command (the trial that stopped is queued again)")


class StorageFault(StudyError):
    """A storage that cannot be written or read (exit code 2)."""


def causes(e: BaseException):
    """``e`` and what it was raised from or during, each once."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _text(e: BaseException) -> str:
    return str(e).lower()


def sqlite_file(url: str | None) -> Path | None:
    """The file of a ``sqlite:///PATH`` URL, else None."""
    if not url or not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):].split("?", 1)[0]
    if path.startswith("file:"):
        path = path[len("file:"):]
    return Path(path) if path and path != ":memory:" else None


def no_space(e: BaseException, folder: Path | None = None) -> NoSpace | None:
    """The full disk behind ``e`` (an OSError ENOSPC anywhere in its chain, or SQLite's
    "database or disk is full"), on the file's folder or else ``folder``; None for other errors."""
    for x in causes(e):
        if isinstance(x, NoSpace):
            return x
        if isinstance(x, OSError) and x.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            if getattr(x, "folder", None) is not None:  # the data cache's: its folder and the space it needed
                return NoSpace(Path(x.folder), getattr(x, "needed_bytes", None))
            name = x.filename or x.filename2
            return NoSpace(Path(name).parent if name else folder)
        if not isinstance(x, OSError) and any(m in _text(x) for m in _FULL):
            return NoSpace(folder)
    return None


def storage_fault(e: BaseException, url: str | None, name: str | None = None) -> StudyError | None:
    """The machine's fault behind ``e`` as one line (full disk, read-only, damaged storage
    file), or None where ``e`` is another error. ``name``: the study (default: the SQLite
    file's folder, studies/NAME/optuna.db)."""
    db = sqlite_file(url)
    name = name or (db.parent.name if db is not None else "NAME")
    folder = db.parent if db is not None else None
    full = no_space(e, folder)
    if full is not None:
        return full
    for x in causes(e):
        if isinstance(x, OSError) and x.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            where = Path(x.filename).parent if x.filename else folder
            return StorageFault(f"cannot write in {where}: {x.strerror}; make it writable, or copy the study folder "
                                "elsewhere and pass --studies-dir")
        text = _text(x)
        if db is not None and any(m in text for m in _READ_ONLY):
            return StorageFault(f"cannot write {db}: {folder} or the file is read-only ({_first(x)}); make it "
                                "writable, or copy the study folder elsewhere and pass --studies-dir")
        if any(m in text for m in _DAMAGED):
            what = str(db) if db is not None else url
            return StorageFault(f"the study storage {what} is damaged ({_first(x)}); `scaling study repair {name}` "
                                "rebuilds it from what can still be read (the damaged file is kept beside it)")
    return None


def _first(e: BaseException) -> str:
    """The driver's own message: ``file is not a database``, without SQLAlchemy's wrapping."""
    orig = getattr(e, "orig", None)
    text = str(orig if orig is not None else e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@contextlib.contextmanager
def told(url: str | None, name: str | None = None):
    """Turn a machine's fault inside the block into its one-line StudyError."""
    try:
        yield
    except StudyError:
        raise
    except Exception as e:  # noqa: BLE001 - only the faults named above are translated
        fault = storage_fault(e, url, name)
        if fault is None:
            raise
        raise fault from None
