"""Image folders and tar archives in the ImageFolder layout: what files each split has.

Layout: ``train/<class>/...`` and ``val/<class>/...`` (or ``validation/``, else ``test/``),
either at the root or inside one top-level folder, as a folder or a ``.tar`` /
``.tar.gz`` / ``.tar.bz2`` / ``.tar.xz`` read in place. Files anywhere below a class
folder belong to it. Classes are the class folders' names in Unicode's composed form
(NFC), sorted; a data set needs two at least. Hidden files and
folders (``.DS_Store``, macOS's ``._*`` companions, ``.ipynb_checkpoints``) are ignored.
"""

from __future__ import annotations

import itertools
import os
import posixpath
import tarfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..digest import digest_chunks, digest_text
from .base import DataError

VAL_DIRS = ("val", "validation", "test")


# ---------------------------------------------------------------------------- listing


@dataclass
class Listing:
    """The files of one split folder.

    Args:
        folder: the split folder, relative to the source root (``train``, ``x/test``).
        classes: sorted class names.
        files: (path, class index, payload), sorted by class, then path.
        stray: files directly in the split folder, outside any class folder.
        unfollowed: links to folders that were not followed, and why.
    """

    folder: str
    classes: list[str]
    files: list[tuple[str, int, object]] = field(default_factory=list)
    stray: list[str] = field(default_factory=list)
    unfollowed: dict[str, str] = field(default_factory=dict)  # folder links left out -> why


def _group(folder: str, files: dict[str, object], dirs: set[str]) -> Listing:
    """Group ``files`` (path -> payload) below ``folder`` by class folder; ``dirs`` are all folders."""
    prefix = folder + "/"
    classes = {_nfc(d[len(prefix):].split("/")[0]) for d in dirs if d.startswith(prefix)}
    stray, members = [], []
    for path, payload in files.items():
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix):]
        if "/" not in rest:
            stray.append(path)
        else:
            cls = _nfc(rest.split("/")[0])
            classes.add(cls)
            members.append((cls, path, payload))
    names = sorted(classes)
    if not names:
        raise DataError(f"{folder}/ has no class folders")
    if len(names) < 2:
        raise DataError(f"{folder}/ has one class folder only ({names[0]}/): a classifier needs at least two")
    index = {c: i for i, c in enumerate(names)}
    counts = dict.fromkeys(names, 0)
    for cls, _, _ in members:
        counts[cls] += 1
    empty = [c for c in names if counts[c] == 0]
    if empty:
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise DataError(f"empty class folder {folder}/{empty[0]}/{more}")
    members.sort(key=lambda m: (index[m[0]], m[1]))
    return Listing(folder, names, [(p, index[c], pl) for c, p, pl in members], sorted(stray))


def _nfc(name: str) -> str:
    """A class name in Unicode's composed form (NFC), so that "café" is one class whether
    the file system wrote it composed (Linux, Windows) or decomposed (macOS)."""
    return unicodedata.normalize("NFC", name)


def _split_folders(dirs: set[str], source: str) -> tuple[str, str, str]:
    """(prefix, train folder, val folder) of a layout; ``dirs`` holds every folder path."""
    tops = {d.split("/")[0] for d in dirs}
    prefix = ""
    if "train" not in tops and not any(v in tops for v in VAL_DIRS) and len(tops) == 1:
        prefix = next(iter(tops)) + "/"  # one wrapping folder, as archives often have
    if prefix + "train" not in dirs:
        raise DataError(f"missing split: no train/ folder in {source}")
    for v in VAL_DIRS:
        if prefix + v in dirs:
            return prefix, prefix + "train", prefix + v
    raise DataError(f"missing split: no val/ (or validation/, test/) folder in {source}")


class FolderSource:
    """An ImageFolder layout on disk. Listing it stats every file (for the fingerprint).

    Links: a class folder may be a link (to anywhere); inside a class folder, a link to a
    folder is followed only into that class folder's own tree and only once, so a link
    out of it, back up into the split or around a loop is left out (and reported with
    the skipped files); a file reached twice counts once. A class folder that is the
    split folder itself, or holds other class folders, is an error naming it.
    """

    def __init__(self, root: Path):
        self.path = root
        self.name = root.name
        self.files: dict[str, tuple[str, int, int]] = {}
        self._stat: dict[str, tuple[int, int, int]] = {}
        self.unfollowed: dict[str, str] = {}  # link path -> why it was not followed
        tops = _subdirs(root, "")
        dirs = set(tops)
        if len(tops) == 1 and not {"train", *VAL_DIRS} & set(tops):
            dirs |= _subdirs(root, tops.pop() + "/")
        self.prefix, self.train_folder, self.val_folder = _split_folders(dirs, str(root))
        self.dirs: set[str] = set()
        for folder in (self.train_folder, self.val_folder):
            self._walk_split(folder)

    def _walk_split(self, folder: str) -> None:
        split_real = os.path.realpath(self.path / folder)
        self.dirs.add(folder)
        classes = sorted(_subdirs(self.path, folder + "/"))
        reals = {c: os.path.realpath(self.path / c) for c in classes}
        for c in classes:  # refuse a class folder that is the split, or holds other classes
            inner = [o for o in classes if o != c and _inside(reals[o], reals[c])]
            if _inside(split_real, reals[c]) or inner:
                what = "the split folder itself" if _inside(split_real, reals[c]) else \
                    f"a folder holding the class folders {', '.join(o.split('/')[-1] for o in inner[:3])}"
                raise DataError(f"class folder {c}/ in {self.path} is {what} (a link?): remove or fix it")
        for f in os.scandir(self.path / folder):  # files directly in the split folder: stray
            if not f.name.startswith(".") and not _isdir(f.path):
                self._add(folder + "/" + f.name, f.path)
        for c in classes:
            self.dirs.add(c)
            seen_dirs, seen_files = set(), set()
            stack = [(c, reals[c])]
            while stack:
                rel, real = stack.pop()
                if real in seen_dirs:
                    continue
                seen_dirs.add(real)
                try:
                    found = sorted(os.scandir(self.path / rel), key=lambda e: e.name)
                except OSError:
                    continue
                for e in found:
                    if e.name.startswith("."):
                        continue
                    path = rel + "/" + e.name
                    if _isdir(e.path):
                        target = os.path.realpath(e.path)
                        if not _inside(target, reals[c]) or target == reals[c]:
                            self.unfollowed[path] = "a link out of its class folder, not followed"
                        elif target in seen_dirs or _inside(real, target):
                            self.unfollowed[path] = "a link around a loop, not followed"
                        else:
                            self.dirs.add(path)
                            stack.append((path, target))
                        continue
                    target = os.path.realpath(e.path)
                    if target in seen_files:
                        continue  # the same file through a link: once
                    seen_files.add(target)
                    self._add(path, e.path)

    def _add(self, rel: str, full: str) -> None:
        try:
            st = os.stat(full)
        except OSError:  # a dangling link: decoding will report it
            st = os.lstat(full)
        self.files[rel] = (full, 0, -1)
        self._stat[rel] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def folder(self, split: str) -> str:
        return self.train_folder if split == "train" else self.val_folder

    def fingerprint(self, split: str) -> str:
        """Hash of the split folder's relative paths (folders too), sizes, modification and
        change times (a file rewritten in place, its time set back, still changes the last)."""
        prefix = self.folder(split) + "/"
        files = (f"{path}\0{size}\0{mtime}\0{ctime}\n" for path, (size, mtime, ctime)
                 in sorted((p, s) for p, s in self._stat.items() if p.startswith(prefix)))
        dirs = (f"{path}/\n" for path in sorted(d for d in self.dirs if d.startswith(prefix)))
        return digest_chunks(itertools.chain(files, dirs), 32)

    def listing(self, split: str) -> Listing:
        lst = _group(self.folder(split), self.files, self.dirs)
        prefix = self.folder(split) + "/"
        lst.unfollowed = {p: r for p, r in self.unfollowed.items() if p.startswith(prefix)}
        return lst

    def payloads(self, wanted: set[str]) -> Iterator[tuple[str, object]]:
        """(path, payload) of the wanted files; workers read them from disk."""
        for path in sorted(wanted):
            yield path, self.files[path]


def _isdir(path: str) -> bool:
    try:
        return os.path.isdir(path)
    except OSError:
        return False


def _inside(path: str, folder: str) -> bool:
    """Whether real path ``path`` is ``folder`` or below it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _subdirs(root: Path, rel: str) -> set[str]:
    """Non-hidden folders (or links to folders) directly in ``root/rel``, as relative paths."""
    try:
        return {rel + e.name for e in os.scandir(root / rel) if not e.name.startswith(".") and _isdir(e.path)}
    except OSError:
        return set()


def _compressed(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(6)
    return head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head == b"\xfd7zXZ\x00"


class TarSource:
    """A tar archive of an ImageFolder layout, read in place.

    Its fingerprint (path, size, modification and change time) needs no reading. The listing reads
    the archive once; a compressed archive of at most :attr:`BUFFER_BYTES` keeps its
    files' bytes from that pass, a larger one is read a second time as they are sent to
    the workers. From a plain (uncompressed) archive the workers read by offset.
    """

    BUFFER_BYTES = 2 << 30

    def __init__(self, path: Path):
        self.path = path
        self.name = path.name.split(".tar")[0] if ".tar" in path.name else path.stem
        self._listed = False

    def fingerprint(self, split: str) -> str:
        st = os.stat(self.path)
        text = f"{self.path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}"
        return digest_text(text, 32)

    def _list(self) -> None:
        if self._listed:
            return
        self.compressed = _compressed(self.path)
        keep = self.compressed and self.path.stat().st_size <= self.BUFFER_BYTES
        self._bytes: dict[str, bytes] | None = {} if keep else None
        dirs: set[str] = set()
        self.files = {}
        try:
            with tarfile.open(self.path, "r:*") as tar:
                for m in tar:
                    name = _member_name(m)
                    if name is None:
                        continue
                    parts = name.split("/")
                    dirs.update("/".join(parts[:k]) for k in range(1, len(parts)))
                    if m.isdir():
                        dirs.add(name)
                    elif m.isreg():
                        self.files[name] = (str(self.path), m.offset_data, m.size)
                        if keep:
                            self._bytes[name] = tar.extractfile(m).read()
                    else:  # links and devices: listed so that they are reported, never read
                        self.files[name] = None
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(f"cannot read the archive {self.path}: {e}") from None
        self.dirs = dirs
        self.prefix, self.train_folder, self.val_folder = _split_folders(dirs, str(self.path))
        self._listed = True

    def folder(self, split: str) -> str:
        self._list()
        return self.train_folder if split == "train" else self.val_folder

    def listing(self, split: str) -> Listing:
        self._list()
        return _group(self.folder(split), self.files, self.dirs)

    def payloads(self, wanted: set[str]) -> Iterator[tuple[str, object]]:
        """(path, payload): the file's bytes (compressed archive) or its byte range; None for a link."""
        self._list()
        if not self.compressed or self._bytes is not None:
            for path in sorted(wanted):
                if self.files[path] is None or not self.compressed:
                    yield path, self.files[path]
                else:
                    yield path, self._bytes.pop(path)
            return
        left = {p for p in wanted if self.files[p] is not None}
        for path in wanted - left:
            yield path, None
        with tarfile.open(self.path, "r:*") as tar:
            for m in tar:  # one more forward pass through the stream
                name = _member_name(m)
                if name in left:
                    left.discard(name)
                    yield name, tar.extractfile(m).read()


def _member_name(m: tarfile.TarInfo) -> str | None:
    """The member's normalised path; None for the root, paths outside it and hidden ones."""
    name = posixpath.normpath(m.name.lstrip("/"))
    return None if any(part.startswith(".") for part in name.split("/")) else name


def open_source(path: Path) -> FolderSource | TarSource:
    """The source at ``path``: a folder or a tar archive."""
    if not path.exists():
        raise DataError(f"data source not found: {path}")
    if path.is_dir():
        return FolderSource(path)
    if tarfile.is_tarfile(path):
        return TarSource(path)
    raise DataError(f"data source {path} is neither a folder nor a tar archive")
