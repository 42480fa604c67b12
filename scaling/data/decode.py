"""Decoding image files into the cache, in parallel processes, by one storage policy.

Storage policy (:data:`POLICY`): the image is decoded (JPEGs at a reduced DCT scale where
that still leaves at least the stored size), turned upright by its EXIF orientation,
converted to RGB, and its central square (side = the shorter side) is kept at
:func:`stored_side` of that side: its own, or the source's cap for larger images, rounded
down to five significant bits so that a source of many sizes has few (CIFAR-10: 32 px;
500 x 375 photos under a cap of 512: 368 px), by Pillow's antialiased bilinear filter.
Batches are then cut from these squares at any resolution on the device
(:mod:`.batches`): evaluation resizes the square (the same as resizing the shorter side
and cropping the centre), training takes random crops of it.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import io
import multiprocessing
import os
import sys
import warnings
from typing import Callable

import numpy as np
from PIL import Image, ImageOps

from .base import DataError
from .cache import Writer
from .folder import Listing

POLICY = "center-square/own-or-cap/5-bits/pil-bilinear-aa/exif/jpeg-draft"
EXIF_ORIENTATION = 0x0112


# ---------------------------------------------------------------------------- decoding


def stored_side(short: int, cap: int) -> int:
    """The side an image whose shorter side is ``short`` is stored at under ``cap``.

    ``min(short, cap)``, rounded down to five significant bits from 32 up (32, 33 -> 32;
    375 -> 368; 500 -> 496): at most 3% finer steps than that, and at most 16 sizes per
    octave in a cache.
    """
    s = max(1, min(int(short), int(cap)))
    k = s.bit_length() - 5
    return (s >> k) << k if k > 0 else s


def decode_image(data: bytes, cap: int) -> tuple[np.ndarray, bool]:
    """Decode one image file's bytes to uint8 (3, S, S) by :data:`POLICY`; and whether the cap
    made it smaller than its own size.

    Raises:
        ValueError or OSError: the bytes are empty, not an image, or broken.
    """
    if not data:
        raise ValueError("empty file")
    try:
        im = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError:
        raise ValueError("not an image Pillow can read") from None
    with im:
        w, h = im.size
        side = stored_side(min(w, h), cap)
        capped = min(w, h) > cap
        scale = side / min(w, h)
        im.draft("RGB", (max(1, int(w * scale + 0.999)), max(1, int(h * scale + 0.999))))
        im.load()  # decodes everything: truncation and broken data raise here
        if im.getexif().get(EXIF_ORIENTATION, 1) != 1:
            im = ImageOps.exif_transpose(im)
        if im.mode != "RGB":
            im = im.convert("RGB")
        w, h = im.size
        if (w, h) != (side, side):
            sq = min(w, h)
            left, top = (w - sq) / 2, (h - sq) / 2
            im = im.resize((side, side), Image.Resampling.BILINEAR, box=(left, top, left + sq, top + sq))
        return np.asarray(im).transpose(2, 0, 1), capped


def _reason(e: BaseException) -> str:
    text = str(e).split(" <_io.")[0] if str(e) else type(e).__name__
    return text if isinstance(e, ValueError) else f"{type(e).__name__}: {text}"


def decode_chunk(cap: int, items: list[tuple]) -> list[tuple]:
    """Decode files; return (row, uint8 (3, S, S) image, capped) or (row, the reason it failed), in order.

    Runs in worker processes. Each item is ``(row, payload)``: the file's bytes, or a
    ``(path, offset, size)`` to read (size -1: the whole file).
    """
    out = []
    archives: dict[str, io.BufferedReader] = {}  # kept open for the chunk
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's warnings on odd EXIF and the like
            for row, payload in items:
                try:
                    if not isinstance(payload, bytes):
                        payload = _read(archives, *payload)
                    out.append((row, *decode_image(payload, cap)))
                except Exception as e:  # a bad file is reported, never fatal here
                    out.append((row, _reason(e)))
    finally:
        for f in archives.values():
            f.close()
    return out


def _read(archives: dict, path: str, offset: int, size: int) -> bytes:
    if size < 0:
        with open(path, "rb") as f:
            return f.read()
    if path not in archives:
        archives[path] = open(path, "rb")
    f = archives[path]
    f.seek(offset)
    return f.read(size)


# ---------------------------------------------------------------------------- building


def _pool_context():
    # fork starts workers at once and without re-importing torch; elsewhere the default
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return None


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def build(source, jobs: dict[str, tuple[Listing, Writer]], cap: int, *, strict: bool,
          workers: int | None, advance: Callable[[int], None]) -> dict[str, dict[int, str]]:
    """Decode the listed files of each split into its writer, in the order the source gives them.

    Args:
        source: a :class:`~.folder.FolderSource` or :class:`~.folder.TarSource`.
        jobs: split name -> (listing, writer).
        cap: the largest stored side.
        strict: raise :class:`DataError` at the first bad file.
        workers: processes (default: the CPUs this process may use; 0 or 1: this process).
        advance: called with the number of files done, as they finish.

    Returns:
        split -> {row: reason} of the files that could not be decoded.
    """
    rows = {s: {p: i for i, (p, _, _) in enumerate(lst.files)} for s, (lst, _) in jobs.items()}
    owner = {p: s for s, r in rows.items() for p in r}
    failed: dict[str, dict[int, str]] = {s: {} for s in jobs}
    total = len(owner)
    # by default a process per CPU, but none with less than 64 files to do
    workers = min(default_workers(), 32, -(-total // 64)) if workers is None else min(workers, total)
    workers = max(1, workers)
    chunk = max(16, min(256, total // (workers * 4)))

    def bad(split: str, row: int, reason: str) -> None:
        failed[split][row] = reason
        if strict:
            path = jobs[split][0].files[row][0]
            raise DataError(f"bad image {path} in {source.path}: {reason}")

    def collect(split: str, results: list[tuple[int, object]]) -> None:
        lst, writer = jobs[split]
        run: list[tuple[int, np.ndarray]] = []  # consecutive images of one size: written at once

        def write() -> None:
            if run:
                writer.add(np.stack([im for _, im in run]), np.array([lst.files[r][1] for r, _ in run]))
                run.clear()

        for row, image, *capped in results:
            if isinstance(image, str):
                write()
                bad(split, row, image)
                continue
            if run and run[0][1].shape != image.shape:
                write()
            run.append((row, image))
            writer.capped |= capped[0]
        write()
        advance(len(results))

    # Results are written in the order the chunks were sent (the source's order of its
    # files), so that the cache does not depend on the number of workers or on which
    # finishes first.
    queue: collections.deque = collections.deque()
    pool = cf.ProcessPoolExecutor(workers, mp_context=_pool_context()) if workers > 1 else None
    pending: dict[str, list] = {s: [] for s in jobs}

    def flush(split: str) -> None:
        items, pending[split] = pending[split], []
        if not items:
            return
        if pool is None:
            collect(split, decode_chunk(cap, items))
            return
        while len(queue) >= 3 * workers:  # bounded: the bytes of a few chunks per worker in flight
            s, fut = queue.popleft()
            collect(s, fut.result())
        queue.append((split, pool.submit(decode_chunk, cap, items)))

    try:
        if pool is not None:  # with fork, the first task starts every worker
            with warnings.catch_warnings():
                # Python 3.12 warns on forking a process that has threads (torch's, CUDA's).
                # The workers only run Pillow and NumPy, never torch: the risk is the one
                # torch's own DataLoader takes on Linux.
                warnings.filterwarnings("ignore", message=".*use of fork", category=DeprecationWarning)
                pool.submit(int).result()
        for path, payload in source.payloads(set(owner)):  # a deterministic order for a given source
            split = owner[path]
            row = rows[split][path]
            if payload is None:
                flush(split)  # keep the order: what was read before this file goes first
                bad(split, row, "not a regular file")
                advance(1)
                continue
            pending[split].append((row, payload))
            if len(pending[split]) >= chunk:
                flush(split)
        for split in jobs:
            flush(split)
        while queue:
            s, fut = queue.popleft()
            collect(s, fut.result())
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return failed

