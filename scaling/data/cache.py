"""The on-disk cache of decoded splits: one uint8 array, its labels and a JSON note per split.

A cached split is three files in the cache folder, named ``NAME-SPLIT-Rpx-KEY``:

* ``.images.npy``: uint8 (N, 3, R, R), opened memory-mapped (copy-on-write);
* ``.labels.npy``: int64 (N,);
* ``.json``: the key's fields, classes, counts per class, skipped files with reasons,
  build time.

KEY hashes everything the content depends on (the source's fingerprint, the split, the
resolution, the resize policy, the format), so a changed source or policy is simply a
different entry; stale entries are never read (delete the folder to reclaim space).
Each file is written under a temporary name and moved into place with ``os.replace``,
the JSON last: a split whose JSON exists is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from pathlib import Path

import numpy as np
import torch

from .base import Split

FORMAT = 1  # bump when the layout of the files changes
ENV = "SCALING_CACHE"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$SCALING_CACHE``, else ``~/.cache/scaling/data``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    return Path.home() / ".cache" / "scaling" / "data"


def digest(*parts, length: int = 20) -> str:
    """A short stable hex hash of JSON-serialisable parts."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def entry_stem(name: str, split: str, resolution: int, key: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "data"
    return f"{safe[:40]}-{split}-{resolution}px-{key}"


def _tmp(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def read(root: Path, stem: str) -> tuple[Split, dict] | None:
    """A cached split and its note, or None when absent or incomplete.

    The images are memory-mapped copy-on-write: nothing is read until it is used, and
    writing to the tensor never touches the file.
    """
    note_path = root / f"{stem}.json"
    try:
        note = json.loads(note_path.read_text())
        images = np.load(root / f"{stem}.images.npy", mmap_mode="c")
        labels = np.load(root / f"{stem}.labels.npy")
    except (OSError, ValueError):
        return None
    r, n = note.get("resolution"), note.get("num_images")
    if note.get("format") != FORMAT or images.shape != (n, 3, r, r) or labels.shape != (n,):
        return None
    split = Split(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels.astype(np.int64, copy=False)),
        classes=list(note["classes"]),
        fingerprint=note["key"],
        skipped=[s["path"] for s in note["skipped"]],
    )
    return split, note


class Writer:
    """Builds one cache entry in temporary files; :meth:`commit` moves them into place.

    Args:
        root: the cache folder (created if missing).
        stem: the entry's file stem (:func:`entry_stem`).
        n: number of images to make room for.
        resolution: image size R.
    """

    def __init__(self, root: Path, stem: str, n: int, resolution: int):
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.stem, self.resolution = root, stem, resolution
        self.final = {k: root / f"{stem}.{k}" for k in ("images.npy", "labels.npy", "json")}
        self.images_path = _tmp(self.final["images.npy"])
        self.images = np.lib.format.open_memmap(
            self.images_path, mode="w+", dtype=np.uint8, shape=(n, 3, resolution, resolution)
        )
        self.labels = np.zeros(n, dtype=np.int64)
        self.started = time.perf_counter()

    def keep(self, mask: np.ndarray) -> None:
        """Drop the rows where ``mask`` is False (files that could not be decoded)."""
        if mask.all():
            return
        old_path, old = self.images_path, self.images
        self.images_path = _tmp(self.final["images.npy"])
        rows = np.flatnonzero(mask)
        self.images = np.lib.format.open_memmap(
            self.images_path, mode="w+", dtype=np.uint8, shape=(len(rows), *old.shape[1:])
        )
        step = 4096
        for lo in range(0, len(rows), step):
            self.images[lo : lo + step] = old[rows[lo : lo + step]]
        self.labels = self.labels[rows]
        del old
        old_path.unlink(missing_ok=True)

    def commit(self, note: dict) -> tuple[Split, dict]:
        """Write labels and note, move everything into place, and read the entry back."""
        self.images.flush()
        del self.images
        labels_tmp = _tmp(self.final["labels.npy"])
        with open(labels_tmp, "wb") as f:
            np.save(f, self.labels)
        note = dict(note, format=FORMAT, num_images=int(len(self.labels)), resolution=self.resolution,
                    built=time.strftime("%Y-%m-%dT%H:%M:%S"),
                    build_seconds=round(time.perf_counter() - self.started, 3))
        note_tmp = _tmp(self.final["json"])
        note_tmp.write_text(json.dumps(note, indent=1))
        os.replace(self.images_path, self.final["images.npy"])
        os.replace(labels_tmp, self.final["labels.npy"])
        os.replace(note_tmp, self.final["json"])  # last: marks the entry complete
        out = read(self.root, self.stem)
        if out is None:
            raise OSError(f"cache entry {self.stem} in {self.root} could not be read back")
        return out

    def discard(self) -> None:
        """Remove the temporary files (after an error)."""
        if hasattr(self, "images"):
            del self.images
        self.images_path.unlink(missing_ok=True)
