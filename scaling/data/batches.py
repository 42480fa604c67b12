"""Batches for training and evaluation, cut to the trial's resolution on the device; no loader processes."""

from __future__ import annotations

import concurrent.futures as cf
import math
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from ..digest import seed_of as _seed
from .base import Split

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIDENT_SHARE = 0.4  # a split is kept on a GPU if it takes at most this share of free memory
RESIZE_ENV = "SCALING_RESIZE"
# How a batch is cut and resized, in one batched call (bench/data_bench.py measures both):
#   roi:  torchvision's roi_align, each output pixel the mean of bilinear samples over its
#         footprint (antialiased when shrinking, bilinear when enlarging);
#   grid: torch's affine_grid + grid_sample, one bilinear sample per output pixel (aliases
#         when shrinking by more than about 1.5x).
RESIZE_METHODS = ("roi", "grid")
DEFAULT_RESIZE = "roi"


def channel_stats(split: Split, max_images: int = 10_000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation in [0, 1] of a split's pixels as its
    evaluation batches show them (resized to its resolution).

    From at most ``max_images`` evenly spaced images. Pass the training split's to the
    ``mean`` and ``std`` of both splits' :class:`Batches`.
    """
    n = len(split)
    idx = torch.linspace(0, n - 1, min(n, max_images)).round().long().unique()
    s1 = torch.zeros(3, dtype=torch.float64)
    s2 = torch.zeros(3, dtype=torch.float64)
    count = 0
    for x, lo in zip(split.parts, split.starts):
        rows = idx[(idx >= lo) & (idx < lo + x.shape[0])] - lo
        if not len(rows):
            continue
        v = _resize(x[rows].float(), split.resolution).to(torch.float64).div_(255)
        s1 += v.sum((0, 2, 3))
        s2 += v.square().sum((0, 2, 3))
        count += v[:, 0].numel()
    mean = s1 / count
    std = (s2 / count - mean.square()).clamp_min(0).mul(count / max(1, count - 1)).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


@dataclass(frozen=True)
class DeviceNeed:
    """Bytes a :class:`Batches` takes on its device: the stored split, and one batch's buffers."""

    stored: int
    per_batch: int

    @property
    def total(self) -> int:
        return self.stored + 2 * self.per_batch


def batch_bytes(split: Split, batch_size: int, resolution: int | None = None) -> int:
    """Bytes of one batch's buffers on the device at ``resolution`` (default: the split's):
    the uint8 gather, its float32 copy, the float32 output and its cast."""
    r = resolution or split.resolution
    s = max(split.sides)
    return batch_size * 3 * (s * s * 5 + r * r * 8)


def resize_boxes(x: torch.Tensor, boxes: torch.Tensor, size: int, method: str) -> torch.Tensor:
    """Cut box ``k`` of image ``k`` and resize it to ``size`` x ``size``, all in one call.

    Args:
        x: float (b, C, H, W); image ``k``'s pixels may fill only the top-left of it (a
            padded batch of images of several sizes), if the pixel row and column after
            them repeat the last ones (so that sampling at the edge sees no padding).
        boxes: float (b, 4): x0, y0, x1, y1 in pixels (pixel ``i`` spans [i, i + 1)).
        size: output side.
        method: ``roi`` (antialiased) or ``grid`` (one bilinear sample per pixel).

    Returns:
        float (b, C, size, size).
    """
    b, _, h, w = x.shape
    if method == "roi":
        from torchvision.ops import roi_align

        rois = torch.cat([torch.arange(b, device=x.device, dtype=x.dtype)[:, None], boxes.to(x.dtype)], 1)
        return roi_align(x, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    if method == "grid":
        theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = (boxes[:, 2] - boxes[:, 0]) / w
        theta[:, 0, 2] = (boxes[:, 0] + boxes[:, 2]) / w - 1
        theta[:, 1, 1] = (boxes[:, 3] - boxes[:, 1]) / h
        theta[:, 1, 2] = (boxes[:, 1] + boxes[:, 3]) / h - 1
        grid = F.affine_grid(theta, [b, x.shape[1], size, size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    raise ValueError(f"resize must be one of {RESIZE_METHODS}, got {method!r}")


class Batches:
    """One split as batches of normalised R x R images on a device, an epoch per iteration.

    R is the split's ``resolution``; its images are stored at their own sizes (see
    :class:`~.base.Split`). The uint8 images go to the device once (unless streamed);
    each epoch is shuffled with a permutation, and each batch is cut and resized to R on
    the device: training batches by a random resized crop per sample (area
    ``crop_scale`` of the image, aspect ratio in ``crop_ratio``) in one batched call
    (``resize``), and a horizontal flip with probability 1/2; evaluation batches, in the
    split's order, by resizing the whole (square) image, the centre square of the
    source's image, bilinear and antialiased (torch's interpolate, as Pillow's resize),
    one call per stored size. Images of several stored sizes share a batch padded to the
    largest.

    Epoch ``e`` draws its order (on the CPU) and augmentation from ``(seed, e)`` alone,
    so a run is reproducible on the CPU (and on a GPU up to the sampling kernels'
    rounding). Each iteration advances the epoch; :meth:`set_epoch` sets it, e.g. when
    resuming.

    Sharded (``shard=(rank, world)``, one shard per data-parallel process), training
    batch ``k`` of rank ``r`` is rows ``r*b .. (r+1)*b`` of the one-process batch ``k`` of
    ``world * b`` images (the same permutation on every rank, from the seed), augmented
    exactly as those rows would be there; the ranks' shards are disjoint and together
    are the one-process epoch. Evaluation shards are contiguous blocks of the split.

    Args:
        split: the images and labels, and the resolution of the batches.
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
            memory the split and a batch's buffers would take more than 40% of.
        shard: ``(rank, world)``: this process's part of each epoch; ``batch_size`` is
            then per process. Training shards need ``drop_last``.
        resize: ``roi`` or ``grid`` (see :func:`resize_boxes`); default ``$SCALING_RESIZE``,
            else ``roi``.

    Example:
        >>> split = Split(torch.zeros(10, 3, 8, 8, dtype=torch.uint8), torch.arange(10) % 2, ["a", "b"], "x")
        >>> batches = Batches(split.at(12), 4, train=False, device="cpu", seed=0)
        >>> len(batches), [tuple(x.shape) for x, _ in batches]
        (3, [(4, 3, 12, 12), (4, 3, 12, 12), (2, 3, 12, 12)])
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
        resize: str | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating type, got {dtype}")
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1 or not 0 < crop_ratio[0] <= crop_ratio[1]:
            raise ValueError(f"bad crop_scale {crop_scale} or crop_ratio {crop_ratio}")
        self.resize = resize or os.environ.get(RESIZE_ENV) or DEFAULT_RESIZE
        if self.resize not in RESIZE_METHODS:
            raise ValueError(f"resize must be one of {RESIZE_METHODS}, got {self.resize!r}")
        self.split, self.batch_size, self.train, self.seed, self.dtype = split, batch_size, train, seed, dtype
        self.resolution = split.resolution
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
        self.need = DeviceNeed(split.nbytes, batch_bytes(split, batch_size))
        parts = split.parts
        if stream is None:
            stream = parts[0].device != self.device and self.device.type == "cuda" and not _fits(self.need, self.device)
        self.stream = bool(stream) and self.device.type == "cuda"
        self.parts = parts if self.stream else tuple(x.to(self.device) for x in parts)
        self.images = self.parts[0] if len(self.parts) == 1 else self.parts
        self.sides = split.sides
        self.starts = torch.tensor(split.starts, dtype=torch.int64)
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
        g_order = torch.Generator().manual_seed(_seed(self.seed, epoch, "order"))
        g_aug = torch.Generator(device=self.device).manual_seed(_seed(self.seed, epoch, "augment"))
        order = torch.randperm(self.n, generator=g_order) if self.train else None
        spans = self._spans()
        if self.stream:
            batches = self._streamed(order, spans)
        elif len(self.parts) == 1:
            dev_order = order.to(self.device, non_blocking=True) if order is not None else None
            batches = ((self.parts[0][lo:hi], None, self.labels[lo:hi]) if order is None else
                       (self.parts[0][dev_order[lo:hi]], None, self.labels[dev_order[lo:hi]]) for lo, hi in spans)
        else:
            batches = (self._resident(torch.arange(lo, hi) if order is None else order[lo:hi]) for lo, hi in spans)
        for x, sides, y in batches:
            yield self._finish(x, sides, g_aug), y

    # -- gathering

    def _locate(self, idx: torch.Tensor) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """(part, positions in the batch, rows in the part) of split indices ``idx`` (CPU)."""
        which = torch.searchsorted(self.starts, idx, right=True) - 1
        out = []
        for p in which.unique().tolist():
            pos = (which == p).nonzero().flatten()
            out.append((p, pos, idx[pos] - self.starts[p]))
        return out

    def _canvas(self, b: int, side: int, device) -> torch.Tensor:
        return torch.empty(b, 3, side, side, dtype=torch.uint8, device=device)

    def _fill(self, canvas: torch.Tensor, located, sides: torch.Tensor, source) -> None:
        """Put each part's images top-left in ``canvas``, the row and column after them repeated."""
        big = canvas.shape[-1]
        for p, pos, rows in located:
            s = self.sides[p]
            pos_d = pos.to(canvas.device, non_blocking=True)
            rows = rows.to(source[p].device, non_blocking=True)
            canvas[pos_d, :, :s, :s] = torch.index_select(source[p], 0, rows).to(canvas.device)
            if s < big:
                canvas[pos_d, :, :s, s] = canvas[pos_d, :, :s, s - 1]
                canvas[pos_d, :, s, : s + 1] = canvas[pos_d, :, s - 1, : s + 1]
            sides[pos] = s

    def _resident(self, idx: torch.Tensor):
        """A batch of images of several sizes, on the device: (uint8 canvas, sides, labels)."""
        located = self._locate(idx)
        side = max(self.sides[p] for p, _, _ in located)
        canvas = self._canvas(len(idx), side, self.device)
        sides = torch.empty(len(idx), dtype=torch.float32)
        self._fill(canvas, located, sides, self.parts)
        return canvas, sides, self.labels[idx.to(self.device, non_blocking=True)]

    # -- the steps of a batch

    def _finish(self, x: torch.Tensor, sides: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
        """uint8 (b, 3, S, S) on the device (image k filling sides[k] of it, sides on the CPU) ->
        cut, resized to R, augmented, normalised, channels_last, ``dtype``."""
        b, r = x.shape[0], self.resolution
        if sides is None and not self.train and x.shape[-1] == r:  # nothing to resample
            x = x.to(dtype=torch.float32, memory_format=torch.channels_last)
            return x.mul_(self._scale).sub_(self._shift).to(self.dtype)
        if self.train:
            # no blocking copy to the device here: it would wait for the queued training step
            size = (torch.full((b,), float(x.shape[-1]), device=self.device) if sides is None
                    else sides.to(self.device, non_blocking=True))
            boxes, flips = self._crops(b, size, gen)
            out = resize_boxes(x.float(), boxes, r, self.resize)
            out = torch.where(flips.view(-1, 1, 1, 1), out.flip(-1), out)
        elif sides is None:
            out = _resize(x.float(), r)
        else:  # one call per stored size in the batch
            out = torch.empty(b, x.shape[1], r, r, device=x.device)
            for s in sides.unique().tolist():
                rows = (sides == s).nonzero().flatten().to(x.device, non_blocking=True)
                out[rows] = _resize(x[rows, :, : int(s), : int(s)].float(), r)
        out = out.mul_(self._scale).sub_(self._shift)
        return out.to(dtype=self.dtype, memory_format=torch.channels_last)

    def _crops(self, b: int, size: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random resized crops in pixels (x0, y0, x1, y1) of images of side ``size``, and flips."""
        if self.world == 1:
            u = torch.rand(b, 5, generator=gen, device=self.device)
        else:  # the whole batch's draws, of which this rank's rows: as one process would augment them
            off = self.rank * self.batch_size
            u = torch.rand(self.step, 5, generator=gen, device=self.device)[off: off + b]
        lo, hi = self.crop_scale
        area = lo + (hi - lo) * u[:, 0]
        log_lo, log_hi = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        ratio = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
        w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width / image width
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (2 * u[:, 2] - 1) * (1 - w)  # crop centre, in [-1, 1] image coordinates
        cy = (2 * u[:, 3] - 1) * (1 - h)
        half = size / 2
        boxes = torch.stack([(cx - w + 1) * half, (cy - h + 1) * half, (cx + w + 1) * half, (cy + h + 1) * half], 1)
        flips = u[:, 4] < 0.5 if self.flip else torch.zeros(b, dtype=torch.bool, device=self.device)
        return boxes, flips

    def _streamed(self, order: torch.Tensor | None, spans: list[tuple[int, int]]):
        """Batches gathered in host memory by a thread, sent through two pinned buffers."""
        big = max(self.sides)
        buffers = [self._canvas(self.batch_size, big, "cpu").pin_memory() for _ in range(2)]
        copied: list[torch.cuda.Event | None] = [None, None]

        def gather(k: int, lo: int, hi: int):
            if copied[k] is not None:
                copied[k].synchronize()  # the buffer's last copy to the device is done
            idx = torch.arange(lo, hi) if order is None else order[lo:hi].sort().values
            if len(self.parts) == 1:
                torch.index_select(self.parts[0], 0, idx, out=buffers[k][: hi - lo])
                return k, idx, None
            sides = torch.empty(hi - lo, dtype=torch.float32)
            self._fill(buffers[k][: hi - lo], self._locate(idx), sides, self.parts)
            return k, idx, sides

        with cf.ThreadPoolExecutor(1) as pool:
            nxt = pool.submit(gather, 0, *spans[0]) if spans else None
            for i in range(len(spans)):
                k, idx, sides = nxt.result()
                x = buffers[k][: len(idx)].to(self.device, non_blocking=True)
                copied[k] = torch.cuda.Event()
                copied[k].record()
                if i + 1 < len(spans):
                    nxt = pool.submit(gather, 1 - k, *spans[i + 1])
                yield x, sides, self.labels[idx.to(self.device, non_blocking=True)]


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Whole images resized to ``size``: bilinear, antialiased when shrinking (as Pillow's and
    torchvision's resize)."""
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def _fits(need: DeviceNeed, device: torch.device) -> bool:
    free, _ = torch.cuda.mem_get_info(device)
    return need.total <= RESIDENT_SHARE * free
