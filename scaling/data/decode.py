"""Decoding image files into the cache, in parallel processes, by one resize policy.

Resize policy (:data:`POLICY`): the image is decoded (JPEGs at a reduced DCT scale where
that still leaves at least twice the target size), turned upright by its EXIF
orientation, converted to RGB, and its central square (side = the shorter side) is
resized to R x R with Pillow's antialiased bilinear filter: the same as resizing the
shorter side to R and then cropping the centre, without the intermediate rounding.
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import multiprocessing
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image, ImageOps

from .base import DataError
from .cache import Writer
from .folder import Listing

POLICY = "center-square/pil-bilinear-aa/exif/jpeg-draft-2x"
EXIF_ORIENTATION = 0x0112


# ---------------------------------------------------------------------------- decoding


def decode_image(data: bytes, resolution: int) -> np.ndarray:
    """Decode one image file's bytes to uint8 (3, R, R) by :data:`POLICY`.

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
        im.draft("RGB", (2 * resolution, 2 * resolution))
        im.load()  # decodes everything: truncation and broken data raise here
        if im.getexif().get(EXIF_ORIENTATION, 1) != 1:
            im = ImageOps.exif_transpose(im)
        if im.mode != "RGB":
            im = im.convert("RGB")
        w, h = im.size
        if (w, h) != (resolution, resolution):
            side = min(w, h)
            left, top = (w - side) / 2, (h - side) / 2
            im = im.resize((resolution, resolution), Image.Resampling.BILINEAR,
                           box=(left, top, left + side, top + side))
        return np.asarray(im).transpose(2, 0, 1)


def _reason(e: BaseException) -> str:
    text = str(e).split(" <_io.")[0] if str(e) else type(e).__name__
    return text if isinstance(e, ValueError) else f"{type(e).__name__}: {text}"


def decode_chunk(out_file: str, resolution: int, items: list[tuple]) -> list[tuple[int, str]]:
    """Decode files into rows of an ``.npy`` array on disk; return (row, reason) of failures.

    Runs in worker processes. Each item is ``(row, payload)``: the file's bytes, or a
    ``(path, offset, size)`` to read (size -1: the whole file).
    """
    out = np.load(out_file, mmap_mode="r+")
    failed = []
    archives: dict[str, io.BufferedReader] = {}  # kept open for the chunk
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's warnings on odd EXIF and the like
            for row, payload in items:
                try:
                    if not isinstance(payload, bytes):
                        payload = _read(archives, *payload)
                    out[row] = decode_image(payload, resolution)
                except Exception as e:  # a bad file is reported, never fatal here
                    failed.append((row, _reason(e)))
    finally:
        for f in archives.values():
            f.close()
        out.flush()
        del out
    return failed


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


@dataclass
class _Job:
    listing: Listing
    writer: Writer
    rows: dict[str, int]
    failed: dict[int, str] = field(default_factory=dict)


def build(source, jobs: dict[str, tuple[Listing, Writer]], resolution: int, *, strict: bool,
          workers: int | None, advance: Callable[[int], None]) -> dict[str, dict[int, str]]:
    """Decode the listed files of each split into its writer.

    Args:
        source: a :class:`~.folder.FolderSource` or :class:`~.folder.TarSource`.
        jobs: split name -> (listing, writer with a row per listed file).
        resolution: image size R.
        strict: raise :class:`DataError` at the first bad file.
        workers: processes (default: the CPUs this process may use; 0 or 1: this process).
        advance: called with the number of files done, as they finish.

    Returns:
        split -> {row: reason} of the files that could not be decoded.
    """
    state = {s: _Job(lst, w, {p: i for i, (p, _, _) in enumerate(lst.files)}) for s, (lst, w) in jobs.items()}
    owner = {p: s for s, job in state.items() for p in job.rows}
    total = len(owner)
    # by default a process per CPU, but none with less than 64 files to do
    workers = min(default_workers(), 32, -(-total // 64)) if workers is None else min(workers, total)
    workers = max(1, workers)
    chunk = max(16, min(256, total // (workers * 4)))

    def bad(split: str, row: int, reason: str) -> None:
        state[split].failed[row] = reason
        if strict:
            path = state[split].listing.files[row][0]
            raise DataError(f"bad image {path} in {source.path}: {reason}")

    def collect(split: str, failed: list[tuple[int, str]], n: int) -> None:
        for row, reason in sorted(failed):
            bad(split, row, reason)
        advance(n)

    pending: dict[str, list] = {s: [] for s in state}
    pool = cf.ProcessPoolExecutor(workers, mp_context=_pool_context()) if workers > 1 else None
    futures: dict[cf.Future, tuple[str, int]] = {}

    def drain(when) -> None:
        done, _ = cf.wait(list(futures), return_when=when)
        for fut in done:
            split, n = futures.pop(fut)
            collect(split, fut.result(), n)

    def flush(split: str) -> None:
        items, pending[split] = pending[split], []
        args = (str(state[split].writer.images_path), resolution, items)
        if pool is None:
            collect(split, decode_chunk(*args), len(items))
            return
        while len(futures) >= 3 * workers:  # bounded: the bytes of a few chunks per worker in flight
            drain(cf.FIRST_COMPLETED)
        futures[pool.submit(decode_chunk, *args)] = (split, len(items))

    try:
        if pool is not None:  # with fork, the first task starts every worker
            with warnings.catch_warnings():
                # Python 3.12 warns on forking a process that has threads (torch's, CUDA's).
                # The workers only run Pillow and NumPy, never torch: the risk is the one
                # torch's own DataLoader takes on Linux.
                warnings.filterwarnings("ignore", message=".*use of fork", category=DeprecationWarning)
                pool.submit(int).result()
        for path, payload in source.payloads(set(owner)):
            split = owner[path]
            row = state[split].rows[path]
            if payload is None:
                bad(split, row, "not a regular file")
                advance(1)
                continue
            pending[split].append((row, payload))
            if len(pending[split]) >= chunk:
                flush(split)
        for split in state:
            if pending[split]:
                flush(split)
        if futures:
            drain(cf.ALL_COMPLETED)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return {s: job.failed for s, job in state.items()}
