"""Depthwise convolutions in Triton, for training on GPUs.

cuDNN builds an execution plan on the host for every new depthwise shape it meets: 0.5-1.4 s
a layer on an H200 (forward, input gradient and weight gradient), which is most of a new
network's first step and, over a grid of networks with different widths and resolutions,
most of what a trial spends outside training (docs/BENCHMARKS.md). These kernels take any
shape as plain arguments: one compiled kernel per (kernel size, stride, dtype, part) serves
every width, resolution and batch, and Triton keeps the compiled kernels on disk, so a
worker's later networks, and later processes, start at once.

The layout is channels-last (N, H, W, C in memory), the one the trainer uses; the channel
count must be a multiple of 8 (16-byte rows in bf16), which EfficientNet's rounded widths
are. The weight gradient is summed per chunk of pixels and the chunks added in a fixed
order, so a run gives the same numbers every time.

:func:`use_triton_depthwise` swaps a network's depthwise layers for :class:`TritonDepthwise`
in place (same parameters, same state-dict keys); :func:`available` says whether it can.
Counting (fvcore) and inference timing run on the plain layers.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .model import SameConv2d, same_pads

CHANNEL_MULTIPLE = 8  # the kernels read rows of 8 channels


@dataclass(frozen=True)
class Blocks:
    """How a kernel's work is cut: ``pixels`` x ``channels`` a program, on ``warps`` warps."""

    pixels: int
    channels: int
    warps: int


# The fastest of bench/depthwise_bench.py's sweep over B0's layers at 56 px, batch 512, on an
# H200 (2026-12-02; docs/BENCHMARKS.md): forward and input gradient as tiles of pixels x
# channels, the weight gradient one output pixel at a time, all taps at once (as tiles of
# pixels it read the gradient once per tap: 1.5-2x slower).
FORWARD = Blocks(32, 32, 2)
INPUT_GRAD = Blocks(64, 16, 2)
WEIGHT_GRAD = Blocks(32, 32, 1)  # pixels: the run of output pixels a program sums, one at a time


# The trainer's default: these kernels for a run of at most this many optimizer steps, cuDNN's
# for a longer one. Measured on an H200 (docs/BENCHMARKS.md, 2026-12-02): cuDNN builds plans
# for about 10 s per new B0-sized network, once; at 128 px, batch 256, its steady depthwise
# layers take 4.16 ms a step against these kernels' 6.96 ms, so it pays back after about
# 3,600 steps. (At 56 px, batch 512, a whole 10-epoch run alone on the GPU was faster with
# these kernels, warm-up aside: 38,500 against 34,900 images/s; with four such runs sharing the
# GPU under MPS, the GPU study's grid trained 9.3% longer in sum.)
AUTO_MAX_STEPS = 3600
ENV = "SCALING_DEPTHWISE"  # "torch": keep torch's (cuDNN's) convolutions; "triton": these kernels, or fail


def chosen() -> bool | None:
    """What ``SCALING_DEPTHWISE`` asks for: True (triton), False (torch) or None (unset: the
    default, these kernels where they can run)."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value in ("triton", "torch"):
        return value == "triton"
    raise ValueError(f"{ENV} is 'triton', 'torch' or unset, got {value!r}")


def available(device: torch.device | str | None = None) -> bool:
    """Triton is importable and the device is a CUDA GPU (or the Triton interpreter is on)."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return _kernels() is not None
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type != "cuda":
        return False
    return torch.cuda.is_available() and _kernels() is not None


@functools.cache
def _kernels():
    """The three kernels, defined at first use (so that importing this module never needs
    Triton, and ``TRITON_INTERPRET`` is read when they are made); None without Triton."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None

    # Every size is a plain argument, never specialised: one binary for all shapes. The
    # channel count arrives in rows of 8 so that the compiler knows row starts are aligned.
    sizes = list(range(3, 11))

    @triton.jit(do_not_specialize=sizes)
    def forward(x, w, y, N, H, W, C8, OH, OW, PT, PL,
                K: tl.constexpr, S: tl.constexpr, BP: tl.constexpr, BC: tl.constexpr):
        C = C8 * 8
        p = tl.program_id(0).to(tl.int64) * BP + tl.arange(0, BP)
        c = tl.program_id(1) * BC + tl.arange(0, BC)
        pm = p < N * OH * OW
        cm = c < C
        ow = p % OW
        oh = (p // OW) % OH
        n = p // (OW * OH)
        acc = tl.zeros((BP, BC), dtype=tl.float32)
        for i in tl.static_range(K):
            ih = oh * S - PT + i
            for j in tl.static_range(K):
                iw = ow * S - PL + j
                m = pm & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
                row = ((n * H + ih) * W + iw) * C
                xv = tl.load(x + row[:, None] + c[None, :], mask=m[:, None] & cm[None, :], other=0.0)
                wv = tl.load(w + c * (K * K) + (i * K + j), mask=cm, other=0.0)
                acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
        tl.store(y + p[:, None] * C + c[None, :], acc.to(y.dtype.element_ty), mask=pm[:, None] & cm[None, :])

    @triton.jit(do_not_specialize=sizes)
    def input_grad(dy, w, dx, N, H, W, C8, OH, OW, PT, PL,
                   K: tl.constexpr, S: tl.constexpr, BP: tl.constexpr, BC: tl.constexpr):
        # dx[n, h, w, c] = sum over taps (i, j) with (h + PT - i) = oh * S and (w + PL - j) = ow * S
        C = C8 * 8
        p = tl.program_id(0).to(tl.int64) * BP + tl.arange(0, BP)
        c = tl.program_id(1) * BC + tl.arange(0, BC)
        pm = p < N * H * W
        cm = c < C
        iw = p % W
        ih = (p // W) % H
        n = p // (W * H)
        acc = tl.zeros((BP, BC), dtype=tl.float32)
        for i in tl.static_range(K):
            th = ih + PT - i
            thc = tl.maximum(th, 0)
            oh = thc // S
            mh = (th >= 0) & (thc - oh * S == 0) & (oh < OH)
            for j in tl.static_range(K):
                tw = iw + PL - j
                twc = tl.maximum(tw, 0)
                ow = twc // S
                m = pm & mh & (tw >= 0) & (twc - ow * S == 0) & (ow < OW)
                row = ((n * OH + oh) * OW + ow) * C
                g = tl.load(dy + row[:, None] + c[None, :], mask=m[:, None] & cm[None, :], other=0.0)
                wv = tl.load(w + c * (K * K) + (i * K + j), mask=cm, other=0.0)
                acc += g.to(tl.float32) * wv.to(tl.float32)[None, :]
        tl.store(dx + p[:, None] * C + c[None, :], acc.to(dx.dtype.element_ty), mask=pm[:, None] & cm[None, :])

    @triton.jit(do_not_specialize=sizes)
    def weight_grad(dy, x, part, N, H, W, C8, OH, OW, PT, PL,
                    K: tl.constexpr, S: tl.constexpr, PIX: tl.constexpr, BC: tl.constexpr, TAPS: tl.constexpr):
        # part[g, i * K + j, c] = sum over the g-th run of PIX output pixels of dy * x at tap (i, j).
        # One output pixel at a time: its gradient row is read once, and all K * K taps of the
        # input are read as one (TAPS, BC) tile (rows of neighbouring pixels overlap, so they come
        # from cache) and accumulated in registers, every tap at once.
        C = C8 * 8
        g = tl.program_id(0)
        c = tl.program_id(1) * BC + tl.arange(0, BC)
        cm = c < C
        t = tl.arange(0, TAPS)
        tm = t < K * K
        ti = t // K
        tj = t % K
        total = N * OH * OW
        acc = tl.zeros((TAPS, BC), dtype=tl.float32)
        for q in range(PIX):
            p = g.to(tl.int64) * PIX + q
            live = p < total
            ow = p % OW
            oh = (p // OW) % OH
            n = p // (OW * OH)
            ih = oh * S - PT + ti
            iw = ow * S - PL + tj
            m = tm & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W) & live
            gv = tl.load(dy + p * C + c, mask=cm & live, other=0.0)
            row = ((n * H + ih) * W + iw) * C
            xv = tl.load(x + row[:, None] + c[None, :], mask=m[:, None] & cm[None, :], other=0.0)
            acc += xv.to(tl.float32) * gv.to(tl.float32)[None, :]
        tl.store(part + (g * (K * K) + t[:, None]) * C + c[None, :], acc, mask=tm[:, None] & cm[None, :])

    return forward, input_grad, weight_grad


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class _Geometry:
    """Sizes of one depthwise layer's call: input (N, C, H, W), kernel K, stride S, padding
    top/left (the bottom/right follow from the output size OH, OW)."""

    __slots__ = ("n", "c", "h", "w", "k", "s", "pt", "pl", "oh", "ow")

    def __init__(self, x: torch.Tensor, k: int, s: int, pads: tuple[int, int, int, int]):
        left, right, top, bottom = pads
        self.n, self.c, self.h, self.w = x.shape
        self.k, self.s, self.pt, self.pl = k, s, top, left
        self.oh = (self.h + top + bottom - k) // s + 1
        self.ow = (self.w + left + right - k) // s + 1

    def args(self) -> tuple[int, ...]:
        return self.n, self.h, self.w, self.c // CHANNEL_MULTIPLE, self.oh, self.ow, self.pt, self.pl


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


def _taps(k: int) -> int:
    return 1 << (k * k - 1).bit_length()  # K * K rounded up to a power of two



def _forward(x: torch.Tensor, w: torch.Tensor, geo: _Geometry) -> torch.Tensor:
    fwd, _, _ = _kernels()
    y = torch.empty((geo.n, geo.c, geo.oh, geo.ow), dtype=x.dtype, device=x.device,
                    memory_format=torch.channels_last)
    b = FORWARD
    grid = (_cdiv(geo.n * geo.oh * geo.ow, b.pixels), _cdiv(geo.c, b.channels))
    fwd[grid](x, w, y, *geo.args(), K=geo.k, S=geo.s, BP=b.pixels, BC=b.channels, num_warps=b.warps)
    return y


def _input_grad(dy: torch.Tensor, w: torch.Tensor, geo: _Geometry) -> torch.Tensor:
    _, dgrad, _ = _kernels()
    dx = torch.empty((geo.n, geo.c, geo.h, geo.w), dtype=dy.dtype, device=dy.device,
                     memory_format=torch.channels_last)
    b = INPUT_GRAD
    grid = (_cdiv(geo.n * geo.h * geo.w, b.pixels), _cdiv(geo.c, b.channels))
    dgrad[grid](dy, w, dx, *geo.args(), K=geo.k, S=geo.s, BP=b.pixels, BC=b.channels, num_warps=b.warps)
    return dx


def _weight_grad(dy: torch.Tensor, x: torch.Tensor, geo: _Geometry) -> torch.Tensor:
    _, _, wgrad = _kernels()
    b = WEIGHT_GRAD
    chunks = _cdiv(geo.n * geo.oh * geo.ow, b.pixels)
    part = torch.empty((chunks, geo.k * geo.k, geo.c), dtype=torch.float32, device=dy.device)
    grid = (chunks, _cdiv(geo.c, b.channels))
    wgrad[grid](dy, x, part, *geo.args(), K=geo.k, S=geo.s, PIX=b.pixels, BC=b.channels, TAPS=_taps(geo.k),
                num_warps=b.warps)
    return part.sum(0).t().reshape(geo.c, 1, geo.k, geo.k)  # fixed order: the same sum every run


class _DepthwiseFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, k, s, pads):
        geo = _Geometry(x, k, s, pads)
        x, w = _channels_last(x), w.contiguous()
        ctx.save_for_backward(x, w)
        ctx.geo = geo
        return _forward(x, w, geo)

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        geo = ctx.geo
        dy = _channels_last(dy)
        dx = _input_grad(dy, w, geo) if ctx.needs_input_grad[0] else None
        dw = _weight_grad(dy, x, geo).to(w.dtype) if ctx.needs_input_grad[1] else None
        return dx, dw, None, None, None


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int,
                     pads: tuple[int, int, int, int]) -> torch.Tensor:
    """A depthwise convolution of ``x`` (N, C, H, W) with ``weight`` (C, 1, K, K), zero
    padding ``pads`` = (left, right, top, bottom), no bias, through the Triton kernels.
    The same numbers as ``F.conv2d(F.pad(x, pads), weight, stride=stride, groups=C)``, up to
    the order of the sums (fp32 accumulation)."""
    c = x.shape[1]
    k = weight.shape[-1]
    if weight.shape != (c, 1, k, k):
        raise ValueError(f"a depthwise weight for {c} channels is ({c}, 1, K, K), got {tuple(weight.shape)}")
    if c % CHANNEL_MULTIPLE:
        raise ValueError(f"the Triton depthwise kernels need channels in multiples of {CHANNEL_MULTIPLE}, got {c}")
    return _DepthwiseFunction.apply(x, weight, k, stride, pads)


class TritonDepthwise(nn.Conv2d):
    """A depthwise ``nn.Conv2d`` (or :class:`scaling.model.SameConv2d`) that runs through
    :func:`depthwise_conv2d`: the same parameters and padding as the layer it replaces.

    Under autocast it computes in the autocast dtype, as the convolution would.
    """

    def __init__(self, conv: nn.Conv2d):
        k = conv.kernel_size[0]
        super().__init__(conv.in_channels, conv.out_channels, k, conv.stride, 0, groups=conv.groups,
                         bias=conv.bias is not None, device="meta")
        self.weight = conv.weight
        self.bias = conv.bias
        self.padding = conv.padding
        self.same = isinstance(conv, SameConv2d)  # TensorFlow "same": from the input's size, unless fixed
        self.static_pad = conv.static_pad if self.same else None

    def pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) for an input of h x w."""
        if self.static_pad is not None:
            return self.static_pad
        if self.same:
            return same_pads(h, w, self.kernel_size, self.stride)
        ph, pw = self.padding
        return pw, pw, ph, ph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if torch.is_autocast_enabled(x.device.type):
            dt = torch.get_autocast_dtype(x.device.type)
            x, w = x.to(dt), w.to(dt)
        else:
            w = w.to(x.dtype)
        y = depthwise_conv2d(x, w, self.stride[0], self.pads(*x.shape[-2:]))
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)[None, :, None, None]
        return y


def replaceable(m: nn.Module) -> bool:
    """A depthwise 2-d convolution the kernels cover: groups = channels in = channels out (a
    multiple of 8), a square kernel, one stride for both sides, no dilation, zero padding given as
    numbers (or TensorFlow "same", :class:`scaling.model.SameConv2d`)."""
    if type(m) not in (nn.Conv2d, SameConv2d):
        return False
    return (m.groups == m.in_channels == m.out_channels and m.in_channels % CHANNEL_MULTIPLE == 0
            and m.kernel_size[0] == m.kernel_size[1] and m.stride[0] == m.stride[1]
            and m.dilation == (1, 1) and m.padding_mode == "zeros" and not isinstance(m.padding, str))


def use_triton_depthwise(net: nn.Module) -> int:
    """Swap every :func:`replaceable` layer of ``net`` for a :class:`TritonDepthwise` holding
    the same parameters; returns how many were swapped. Do it before making the optimizer
    (the parameters are the same objects, so it also works after)."""
    swapped = 0
    for name, m in list(net.named_modules()):
        if replaceable(m):
            parent, _, leaf = name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, leaf, TritonDepthwise(m))
            swapped += 1
    return swapped


def reference(x: torch.Tensor, weight: torch.Tensor, stride: int, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """The same convolution through torch (for tests and benchmarks)."""
    return F.conv2d(F.pad(x, pads), weight, stride=stride, groups=x.shape[1])


# ---------------------------------------------------------------------------- compiling ahead

KERNEL_SHAPES = ((3, 1), (3, 2), (5, 1), (5, 2))  # (kernel size, stride) of EfficientNet's and MobileNetV2's


def _cache_dir() -> Path:
    try:
        import triton.knobs

        return Path(triton.knobs.cache.dir)
    except (ImportError, AttributeError):
        return Path(os.environ.get("TRITON_CACHE_DIR") or Path.home() / ".triton" / "cache")


def _ready_mark() -> Path:
    """A file in Triton's own cache that says these kernels, as this file defines them, are
    compiled there for this Triton and GPU (cleared with the cache)."""
    try:
        import triton
    except ImportError:
        raise RuntimeError("no Triton") from None
    key = hashlib.sha256(Path(__file__).read_bytes())
    key.update(f"{triton.__version__} {torch.version.cuda} {torch.cuda.get_device_capability()}".encode())
    return _cache_dir() / f"scaling-depthwise-{key.hexdigest()[:16]}.ready"


CACHED = 3  # a forked compile's exit code: the kernels were in Triton's cache already (the mark is there)


class Compiling:
    """The kernels of :data:`KERNEL_SHAPES` compiling into Triton's disk cache in parallel
    (:func:`start_compiling`), one process a shape, or forked, one a kernel: :meth:`wait` for
    them, or :meth:`cancel` (also on leaving a ``with`` block unwaited: nothing is left running).

    Args:
        mark: the cache's mark (:func:`_ready_mark`); None where this process must not start
            CUDA to find it (``fork``): the children look for it, and :meth:`wait` finds it.
        fork: fork the processes from this one (:mod:`scaling.forked`: no second import of
            torch), else start ``python -m scaling.depthwise K S``.
    """

    def __init__(self, mark: Path | None, fork: bool = False):
        self.mark, self.t0, self.done = mark, time.perf_counter(), False
        if fork:
            from .forked import Forked

            # one process a kernel: a child's own start is only CUDA's (0.3-1.5 s), and the slowest
            # shape's three kernels took 7 s in one (bench/start_trace.py, 2026-12-02)
            self.procs = [Forked(functools.partial(_forked_compile, k, s, part), stderr=True,
                                 name=f"compile {part} {k} {s}") for k, s in KERNEL_SHAPES for part in KERNEL_PARTS]
        else:
            self.procs = [subprocess.Popen([sys.executable, "-m", "scaling.depthwise", str(k), str(s)],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                          for k, s in KERNEL_SHAPES]

    def wait(self, say: Callable[[str], None] | None = None) -> float:
        """Wait for every kernel, write the cache's mark where all compiled, and say it; the
        seconds since the start (what compiling cost where nothing ran beside it), 0 where
        the children found them compiled already."""
        ends = [(p.returncode, err) for p in self.procs for _, err in [p.communicate()]]  # no full pipe
        self.done = True
        failed = [(err.strip().splitlines() or ["no message"])[-1] for rc, err in ends if rc not in (0, CACHED)]
        seconds = time.perf_counter() - self.t0
        if failed:  # the workers will compile what is missing themselves
            if say:
                say(f"compiling the Triton depthwise kernels failed ({failed[0]}); the workers compile them")
            return seconds
        if all(rc == CACHED for rc, _ in ends):
            return 0.0
        mark = self.mark or _ready_mark()
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()
        if say:
            say(f"compiled the Triton depthwise kernels in {seconds:.1f} s (once per machine: they are cached)")
        return seconds

    def cancel(self) -> None:
        """Stop the compiles still running (a search that ends before its workers start)."""
        if self.done:
            return
        self.done = True
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            p.communicate()

    def __enter__(self) -> "Compiling":
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()


def start_compiling() -> Compiling | None:
    """Start compiling the kernels into Triton's disk cache, so that the workers of a search
    find them there (compiling costs 2-8 s a shape; loading from the cache ~10 ms); a
    search starts it first and does its other start-up (the data, the study) meanwhile.
    None where they are compiled already (found here), or where the kernels cannot run.
    Where this process may still fork (:func:`scaling.forked.can_fork`) the processes are
    forked, and they look for the compiled kernels themselves: this process starts no CUDA.

    Raises:
        ValueError: ``SCALING_DEPTHWISE`` says something else than on, off or auto.
    """
    from .forked import can_fork

    if chosen() is False:
        return None
    if os.environ.get("TRITON_INTERPRET") != "1" and can_fork():
        # torch counts GPUs through NVML here, without starting CUDA
        return Compiling(None, fork=True) if torch.cuda.device_count() > 0 and _kernels() is not None else None
    if not available("cuda"):
        return None
    try:
        mark = _ready_mark()
    except (RuntimeError, AssertionError):  # no GPU (or no Triton) to ask after all
        return None
    return None if mark.exists() else Compiling(mark)


def compile_ahead(say: Callable[[str], None] | None = None) -> float:
    """:func:`start_compiling`, and wait for it: the seconds it took (0 where nothing compiled)."""
    compiling = start_compiling()
    return compiling.wait(say) if compiling is not None else 0.0


def load_kernels(device: torch.device | str = "cuda") -> None:
    """Launch every kernel of :data:`KERNEL_SHAPES` once on ``device``: compiled, or loaded from
    Triton's disk cache, before the first network needs them."""
    with torch.cuda.device(device):
        for k, s in KERNEL_SHAPES:
            _compile_one(k, s)


def _forked_compile(k: int, s: int, part: str) -> int:
    """One kernel's compile forked from the search (:class:`Compiling`): :data:`CACHED` where
    the mark says the kernels are compiled, else kernel ``part`` at shape (k, s) compiled; a
    fresh interpreter does it where CUDA cannot start in this child."""
    from .forked import exec_instead, usable_here

    if not usable_here("cuda"):
        exec_instead(["-m", "scaling.depthwise", str(k), str(s), part])
    if _ready_mark().exists():
        return CACHED
    _compile_part(k, s, part)
    return 0


def _compile_one(k: int, s: int) -> None:
    """One forward and backward of a small layer at kernel size k, stride s, in bf16 on the GPU."""
    x = torch.randn(2, 16, 9, 9, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    w = torch.randn(16, 1, k, k, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    x.requires_grad_(True)
    depthwise_conv2d(x, w, s, (k // 2,) * 4).sum().backward()
    torch.cuda.synchronize()


KERNEL_PARTS = ("forward", "input_grad", "weight_grad")  # the three kernels of each shape


def _compile_part(k: int, s: int, part: str) -> None:
    """One of the three kernels (:data:`KERNEL_PARTS`) launched once at kernel size k, stride s."""
    x = torch.randn(2, 16, 9, 9, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    w = torch.randn(16, 1, k, k, device="cuda", dtype=torch.bfloat16)
    geo = _Geometry(x, k, s, (k // 2,) * 4)
    dy = torch.randn(2, 16, geo.oh, geo.ow, device="cuda", dtype=torch.bfloat16).contiguous(
        memory_format=torch.channels_last)
    {"forward": lambda: _forward(x, w, geo), "input_grad": lambda: _input_grad(dy, w, geo),
     "weight_grad": lambda: _weight_grad(dy, x, geo)}[part]()
    torch.cuda.synchronize()


if __name__ == "__main__":  # through the package's module, so that the kernels are the same ones (cache keys)
    from scaling import depthwise

    k_, s_ = int(sys.argv[1]), int(sys.argv[2])
    if len(sys.argv) > 3:
        depthwise._compile_part(k_, s_, sys.argv[3])
    else:
        depthwise._compile_one(k_, s_)
