"""Batches for training and evaluation, shuffled and augmented on the device; no loader processes."""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import math
from typing import Iterator

import torch
import torch.nn.functional as F

from .base import Split

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIDENT_SHARE = 0.4  # a split is kept on a GPU if it takes at most this share of free memory


def channel_stats(split: Split, max_images: int = 10_000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of a split's pixels in [0, 1].

    From at most ``max_images`` evenly spaced images. Pass the training split's to the
    ``mean`` and ``std`` of both splits' :class:`Batches`.
    """
    n = len(split)
    idx = torch.linspace(0, n - 1, min(n, max_images)).round().long()
    x = split.images[idx].to(torch.float64).div_(255)
    return tuple(x.mean((0, 2, 3)).tolist()), tuple(x.std((0, 2, 3)).tolist())


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


class Batches:
    """One split as batches of normalised images on a device, an epoch per iteration.

    The uint8 images go to the device once (unless streamed); each epoch is shuffled
    there with a permutation, and training batches are augmented there: a random resized
    crop per sample (area ``crop_scale`` of the image, aspect ratio in ``crop_ratio``,
    back to R x R by bilinear sampling of an affine grid) and a horizontal flip with
    probability 1/2. Evaluation batches come in the split's order, unaugmented.

    Epoch ``e`` draws its order and augmentation from ``(seed, e)`` alone, so a run is
    reproducible on the CPU (and on a GPU up to the sampling kernels' rounding). Each
    iteration advances the epoch; :meth:`set_epoch` sets it, e.g. when resuming.

    Sharded (``shard=(rank, world)``, one shard per data-parallel process), training
    batch ``k`` of rank ``r`` is rows ``r*b .. (r+1)*b`` of the one-process batch ``k`` of
    ``world * b`` images (the same permutation on every rank, from the seed), augmented
    exactly as those rows would be there; the ranks' shards are disjoint and together
    are the one-process epoch. Evaluation shards are contiguous blocks of the split.

    Args:
        split: the images and labels.
        batch_size: images per batch.
        train: shuffle, augment and drop the last partial batch (unless ``drop_last``).
        device: where batches are made. A split already on that device is not copied.
        seed: seed of the shuffling and augmentation.
        dtype: floating dtype of the images (e.g. ``torch.bfloat16`` on a GPU).
        drop_last: drop a last, partial batch (default: ``train``).
        mean: per-channel mean subtracted from pixels in [0, 1].
        std: per-channel standard deviation they are divided by.
        crop_scale: range of the crop's share of the image's area.
        crop_ratio: range of the crop's aspect ratio (width / height), drawn log-uniformly.
        flip: flip horizontally with probability 1/2 when training.
        stream: keep the split in host memory (memory-mapped, say) and send each batch
            through pinned memory; default: only when the device is a GPU whose free
            memory the split would take more than 40% of.
        shard: ``(rank, world)``: this process's part of each epoch; ``batch_size`` is
            then per process. Training shards need ``drop_last``.

    Example:
        >>> split = Split(torch.zeros(10, 3, 8, 8, dtype=torch.uint8), torch.arange(10) % 2, ["a", "b"], "x")
        >>> batches = Batches(split, 4, train=False, device="cpu", seed=0)
        >>> len(batches), [tuple(x.shape) for x, _ in batches]
        (3, [(4, 3, 8, 8), (4, 3, 8, 8), (2, 3, 8, 8)])
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        train: bool,
        device: str | torch.device,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        drop_last: bool | None = None,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        crop_scale: tuple[float, float] = (0.35, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = True,
        stream: bool | None = None,
        shard: tuple[int, int] = (0, 1),
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating type, got {dtype}")
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1 or not 0 < crop_ratio[0] <= crop_ratio[1]:
            raise ValueError(f"bad crop_scale {crop_scale} or crop_ratio {crop_ratio}")
        self.split, self.batch_size, self.train, self.seed, self.dtype = split, batch_size, train, seed, dtype
        self.drop_last = train if drop_last is None else drop_last
        self.rank, self.world = (int(v) for v in shard)
        if not 0 <= self.rank < self.world:
            raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
        if self.train and self.world > 1 and not self.drop_last:
            raise ValueError("a sharded training split drops the last partial batch (drop_last)")
        self.crop_scale, self.crop_ratio, self.flip = crop_scale, crop_ratio, flip
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.n = len(split)
        if self.train:  # positions [lo, hi) of the epoch's order; whole batches of world * batch_size
            self.lo, self.hi, self.step = 0, self.n, batch_size * self.world
        else:  # a contiguous block of the split
            self.lo, self.hi, self.step = self.rank * self.n // self.world, (self.rank + 1) * self.n // self.world, batch_size
        if self.drop_last and self.hi - self.lo < self.step:
            raise ValueError(f"batch_size {self.step} exceeds the split's {self.hi - self.lo} images: no full "
                             "batch; pass drop_last=False")
        images = split.images
        if stream is None:
            stream = images.device != self.device and self.device.type == "cuda" and not _fits(images, self.device)
        self.stream = bool(stream) and self.device.type == "cuda"
        self.images = images if self.stream else images.to(self.device)
        self.labels = split.labels.to(self.device)
        m = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.mean, self.std = tuple(mean), tuple(std)
        self._scale, self._shift = 1 / (255 * s), m / s  # (x / 255 - mean) / std = x * scale - shift
        self.epoch = 0

    def __len__(self) -> int:
        m = self.hi - self.lo
        return m // self.step if self.drop_last else -(-m // self.step)

    def _spans(self) -> list[tuple[int, int]]:
        """This rank's batches as [lo, hi) positions in the epoch's order (the split's when evaluating)."""
        if self.train:
            off = self.rank * self.batch_size
            return [(k * self.step + off, min(k * self.step + off + self.batch_size, self.n)) for k in range(len(self))]
        return [(lo, min(lo + self.step, self.hi)) for lo in range(self.lo, self.hi, self.step)][: len(self)]

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch``."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        home = self.images.device  # where the permutation is drawn and used
        g_order = torch.Generator(device=home).manual_seed(_seed(self.seed, epoch, "order"))
        g_aug = torch.Generator(device=self.device).manual_seed(_seed(self.seed, epoch, "augment"))
        order = torch.randperm(self.n, generator=g_order, device=home) if self.train else None
        spans = self._spans()
        if self.stream:
            batches = self._streamed(order, spans)
        else:
            batches = ((self.images[lo:hi], self.labels[lo:hi]) if order is None else
                       (self.images[order[lo:hi]], self.labels[order[lo:hi]]) for lo, hi in spans)
        for x, y in batches:
            yield self._finish(x, g_aug), y

    # -- the steps of a batch

    def _finish(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 (b, 3, R, R) on the device -> augmented, normalised, channels_last, ``dtype``."""
        x = x.to(dtype=torch.float32, memory_format=torch.channels_last)
        if self.train:
            x = self._augment(x, gen).contiguous(memory_format=torch.channels_last)
        x = x.mul_(self._scale).sub_(self._shift)
        return x.to(self.dtype)

    def _augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Random resized crop and horizontal flip, one affine map per sample."""
        b = x.shape[0]
        if self.world == 1:
            u = torch.rand(b, 5, generator=gen, device=x.device)
        else:  # the whole batch's draws, of which this rank's rows: as one process would augment them
            off = self.rank * self.batch_size
            u = torch.rand(self.step, 5, generator=gen, device=x.device)[off: off + b]
        lo, hi = self.crop_scale
        area = lo + (hi - lo) * u[:, 0]
        log_lo, log_hi = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        ratio = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
        w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width / image width
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        sign = torch.where(u[:, 4] < 0.5, -1.0, 1.0) if self.flip else torch.ones_like(w)
        theta = torch.zeros(b, 2, 3, device=x.device)
        theta[:, 0, 0] = w * sign
        theta[:, 0, 2] = (2 * u[:, 2] - 1) * (1 - w)  # crop centre, in [-1, 1] image coordinates
        theta[:, 1, 1] = h
        theta[:, 1, 2] = (2 * u[:, 3] - 1) * (1 - h)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def _streamed(self, order: torch.Tensor | None, spans: list[tuple[int, int]]):
        """Batches gathered in host memory by a thread, sent through two pinned buffers."""
        shape = (self.batch_size, *self.images.shape[1:])
        buffers = [torch.empty(shape, dtype=torch.uint8).pin_memory() for _ in range(2)]
        copied: list[torch.cuda.Event | None] = [None, None]

        def gather(k: int, lo: int, hi: int) -> tuple[int, torch.Tensor]:
            if copied[k] is not None:
                copied[k].synchronize()  # the buffer's last copy to the device is done
            idx = torch.arange(lo, hi) if order is None else order[lo:hi].sort().values
            torch.index_select(self.images, 0, idx, out=buffers[k][: hi - lo])
            return k, idx

        with cf.ThreadPoolExecutor(1) as pool:
            nxt = pool.submit(gather, 0, *spans[0]) if spans else None
            for i in range(len(spans)):
                k, idx = nxt.result()
                x = buffers[k][: len(idx)].to(self.device, non_blocking=True)
                copied[k] = torch.cuda.Event()
                copied[k].record()
                if i + 1 < len(spans):
                    nxt = pool.submit(gather, 1 - k, *spans[i + 1])
                yield x, self.labels[idx.to(self.device, non_blocking=True)]


def _fits(images: torch.Tensor, device: torch.device) -> bool:
    free, _ = torch.cuda.mem_get_info(device)
    return images.numel() * images.element_size() <= RESIDENT_SHARE * free
