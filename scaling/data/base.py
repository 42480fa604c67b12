"""The data types shared by the data modules: splits, data sets and the data error."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


class DataError(ValueError):
    """The data cannot be used as asked: a missing split, an empty class, a bad file in strict mode."""


@dataclass
class Split:
    """One split of a data set, decoded and resized.

    Args:
        images: uint8 (N, 3, R, R); often backed by a memory-mapped cache file, so
            reading it pages the file in lazily.
        labels: int64 (N,), indices into ``classes``.
        classes: class names in label order.
        fingerprint: identifies the content: the source's files, the split, the
            resolution and the resize policy (and the subset, where one was drawn).
            Equal fingerprints mean equal tensors.
        skipped: files left out because they could not be used, as paths relative to
            the source's root (inside the archive for a tar).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    fingerprint: str
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        x, y = self.images, self.labels
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3]:
            raise ValueError(f"images must be uint8 (N, 3, R, R), got {x.dtype} {tuple(x.shape)}")
        if y.dtype != torch.int64 or y.shape != (x.shape[0],):
            raise ValueError(f"labels must be int64 ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]

    def counts(self) -> list[int]:
        """Images per class, in label order."""
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()


@dataclass
class DataSet:
    """A training and a validation split at one resolution.

    Args:
        train: the training split.
        val: the validation split (the source's ``val/`` or ``test/``).
        name: ``"default"`` or the source's name (its file or folder name).
        resolution: image size R in pixels.
    """

    train: Split
    val: Split
    name: str
    resolution: int

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    @property
    def classes(self) -> list[str]:
        return self.train.classes
