"""`load_data`: the default data set or a folder/archive, at one resolution, through the cache."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Literal

import numpy as np
import torch

from . import cache, synthetic
from .base import DataError, DataSet, Split
from .decode import POLICY, build
from .folder import Listing, open_source

log = logging.getLogger(__name__)

DEFAULT_SIZES = {"train": 5000, "val": 1000}
DEFAULT_CLASSES = 10
SPLITS = ("train", "val")


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
) -> DataSet:
    """Load a data set at one resolution, decoding it only the first time.

    Args:
        source: ``None`` or ``"default"`` for the embedded default data set (see
            :mod:`scaling.data.synthetic`); else a folder or a tar archive (optionally
            compressed) in the ImageFolder layout: ``train/<class>/*`` and ``val/<class>/*``
            (or ``validation/``, else ``test/``), at the root or inside one top folder.
        resolution: image size R; images are R x R.
        cache_dir: where decoded splits are kept (default ``$SCALING_CACHE``, else
            ``~/.cache/scaling/data``); ``False``: no cache, everything in memory.
        strict: raise :class:`DataError` at the first file that cannot be used, instead
            of skipping it (also for a cache built earlier with skipped files).
        quiet: no progress bar while decoding.
        seed: for the default set, its seed; for a real source, the seed of the subsets
            drawn by ``train_size`` / ``val_size``.
        train_size: images in the training split: the default set's size (default
            5,000), or a class-stratified random subset of a real source's training split.
        val_size: likewise for the validation split (default set: 1,000).
        workers: decoding processes (default: the CPUs this process may use; 0: none).

    Returns:
        A :class:`DataSet`; images of cached splits are memory-mapped.

    Raises:
        DataError: missing source or split, no or empty class folders, classes of the
            two splits that differ, a bad file when ``strict``, a subset larger than
            its split.

    Example:
        >>> data = load_data(None, 32, cache_dir=False, train_size=100, val_size=20, quiet=True)
        >>> data.train.images.shape, data.num_classes
        (torch.Size([100, 3, 32, 32]), 10)
    """
    if int(resolution) != resolution or resolution < 8:
        raise ValueError(f"resolution must be an integer of at least 8, got {resolution}")
    for name, n in (("train_size", train_size), ("val_size", val_size)):
        if n is not None and n < 1:
            raise ValueError(f"{name} must be positive, got {n}")
    with _cache_folder(cache_dir) as (root, in_memory):
        if source is None or (isinstance(source, str) and source == "default"):
            sizes = {"train": train_size or DEFAULT_SIZES["train"], "val": val_size or DEFAULT_SIZES["val"]}
            splits = {s: _default_split(s, sizes[s], resolution, seed, root, quiet) for s in SPLITS}
            name = "default"
        else:
            splits, name = _source_splits(Path(source).expanduser(), resolution, root, strict, quiet, workers)
            splits = {"train": _subset(splits["train"], train_size, seed, "train"),
                      "val": _subset(splits["val"], val_size, seed, "val")}
        if in_memory:  # the temporary folder goes away: keep the tensors, not the mapping
            for s in splits.values():
                s.images = s.images.clone()
    return DataSet(train=splits["train"], val=splits["val"], name=name, resolution=resolution)


@contextlib.contextmanager
def _cache_folder(cache_dir) -> Iterator[tuple[Path, bool]]:
    if cache_dir is False:
        with tempfile.TemporaryDirectory(prefix="scaling-data-") as tmp:
            yield Path(tmp), True
    else:
        yield cache.cache_root(cache_dir), False


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
    with Progress(*columns, auto_refresh=False) as bar:
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


# ---------------------------------------------------------------------------- default


def _default_split(split: str, n: int, resolution: int, seed: int, root: Path, quiet: bool) -> Split:
    key = cache.digest("default", synthetic.VERSION, seed, split, n, DEFAULT_CLASSES, resolution)
    stem = cache.entry_stem("default", split, resolution, key)
    found = cache.read(root, stem)
    if found is not None:
        return found[0]
    writer = cache.Writer(root, stem, n, resolution)
    try:
        with _progress(quiet or n * resolution**2 < 2**24, f"drawing default {split} at {resolution} px", n) as advance:
            _, labels = synthetic.generate(n, resolution, seed=seed, split=split, num_classes=DEFAULT_CLASSES,
                                           out=torch.from_numpy(writer.images), progress=advance)
        writer.labels[:] = labels.numpy()
        classes = synthetic.class_names(DEFAULT_CLASSES)
        note = dict(key=key, source="default", split=split, folder=None, seed=seed, version=synthetic.VERSION,
                    classes=classes, counts=np.bincount(writer.labels, minlength=len(classes)).tolist(), skipped=[])
        return writer.commit(note)[0]
    except BaseException:
        writer.discard()
        raise


# ---------------------------------------------------------------------------- folders and archives


def _source_splits(path: Path, resolution: int, root: Path, strict: bool, quiet: bool,
                   workers: int | None) -> tuple[dict[str, Split], str]:
    src = open_source(path)
    stems = {}
    for split in SPLITS:
        key = cache.digest(type(src).__name__, src.fingerprint(split), split, resolution, POLICY)
        stems[split] = cache.entry_stem(src.name, split, resolution, key), key
    splits, notes = {}, {}
    for split, (stem, _) in stems.items():
        found = cache.read(root, stem)
        if found is not None:
            splits[split], notes[split] = found
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        built = _build(src, {s: stems[s] for s in missing}, resolution, root, strict, quiet, workers)
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


def _build(src, stems: dict[str, tuple[str, str]], resolution: int, root: Path, strict: bool, quiet: bool,
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
    try:
        for split, lst in listings.items():
            writers[split] = w = cache.Writer(root, stems[split][0], len(lst.files), resolution)
            w.labels[:] = [c for _, c, _ in lst.files]
        total = sum(len(lst.files) for lst in listings.values())
        what = " and ".join(lst.folder for lst in listings.values())
        with _progress(quiet, f"decoding {src.name} {what} at {resolution} px", total) as advance:
            failed = build(src, {s: (listings[s], writers[s]) for s in listings}, resolution,
                           strict=strict, workers=workers, advance=advance)
        out = {}
        for split, lst in listings.items():
            w, bad = writers[split], failed[split]
            keep = np.ones(len(lst.files), dtype=bool)
            keep[list(bad)] = False
            w.keep(keep)
            counts = np.bincount(w.labels, minlength=len(lst.classes))
            if (counts == 0).any():
                c = lst.classes[int(np.flatnonzero(counts == 0)[0])]
                raise DataError(f"class folder {lst.folder}/{c}/ in {src.path} has no readable image")
            skipped = [{"path": p, "reason": "outside any class folder"} for p in lst.stray]
            skipped += [{"path": lst.files[row][0], "reason": reason} for row, reason in bad.items()]
            skipped.sort(key=lambda s: s["path"])
            note = dict(key=stems[split][1], source=str(src.path), split=split, folder=lst.folder,
                        policy=POLICY, classes=lst.classes, counts=counts.tolist(), skipped=skipped)
            out[split] = w.commit(note)
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
    g = torch.Generator().manual_seed(int(cache.digest(seed, which, length=15), 16))
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
    return Split(images=split.images[pick], labels=labels[pick], classes=split.classes,
                 fingerprint=cache.digest(split.fingerprint, size, seed), skipped=split.skipped)
