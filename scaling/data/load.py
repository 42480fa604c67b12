"""`load_data`: the default data set or a folder/archive, decoded once into one cache per source.

The cache holds each image once, at its own size (large images capped, see
:func:`cap_for`), whatever resolution a trial asks for: :class:`~.batches.Batches` cuts
the batches at that resolution on the device. Before the images are read, what they
take in memory is checked against what there is (:func:`memory_available`): a data set
that cannot fit is refused in one line saying what would fit, never killed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

import numpy as np
import torch

from ..digest import digest
from . import cache, synthetic
from .base import DataError, DataSet, Split
from .decode import POLICY, build
from .folder import Listing, open_source

log = logging.getLogger(__name__)

DEFAULT_SIZES = {"train": 5000, "val": 1000}
DEFAULT_CLASSES = 10
SPLITS = ("train", "val")
MEMORY_ENV = "SCALING_MEMORY_LIMIT"
FOLDER_CAP = 256  # the smallest cap of a folder's cache: photos are kept at up to 256 px at least
CAPS = (32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)


def cap_for(resolution: int, floor: int = 32) -> int:
    """The stored side's cap for a need of ``resolution`` px: the first of :data:`CAPS` from
    ``floor`` that holds it (beyond them, the next multiple of 1024)."""
    for c in CAPS:
        if c >= max(resolution, floor):
            return c
    return -(-int(resolution) // 1024) * 1024


def load_data(
    source: str | os.PathLike | None,
    resolution: int,
    *,
    cache_dir: str | os.PathLike | None | Literal[False] = None,
    strict: bool = False,
    quiet: bool = False,
    seed: int = 0,
    train_size: int | None = None,
    val_size: int | None = None,
    workers: int | None = None,
    max_resolution: int | None = None,
) -> DataSet:
    """Load a data set, batched at one resolution, decoding it only the first time.

    Args:
        source: ``None`` or ``"default"`` for the embedded default data set (see
            :mod:`scaling.data.synthetic`); else a folder or a tar archive (optionally
            compressed) in the ImageFolder layout: ``train/<class>/*`` and ``val/<class>/*``
            (or ``validation/``, else ``test/``), at the root or inside one top folder.
        resolution: image size R of the batches; images are R x R.
        cache_dir: the data cache folder (default ``ROOT/data`` of :func:`scaling.cache.cache_root`);
            ``False``: no cache, everything in memory.
        strict: raise :class:`DataError` at the first file that cannot be used, instead
            of skipping it (also for a cache built earlier with skipped files).
        quiet: no progress bar while decoding.
        seed: for the default set, its seed; for a real source, the seed of the subsets
            drawn by ``train_size`` / ``val_size``.
        train_size: images in the training split: the default set's size (default
            5,000), or a class-stratified random subset of a real source's training split.
        val_size: likewise for the validation split (default set: 1,000).
        workers: decoding processes (default: the CPUs this process may use; 0: none).
        max_resolution: the largest resolution the caller will ask of this source (a
            study's): the cache is made for it, so that every smaller one reuses it.

    Returns:
        A :class:`DataSet` at ``resolution``; images of cached splits are memory-mapped.
        ``data.at(r)`` is the same data at another resolution, at no cost.

    Raises:
        DataError: missing source or split, fewer than two, no or empty class folders,
            classes of the two splits that differ, a bad file when ``strict``, a subset
            larger than its split, more images than the memory there is.
        cache.NoSpace: the disk of the cache folder is full (an ``OSError``, ENOSPC).

    Example:
        >>> data = load_data(None, 32, cache_dir=False, train_size=100, val_size=20, quiet=True)
        >>> data.resolution, len(data.train), data.num_classes
        (32, 100, 10)
    """
    if int(resolution) != resolution or resolution < 8:
        raise ValueError(f"resolution must be an integer of at least 8, got {resolution}")
    for name, n in (("train_size", train_size), ("val_size", val_size)):
        if n is not None and n < 1:
            raise ValueError(f"{name} must be positive, got {n}")
    need = max(int(resolution), int(max_resolution or 0))
    root = None if cache_dir is False else cache.data_folder(cache_dir)
    if source is None or (isinstance(source, str) and source == "default"):
        sizes = {"train": train_size or DEFAULT_SIZES["train"], "val": val_size or DEFAULT_SIZES["val"]}
        cap = _default_cap(root, sizes, seed, need)
        check_memory({s: (sizes[s], cap) for s in SPLITS}, fixed_cap=True)
        splits = {s: _default_split(s, sizes[s], cap, seed, root, quiet) for s in SPLITS}
        name = "default"
    else:
        splits, name = _source_splits(Path(source).expanduser(), need, root, strict, quiet, workers)
        splits = {"train": _subset(splits["train"], train_size, seed, "train"),
                  "val": _subset(splits["val"], val_size, seed, "val")}
        check_memory({s: splits[s] for s in SPLITS})
    return DataSet(train=splits["train"].at(resolution), val=splits["val"].at(resolution), name=name,
                   resolution=int(resolution))


# ---------------------------------------------------------------------------- memory


def _parse_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgGtT]?)[iI]?[bB]?\s*", text)
    if not m:
        raise DataError(f"{MEMORY_ENV}={text!r}: give bytes, or a size such as 500M or 4G")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def memory_available() -> tuple[int, str]:
    """Host memory the data may take, in bytes, and where the figure comes from.

    ``$SCALING_MEMORY_LIMIT`` (bytes, or ``500M``, ``4G``) when set; else the system's
    available memory (``MemAvailable``), lowered to what a cgroup limit leaves.
    """
    env = os.environ.get(MEMORY_ENV)
    if env:
        return _parse_bytes(env), f"{MEMORY_ENV}={env}"
    avail, where = None, "available memory"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            left = int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text())
            if avail is None or left < avail:
                avail, where = left, "memory left under the cgroup limit"
    if avail is None:  # no /proc: POSIX's count of free pages
        with contextlib.suppress(OSError, ValueError, AttributeError):
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if avail is None:  # nothing says: not checked
        avail, where = float("inf"), "memory (unknown here)"
    return avail, where


@dataclass
class MemoryNeed:
    """What a data set takes in memory: its stored images, by split."""

    images: dict[str, int]  # split -> number of images
    bytes: dict[str, int]  # split -> bytes of its stored images
    largest_side: int  # the largest stored side

    @property
    def total(self) -> int:
        return sum(self.bytes.values())


def check_memory(splits: dict, *, fixed_cap: bool = False) -> MemoryNeed:
    """Refuse (:class:`DataError`, one line) data whose stored images exceed the host's memory.

    ``splits``: split -> :class:`Split`, or (images, side) of a split yet to be drawn.
    The line names the size, what there is, and what would fit: fewer training images
    (``--train-size``) or a lower resolution.
    """
    images, nbytes, side = {}, {}, 0
    for s, x in splits.items():
        if isinstance(x, Split):
            images[s], nbytes[s], side = len(x), x.nbytes, max(side, *x.sides)
        else:
            n, cap = x
            images[s], nbytes[s], side = n, n * 3 * cap * cap, max(side, cap)
    need = MemoryNeed(images, nbytes, side)
    avail, where = memory_available()
    if need.total <= avail:
        return need
    per_image = nbytes["train"] / max(1, images["train"])
    fit = int((avail - nbytes.get("val", 0)) // per_image) if per_image else 0
    options = [f"--train-size {fit:,} or fewer" if fit >= 1 else "a smaller --val-size"]
    lower = [c for c in CAPS if c < side and sum(images.values()) * 3 * c * c <= avail]
    if lower:
        options.append(f"a resolution of at most {lower[-1]} px" if fixed_cap else
                       f"a study at most {lower[-1]} px (images stored at up to {lower[-1]} px)")
    gb = 1e9
    raise DataError(
        f"the data needs {need.total / gb:.2f} GB of memory ({images['train']:,} training and "
        f"{images.get('val', 0):,} held-out images stored at up to {side} px), more than the {avail / gb:.2f} GB "
        f"of {where}: {', or '.join(options)} would fit")


@contextlib.contextmanager
def _progress(quiet: bool, description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar; yields ``advance(n)``. No refresh thread, so forking stays safe."""
    if quiet:
        yield lambda n: None
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, auto_refresh=False, transient=True) as bar:  # the line after it says what was built
        task = bar.add_task(description, total=total)
        last = [0.0]

        def advance(n: int) -> None:
            bar.advance(task, n)
            now = time.monotonic()
            if now - last[0] > 0.1:
                bar.refresh()
                last[0] = now

        yield advance
        bar.refresh()


def _built(quiet: bool, what: str, header: dict, root: Path | None) -> None:
    """Say what a build made and where (stderr): the cache's size on disk."""
    if quiet:
        return
    from rich.console import Console

    size = sum(p["bytes"] for p in header["parts"]) / 1e6
    sides = ", ".join(f"{p['count']:,} at {p['side']} px" for p in header["parts"][:4])
    more = f" and {len(header['parts']) - 4} more sizes" if len(header["parts"]) > 4 else ""
    where = f"in {root}" if root is not None else "in memory (no cache folder)"
    Console(stderr=True).print(f"cached {what}: {size:,.1f} MB {where} ({sides}{more}), "
                               f"{header['build_seconds']:.1f} s", markup=False, highlight=False)


def _find(root: Path | None, name: str, split: str, source_key: str, need: int) -> tuple[Split, dict] | None:
    """An entry of this source and split that serves ``need`` px: its cap holds it, or no
    image was capped (each at its own size, as any larger cap would store it); the smallest."""
    if root is None:
        return None
    found = []
    for head in root.glob(cache.entry_glob(name, split)):
        stem = head.name[: -len(".json")]
        try:
            h = json.loads(head.read_text())
            if h.get("source_key") == source_key and h.get("format") == cache.FORMAT and (
                    h["cap"] >= need or not h.get("capped", True)):
                found.append((h["cap"], stem))
        except FileNotFoundError:  # removed meanwhile
            continue
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("cache entry %s in %s has an unreadable header (%s): rebuilt", stem, root, e)
            cache.remove(root, stem)
    for _, stem in sorted(found):
        out = cache.read(root, stem)
        if out is not None:
            return out
    return None


# ---------------------------------------------------------------------------- default


def _default_key(split: str, n: int, seed: int) -> str:
    return digest("default", synthetic.VERSION, seed, split, n, DEFAULT_CLASSES)


def _default_cap(root: Path | None, sizes: dict, seed: int, need: int) -> int:
    """The cap (= stored side) of the default set for ``need``: an existing entry's, else a new one's."""
    if root is None:
        return cap_for(need)
    caps = []
    for split in SPLITS:
        key = _default_key(split, sizes[split], seed)
        have = set()
        for head in root.glob(cache.entry_glob("default", split)):
            m = re.search(r"-cap(\d+)-([0-9a-f]+)\.json$", head.name)
            if m and int(m.group(1)) >= need and m.group(2) == digest(key, int(m.group(1))):
                have.add(int(m.group(1)))
        caps.append(have)
    common = sorted(caps[0] & caps[1])
    # an existing larger one serves, unless it is more than twice the size a new one would be
    return common[0] if common and common[0] <= 2 * cap_for(need) else cap_for(need)


def _default_split(split: str, n: int, cap: int, seed: int, root: Path | None, quiet: bool) -> Split:
    source_key = _default_key(split, n, seed)
    key = digest(source_key, cap)
    stem = cache.entry_stem("default", split, cap, key)
    with cache.locked(root, stem):
        found = cache.read(root, stem) if root is not None else None
        if found is not None:
            return found[0]
        writer = cache.Writer(root, stem, n)
        try:
            params = synthetic.draw_params(n, seed, split, DEFAULT_CLASSES)
            chunk = max(16, (1 << 21) // (cap * cap))
            with _progress(quiet or n * cap**2 < 2**24, f"drawing default {split} at {cap} px", n) as advance:
                for lo in range(0, n, chunk):
                    part = {k: v[lo: lo + chunk] for k, v in params.items()}
                    writer.add(synthetic.render(part, cap).numpy(), part["labels"])
                    advance(len(part["labels"]))
            classes = synthetic.class_names(DEFAULT_CLASSES)
            note = dict(key=key, source_key=source_key, cap=cap, capped=True, source="default", split=split,
                        folder=None, seed=seed, version=synthetic.VERSION, classes=classes,
                        counts=np.bincount(params["labels"], minlength=len(classes)).tolist(), skipped=[])
            out, header = writer.commit(note)
        except BaseException:
            writer.discard()
            raise
    _built(quiet or n * cap**2 < 2**24, f"default {split} ({n:,} images)", header, root)
    return out


# ---------------------------------------------------------------------------- folders and archives


def _source_splits(path: Path, need: int, root: Path | None, strict: bool, quiet: bool,
                   workers: int | None) -> tuple[dict[str, Split], str]:
    src = open_source(path)
    cap = cap_for(need, FOLDER_CAP)
    keys = {s: digest(type(src).__name__, src.fingerprint(s), s, POLICY) for s in SPLITS}
    splits, notes = {}, {}
    lock_stem = cache.entry_stem(src.name, "both", 0, digest(keys["train"], keys["val"]))
    with cache.locked(root, lock_stem):  # two workers needing one source build it once
        for split in SPLITS:
            found = _find(root, src.name, split, keys[split], need)
            if found is not None:
                splits[split], notes[split] = found
        missing = [s for s in SPLITS if s not in splits]
        if missing:
            stems = {s: (cache.entry_stem(src.name, s, cap, digest(keys[s], cap)), keys[s]) for s in missing}
            built = _build(src, stems, cap, root, strict, quiet, workers)
            for split, (s, note) in built.items():
                splits[split], notes[split] = s, note
    for split in SPLITS:
        note = notes[split]
        if note["skipped"]:
            first = note["skipped"][0]
            if strict:
                raise DataError(f"bad file {first['path']} in {path}: {first['reason']}"
                                f" ({len(note['skipped'])} bad files in {note['folder']}/)")
            log.warning("%s: skipped %d bad files in %s/, the first: %s (%s)", path, len(note["skipped"]),
                        note["folder"], first["path"], first["reason"])
    _check_classes(splits["train"].classes, splits["val"].classes, notes["train"]["folder"], notes["val"]["folder"])
    return splits, src.name


def _check_classes(train: list[str], val: list[str], t: str, v: str) -> None:
    """Raise unless the classes of the two splits (in folders ``t`` and ``v``) are the same."""
    if train == val:
        return
    missing, extra = sorted(set(train) - set(val)), sorted(set(val) - set(train))
    parts = ([f"missing from {v}/: {', '.join(missing)}"] if missing else []) + (
        [f"not in {t}/: {', '.join(extra)}"] if extra else [])
    raise DataError(f"the classes of {v}/ differ from those of {t}/: " + "; ".join(parts))


def _build(src, stems: dict[str, tuple[str, str]], cap: int, root: Path | None, strict: bool, quiet: bool,
           workers: int | None) -> dict[str, tuple[Split, dict]]:
    listings: dict[str, Listing] = {s: src.listing(s) for s in stems}
    if len(listings) == 2:  # before decoding anything
        _check_classes(listings["train"].classes, listings["val"].classes,
                       listings["train"].folder, listings["val"].folder)
    if strict:
        for lst in listings.values():
            if lst.stray:
                raise DataError(f"file outside any class folder: {lst.stray[0]} in {src.path}")
    writers: dict[str, cache.Writer] = {}
    budget = memory_available()[0] // 2 if root is None else None  # no cache folder: both splits in memory
    try:
        for split, lst in listings.items():
            writers[split] = cache.Writer(root, stems[split][0], len(lst.files), budget)
        total = sum(len(lst.files) for lst in listings.values())
        what = " and ".join(lst.folder for lst in listings.values())
        with _progress(quiet, f"decoding {src.name} {what} (stored at up to {cap} px)", total) as advance:
            try:
                failed = build(src, {s: (listings[s], writers[s]) for s in listings}, cap,
                               strict=strict, workers=workers, advance=advance)
            except MemoryError as e:  # decoding into memory (no cache folder) went past what there is
                avail, where = memory_available()
                needed = e.args[0] if e.args and isinstance(e.args[0], int) else 0
                raise DataError(f"the data needs about {needed / 1e9:.2f} GB of memory or more for one split "
                                f"(there is no cache folder, so it is decoded into memory), more than half "
                                f"the {avail / 1e9:.2f} GB of {where}: set SCALING_CACHE to a writable folder, "
                                "or use a smaller --train-size") from None
        out = {}
        for split, lst in listings.items():
            w, bad = writers[split], failed[split]
            counts = np.bincount([lst.files[r][1] for r in range(len(lst.files)) if r not in bad],
                                 minlength=len(lst.classes))
            if (counts == 0).any():
                c = lst.classes[int(np.flatnonzero(counts == 0)[0])]
                raise DataError(f"class folder {lst.folder}/{c}/ in {src.path} has no readable image")
            skipped = [{"path": p, "reason": "outside any class folder"} for p in lst.stray]
            skipped += [{"path": p, "reason": r} for p, r in lst.unfollowed.items()]
            skipped += [{"path": lst.files[row][0], "reason": reason} for row, reason in bad.items()]
            skipped.sort(key=lambda s: s["path"])
            note = dict(key=stems[split][0].rsplit("-", 1)[-1], source_key=stems[split][1], cap=cap,
                        capped=w.capped, source=str(src.path), split=split, folder=lst.folder, policy=POLICY,
                        classes=lst.classes, counts=counts.tolist(), skipped=skipped)
            out[split] = w.commit(note)
        for split in listings:
            _built(quiet, f"{src.name} {listings[split].folder}/ ({out[split][1]['num_images']:,} images)",
                   out[split][1], root)
        return out
    except BaseException:
        for w in writers.values():
            w.discard()
        raise


def _subset(split: Split, size: int | None, seed: int, which: str) -> Split:
    """A class-stratified random subset of ``size`` images, in the split's order."""
    n = len(split)
    if size is None or size == n:
        return split
    if size > n:
        raise DataError(f"{which}_size={size}, but the {which} split has {n} images")
    g = torch.Generator().manual_seed(int(digest(seed, which, length=15), 16))
    keys = torch.rand(n, generator=g, dtype=torch.float64)
    labels = split.labels
    counts = torch.bincount(labels).double()
    order = torch.argsort(keys)
    order = order[torch.argsort(labels[order], stable=True)]  # by class, random within it
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(n, dtype=torch.float64)
    rank[order] = torch.arange(n, dtype=torch.float64) - starts[labels[order]]
    spread = (rank + 0.5) / counts[labels] + keys * 1e-9  # each class spread evenly over [0, 1)
    pick = torch.sort(torch.argsort(spread)[:size]).values
    return split.take(pick, digest(split.fingerprint, size, seed))
