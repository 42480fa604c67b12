"""The data types shared by the data modules: splits, data sets and the data error."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import torch


class DataError(ValueError):
    """The data cannot be used as asked: a missing split, an empty class, a bad file in strict mode,
    a split too large for the memory there is."""


@dataclass
class Split:
    """One split of a data set: its images as stored (uint8, each at its own size) and the
    size its batches are resized to.

    Images of one stored size are one tensor, a *part*; a split whose images differ in
    size has several parts, in increasing order of size, and image ``i`` of the split is
    row ``i - start`` of the part it falls in. :class:`~.batches.Batches` crops and
    resizes them to ``resolution`` on the device, per batch.

    Args:
        images: uint8 (N, 3, S, S), or a sequence of such tensors, one per stored size
            S; often backed by a memory-mapped cache file, so reading it pages the file
            in lazily.
        labels: int64 (N,), indices into ``classes``.
        classes: class names in label order.
        fingerprint: identifies the content: the source's files, the split, the stored
            sizes (and the subset, where one was drawn). Equal fingerprints mean equal
            tensors.
        skipped: files left out because they could not be used, as paths relative to
            the source's root (inside the archive for a tar).
        resolution: the side R of the images its batches give (default: the largest
            stored side).
    """

    images: torch.Tensor | Sequence[torch.Tensor]
    labels: torch.Tensor
    classes: list[str]
    fingerprint: str
    skipped: list[str] = field(default_factory=list)
    resolution: int = 0

    def __post_init__(self) -> None:
        parts = (self.images,) if isinstance(self.images, torch.Tensor) else tuple(self.images)
        if not parts:
            raise ValueError("a split needs at least one part of images")
        for x in parts:
            if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3]:
                raise ValueError(f"images must be uint8 (N, 3, S, S), got {x.dtype} {tuple(x.shape)}")
        sides = [x.shape[-1] for x in parts]
        if sides != sorted(set(sides)):
            raise ValueError(f"parts must have distinct sizes in increasing order, got {sides}")
        self.parts: tuple[torch.Tensor, ...] = parts
        self.images = parts[0] if len(parts) == 1 else parts
        n = sum(x.shape[0] for x in parts)
        y = self.labels
        if y.dtype != torch.int64 or y.shape != (n,):
            raise ValueError(f"labels must be int64 ({n},), got {y.dtype} {tuple(y.shape)}")
        if not self.resolution:
            self.resolution = max(sides)
        if self.resolution < 1:
            raise ValueError(f"resolution must be positive, got {self.resolution}")

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def sides(self) -> list[int]:
        """The stored side of each part."""
        return [x.shape[-1] for x in self.parts]

    @property
    def starts(self) -> list[int]:
        """The split index of each part's first image."""
        out, s = [], 0
        for x in self.parts:
            out.append(s)
            s += x.shape[0]
        return out

    @property
    def nbytes(self) -> int:
        """Bytes of the stored images."""
        return sum(x.numel() for x in self.parts)

    def at(self, resolution: int) -> "Split":
        """The same images, batched at another resolution (nothing is copied)."""
        return replace(self, images=self.parts, resolution=int(resolution))

    def take(self, index: torch.Tensor, fingerprint: str) -> "Split":
        """The images at sorted split indices ``index`` (a copy), as a new split."""
        index = torch.as_tensor(index, dtype=torch.int64)
        parts = []
        for x, lo in zip(self.parts, self.starts):
            rows = index[(index >= lo) & (index < lo + x.shape[0])] - lo
            if len(rows):
                parts.append(x[rows])
        return Split(images=parts, labels=self.labels[index], classes=self.classes, fingerprint=fingerprint,
                     skipped=self.skipped, resolution=self.resolution)

    def counts(self) -> list[int]:
        """Images per class, in label order."""
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()


@dataclass
class DataSet:
    """A training and a validation split, batched at one resolution.

    Args:
        train: the training split.
        val: the validation split (the source's ``val/`` or ``test/``).
        name: ``"default"`` or the source's name (its file or folder name).
        resolution: image size R in pixels of the batches (both splits are batched at it).
    """

    train: Split
    val: Split
    name: str
    resolution: int

    def __post_init__(self) -> None:  # the data set's resolution is its splits' batches'
        for s in ("train", "val"):
            if getattr(self, s).resolution != self.resolution:
                setattr(self, s, getattr(self, s).at(self.resolution))

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    def at(self, resolution: int) -> "DataSet":
        """The same data batched at another resolution (nothing is copied or read)."""
        return DataSet(self.train.at(resolution), self.val.at(resolution), self.name, int(resolution))
