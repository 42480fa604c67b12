"""The on-disk cache of decoded splits: one entry per source, split and size cap.

Entries live in ``ROOT/data`` of the one cache root (:func:`scaling.cache.cache_root`,
``$SCALING_CACHE`` else the user cache folder; the complexity counts share it, in
``ROOT/counts``). A root that cannot be used is said once, in one warning line, and the
data are kept in memory for the run instead.

A cached split is, in the data folder, named ``NAME-SPLIT-capC-KEY``:

* ``.Spx.bin``: the images stored at side S, uint8 (n, 3, S, S), one file per stored size
  (CIFAR-10: one, ``32px``); opened memory-mapped (copy-on-write);
* ``.labels.bin``: int64 labels of all of them, in the split's order (by size, then as listed);
* ``.json``: the header, written last: the key's fields, each file's size and CRC-32,
  classes, counts per class, skipped files with reasons, build time.

KEY (:func:`scaling.digest.digest`) hashes everything the content depends on (the source's
fingerprint, the split, the cap C on the stored short side, the resize policy, the format),
so a changed source is simply a different entry. Files are written with plain writes (no mapping, so a full disk
is an :class:`NoSpace` error, never a SIGBUS) under temporary names and moved into place,
the header last: a split whose header exists is complete. Before an entry is first used
in a process, each file's size and checksum are checked against the header; an entry
that fails (truncated, from a crashed build, or damaged) is deleted and rebuilt.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..cache import cache_root, usable, warn_once
from ..files import process_alive as _alive
from .base import Split

log = logging.getLogger(__name__)

FORMAT = 2  # bump when the layout of the files changes
_verified: set[tuple] = set()  # files whose checksum this process has checked


class NoSpace(OSError):
    """The disk holding the cache is full (ENOSPC): says the folder and the space needed."""

    def __init__(self, folder: Path, needed_bytes: int):
        self.folder, self.needed_bytes = folder, needed_bytes
        super().__init__(errno.ENOSPC, f"no space left on {folder}: {needed_bytes / 1e6:,.1f} MB needed")

    def __str__(self) -> str:
        return self.strerror


# ---------------------------------------------------------------------------- the folder


def data_folder(cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The data cache folder: ``cache_dir`` itself when given, else ``ROOT/data``; None: in memory."""
    if cache_dir is None:
        return cache_root("data")
    path = Path(cache_dir).expanduser()
    why = usable(path)
    if why:
        warn_once(f"no usable data cache folder ({why}): the data is kept in memory for this run")
        return None
    return path


# ---------------------------------------------------------------------------- names


def entry_stem(name: str, split: str, cap: int, key: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "data"
    return f"{safe[:40]}-{split}-cap{cap}-{key}"


def entry_glob(name: str, split: str) -> str:
    """A glob of the headers of every cap's entry of a source's split."""
    return glob_escape(entry_stem(name, split, 0, "x").rsplit("-cap0-", 1)[0]) + "-cap*-*.json"


def _tmp(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


_TMP = re.compile(r"\.tmp-(\d+)-[0-9a-f]{8}$")


def clean_stale(root: Path, max_age_s: float = 86400.0) -> list[Path]:
    """Remove temporary files of builds whose process is gone (or older than ``max_age_s``)."""
    removed = []
    for p in root.glob("*.tmp-*"):
        m = _TMP.search(p.name)
        if not m:
            continue
        pid = int(m.group(1))
        try:
            old = time.time() - p.stat().st_mtime > max_age_s
        except OSError:
            continue
        if old or not _alive(pid):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed



@contextlib.contextmanager
def locked(root: Path | None, stem: str) -> Iterator[None]:
    """Hold the entry's file lock (several processes needing one entry build it once)."""
    if root is None:
        yield
        return
    from filelock import FileLock

    with FileLock(str(root / f"{stem}.lock")):
        yield


# ---------------------------------------------------------------------------- reading


@dataclass
class Entry:
    """An entry found in the data folder, for listing and clearing."""

    stem: str
    header: dict | None  # None: no readable header (a partial entry)
    files: list[Path]
    bytes: int
    last_used: float  # the header's modification time (touched on every use)


def _crc(path: Path) -> int:
    crc = 0
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(1 << 22)
        view = memoryview(buf)
        while n := f.readinto(buf):
            crc = zlib.crc32(view[:n], crc)
    return crc


def _check_file(path: Path, size: int, crc: int) -> str:
    """'' when the file has the header's size and checksum; else what is wrong."""
    try:
        st = path.stat()
    except OSError:
        return "missing"
    if st.st_size != size:
        return f"{st.st_size} bytes, the header says {size}"
    memo = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, crc)
    if memo in _verified:
        return ""
    if _crc(path) != crc:
        return "checksum differs from the header's"
    _verified.add(memo)
    return ""


def remove(root: Path, stem: str) -> None:
    """Delete an entry's files (header first, so that a half-deleted entry reads as absent)."""
    with contextlib.suppress(OSError):
        (root / f"{stem}.json").unlink()
    for p in root.glob(f"{glob_escape(stem)}.*"):
        if not p.name.endswith(".lock"):
            with contextlib.suppress(OSError):
                p.unlink()


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def read(root: Path, stem: str) -> tuple[Split, dict] | None:
    """A cached split and its header, or None when absent; a damaged entry is deleted (and None).

    The images are memory-mapped copy-on-write: nothing is read until it is used, and
    writing to the tensors never touches the files.
    """
    head = root / f"{stem}.json"
    try:
        header = json.loads(head.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("cache entry %s in %s has an unreadable header (%s): rebuilt", stem, root, e)
        remove(root, stem)
        return None
    try:
        if header.get("format") != FORMAT:
            return None
        files = [(p["file"], p["bytes"], p["crc32"]) for p in header["parts"]]
        files.append((header["labels"]["file"], header["labels"]["bytes"], header["labels"]["crc32"]))
        for name, size, crc in files:
            wrong = _check_file(root / name, size, crc)
            if wrong:
                log.warning("cache entry %s in %s is damaged (%s: %s): rebuilt", stem, root, name, wrong)
                remove(root, stem)
                return None
        n = header["num_images"]
        labels = np.fromfile(root / header["labels"]["file"], dtype=np.int64)
        parts = [torch.from_numpy(np.memmap(root / p["file"], dtype=np.uint8, mode="c",
                                            shape=(p["count"], 3, p["side"], p["side"])))
                 for p in header["parts"]]
        if labels.shape != (n,) or sum(p["count"] for p in header["parts"]) != n:
            raise ValueError("counts disagree")
        split = Split(images=parts, labels=torch.from_numpy(labels), classes=list(header["classes"]),
                      fingerprint=header["key"], skipped=[s["path"] for s in header["skipped"]])
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("cache entry %s in %s cannot be read (%s): rebuilt", stem, root, e)
        remove(root, stem)
        return None
    with contextlib.suppress(OSError):
        os.utime(head)  # last used: what `scaling cache --older-than` goes by
    return split, header


def entries(root: Path) -> list[Entry]:
    """The data folder's entries, complete or not, by stem."""
    groups: dict[str, list[Path]] = {}
    for p in root.iterdir() if root.is_dir() else []:
        if p.name.startswith(".") or p.name.endswith(".lock"):
            continue
        stem = p.name.split(".")[0]
        groups.setdefault(stem, []).append(p)
    out = []
    for stem, files in sorted(groups.items()):
        header, used = None, 0.0
        head = root / f"{stem}.json"
        with contextlib.suppress(OSError, ValueError):
            header = json.loads(head.read_text())
            used = head.stat().st_mtime
        size = 0
        for p in files:
            with contextlib.suppress(OSError):
                size += p.stat().st_size
                used = used or p.stat().st_mtime
        out.append(Entry(stem, header, files, size, used))
    return out


# ---------------------------------------------------------------------------- writing


class Writer:
    """Builds one cache entry: images appended per stored size, in the split's order.

    With a ``root``, into temporary files moved into place by :meth:`commit` (plain
    writes: a full disk raises :class:`NoSpace`); with ``root=None``, in memory.

    Args:
        root: the data folder, or None.
        stem: the entry's file stem (:func:`entry_stem`).
        expected: the number of images to come (for the space a full disk lacks).
        budget: in memory, the bytes it may take; past them :class:`MemoryError`.
    """

    def __init__(self, root: Path | None, stem: str, expected: int, budget: int | None = None):
        self.root, self.stem, self.expected, self.budget = root, stem, max(1, expected), budget
        self.parts: dict[int, dict] = {}  # side -> {count, crc32, file, tmp, handle | chunks}
        self.labels: list[np.ndarray] = []
        self.written = 0
        self.images = 0
        self.capped = False  # whether an image was stored smaller than its own size because of the cap
        self.started = time.perf_counter()
        if root is not None:
            clean_stale(root)

    def _fail(self, e: OSError):
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            per_image = self.written / max(1, self.images)
            needed = int(per_image * self.expected + 8 * self.expected)
            self.discard()
            raise NoSpace(self.root, needed) from None
        self.discard()
        raise e

    def add(self, images: np.ndarray, labels: np.ndarray) -> None:
        """Append uint8 (k, 3, S, S) images of one side S and their labels, in order."""
        side = images.shape[-1]
        part = self.parts.get(side)
        if part is None:
            part = self.parts[side] = dict(count=0, crc32=0, file=f"{self.stem}.{side}px.bin", chunks=[])
            if self.root is not None:
                part["tmp"] = _tmp(self.root / part["file"])
                try:
                    part["handle"] = open(part["tmp"], "xb")
                except OSError as e:
                    self._fail(e)
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if self.root is None:
            if self.budget is not None and self.written + images.nbytes > self.budget:
                per_image = (self.written + images.nbytes) / (self.images + images.shape[0])
                raise MemoryError(int(per_image * self.expected))
            part["chunks"].append(images.copy())
        else:
            view = memoryview(images).cast("B")
            part["crc32"] = zlib.crc32(view, part["crc32"])
            try:
                part["handle"].write(view)
            except OSError as e:
                self._fail(e)
        part["count"] += images.shape[0]
        part.setdefault("labels", []).append(np.asarray(labels, dtype=np.int64))
        self.written += images.nbytes
        self.images += images.shape[0]

    def commit(self, note: dict) -> tuple[Split, dict]:
        """Close the files, write labels and header, move everything into place, read it back."""
        sides = sorted(self.parts)
        labels = np.concatenate([np.concatenate(self.parts[s]["labels"]) for s in sides]) if sides else \
            np.zeros(0, np.int64)
        header = dict(note, format=FORMAT, num_images=int(len(labels)),
                      built=time.strftime("%Y-%m-%dT%H:%M:%S"),
                      build_seconds=round(time.perf_counter() - self.started, 3),
                      parts=[dict(side=s, count=self.parts[s]["count"], file=self.parts[s]["file"],
                                  bytes=self.parts[s]["count"] * 3 * s * s, crc32=self.parts[s]["crc32"])
                             for s in sides])
        if self.root is None:
            parts = [torch.from_numpy(np.concatenate(self.parts[s]["chunks"])) for s in sides]
            split = Split(images=parts, labels=torch.from_numpy(labels), classes=list(note["classes"]),
                          fingerprint=note["key"], skipped=[s["path"] for s in note["skipped"]])
            return split, header
        root = self.root
        try:
            for s in sides:
                f = self.parts[s].pop("handle")
                f.flush()
                os.fsync(f.fileno())
                f.close()
            labels_file = f"{self.stem}.labels.bin"
            labels_tmp = _tmp(root / labels_file)
            self.parts[-1] = dict(tmp=labels_tmp)  # so that discard removes it
            data = labels.tobytes()
            with open(labels_tmp, "xb") as f:
                f.write(data)
            header["labels"] = dict(file=labels_file, bytes=len(data), crc32=zlib.crc32(data))
            head_tmp = _tmp(root / f"{self.stem}.json")
            self.parts[-2] = dict(tmp=head_tmp)
            head_tmp.write_text(json.dumps(header, indent=1))
            for s in sides:
                os.replace(self.parts[s]["tmp"], root / self.parts[s]["file"])
            os.replace(labels_tmp, root / labels_file)
            os.replace(head_tmp, root / f"{self.stem}.json")  # last: marks the entry complete
        except OSError as e:
            self._fail(e)
        out = read(root, self.stem)
        if out is None:
            raise OSError(f"cache entry {self.stem} in {root} could not be read back")
        return out

    def discard(self) -> None:
        """Close and remove the temporary files (after an error)."""
        for part in self.parts.values():
            f = part.pop("handle", None)
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
            if part.get("tmp") is not None:
                with contextlib.suppress(OSError):
                    part["tmp"].unlink()
        self.parts = {}
