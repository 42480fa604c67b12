"""Inference speed of a network on one device: latency at batch 1, throughput at a large batch.

Measured as a deployment would run it: eval mode, no gradients, bf16 autocast and
channels_last on a GPU (float32 on the CPU), after warm-up. On a GPU the forward pass is
captured once in a CUDA graph and each replay is timed with CUDA events. A small network's
eager forward pass is a few hundred kernel launches, and launching them from Python takes
longer than the GPU takes to run them (the GPU study's networks on an H200: 6.7-81 ms eager
at batch 1, moving up to 2.2x between measurements, against 0.97-6.7 ms from a graph,
steady to 3%; docs/BENCHMARKS.md), so an eager time measures the host and whatever else it
is doing. A replay launches the whole pass at once: what is timed is the GPU's work. Where a network cannot be captured, it is timed eager, with a warning. On the
CPU the wall clock times eager calls. The weights do not matter for speed, so a fresh
network of the same spec is used.
"""

from __future__ import annotations

import statistics
import time
import warnings
from contextlib import contextmanager, nullcontext

import torch

from .bases import build
from .spec import NetworkSpec


def _timer(device: torch.device):
    if device.type == "cuda":
        def run(fn, n: int) -> list[float]:
            out = []
            for _ in range(n):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                out.append(start.elapsed_time(end) / 1e3)
            return out
    else:
        def run(fn, n: int) -> list[float]:
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
            return out
    return run


def inference_speed(spec: NetworkSpec, device: str | torch.device = "cpu", *, batch: int = 256,
                    repeats: int | None = None) -> dict:
    """``latency_ms``: median time of one image (batch 1); ``throughput``: images per second
    at ``batch`` (median of the repeats). Fewer repeats on the CPU, where each is slow."""
    with ready(spec, device, batch=batch) as timing:
        return timing.time(repeats)


def model_speed(model: torch.nn.Module, in_channels: int, resolution: int, device: str | torch.device = "cpu", *,
                batch: int = 256, repeats: int | None = None, graph: bool = True) -> dict:
    """:func:`inference_speed` of a network already built (a peer's, in a benchmark): moved to
    ``device``, put in eval mode, measured on ``in_channels`` x ``resolution`` x ``resolution``
    random images, and let go. ``graph``: on a GPU, time replays of a captured CUDA graph
    (False: eager calls, as a benchmark compares)."""
    with Timing(model, in_channels, resolution, device, batch=batch, graph=graph) as timing:
        return timing.time(repeats)


def _warm(run, device: torch.device, seconds: float) -> int:
    """``run`` at least 3 times and for at least ``seconds``, each run waited for (so that the
    time is the GPU's, not a queue's); how many runs that took."""
    n, end = 0, time.perf_counter() + seconds
    while n < 3 or time.perf_counter() < end:
        run()
        torch.cuda.synchronize(device)
        n += 1
    return n


def ready(spec: NetworkSpec, device: str | torch.device, *, batch: int = 256) -> "Timing":
    """A fresh network of ``spec`` (seeded: the same weights each time) made ready to be timed."""
    torch.manual_seed(0)
    return Timing(build(spec), spec.in_channels, spec.resolution, device, batch=batch)


class Timing:
    """A network made ready to be timed on one device: deployed (:func:`_deployed`) and, on a
    GPU, its forward pass at batch 1 and at ``batch`` run once (cuDNN's plans, the allocator's
    blocks) and captured in a CUDA graph, so that :meth:`time` spends only the timed runs.
    Ready before it is timed, it can be made while a GPU is shared and timed once it is not
    (the speed pass beside the workers, :mod:`scaling.speed_pass`). It holds the network, its
    inputs and its graphs' memory until :meth:`close` (or the end of a ``with`` block)."""

    def __init__(self, model: torch.nn.Module, in_channels: int, resolution: int, device: str | torch.device, *,
                 batch: int = 256, graph: bool = True):
        self.device, self.batch = torch.device(device), batch
        cuda = self.device.type == "cuda"
        self._deployed = _deployed(model, self.device)
        net = self._deployed.__enter__()
        self._runs: dict[int, tuple] = {}  # size -> (what a timed run calls, its graph or None, the eager step)
        try:
            for size in (1, batch):
                step = _forward(net, in_channels, resolution, size, self.device)
                captured = None
                if cuda and graph:
                    step()  # cuDNN's plans and the allocator's blocks, before the capture
                    captured = _captured(step, self.device)
                self._runs[size] = (captured.replay if captured is not None else step, captured, step)
        except BaseException:
            self.close()
            raise

    def time(self, repeats: int | None = None, warmup_s: float = 0.0) -> dict:
        """``latency_ms`` (median of ``repeats`` at batch 1), ``throughput`` (images per second,
        the median of a third as many at ``batch``) and ``inference_batch``, each after a
        warm-up: 3 runs on a GPU (and, with ``warmup_s``, runs for that many seconds), 1 on the
        CPU. A longer warm-up changed nothing on an H200: its clocks stayed at their 1,980 MHz
        through 2 s of idling, and 0.05-1 s of warm-up gave the same latency within 1.3%
        (bench/clock_probe.py, docs/BENCHMARKS.md)."""
        cuda = self.device.type == "cuda"
        n = repeats or (30 if cuda else 5)
        timer = _timer(self.device)
        out = {}
        for size, key in ((1, "latency_ms"), (self.batch, "throughput")):
            run = self._runs[size][0]
            if cuda:
                _warm(run, self.device, warmup_s)
            else:
                timer(run, 1)  # warm-up: caches
            t = statistics.median(timer(run, n if size == 1 else max(3, n // 3)))
            out[key] = round(t * 1e3, 4) if size == 1 else round(size / t, 1)
        out["inference_batch"] = self.batch
        return out

    def close(self) -> None:
        """Give back the network's, its inputs' and its graphs' memory (once; a second call does nothing)."""
        if self._deployed is None:
            return
        self._runs.clear()
        deployed, self._deployed = self._deployed, None
        deployed.__exit__(None, None, None)

    def __enter__(self) -> "Timing":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _captured(step, device: torch.device) -> torch.cuda.CUDAGraph | None:
    """``step`` (warmed up already, on the current stream) captured in a CUDA graph; None,
    with a warning, where the network does something a graph cannot hold."""
    from .step import warmup_stream

    side = warmup_stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # a capture's own warm-up, as torch's documentation asks
        step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            step()
    except RuntimeError as e:
        warnings.warn(f"timed eager: the network cannot be captured in a CUDA graph ({e})", stacklevel=3)
        torch.cuda.synchronize(device)
        return None
    return graph


def prepare(spec: NetworkSpec, device: str | torch.device, *, batch: int = 256) -> None:
    """What :func:`inference_speed` would first spend on ``spec`` at batch 1 and ``batch``,
    spent now: one forward pass at each, so that this process has cuDNN's execution plans for
    the network's layer shapes (0.3-1 s a new depthwise shape on an H200, on the host) and a
    later measurement of it times only its runs. Plans are kept per process and per thread:
    a measurement gains only on the thread that prepared. Nothing is timed, returned or kept
    (:class:`Timing` keeps what it made)."""
    device = torch.device(device)
    torch.manual_seed(0)
    with _deployed(build(spec), device) as net:
        for size in (1, batch):
            _forward(net, spec.in_channels, spec.resolution, size, device)()
        if device.type == "cuda":
            torch.cuda.synchronize(device)


@contextmanager
def _deployed(model: torch.nn.Module, device: torch.device):
    """``model`` as a deployment runs it on ``device`` (eval mode; channels_last on a GPU),
    and its memory given back afterwards."""
    cuda = device.type == "cuda"
    model = model.to(device).eval()
    model = model.to(memory_format=torch.channels_last if cuda else torch.contiguous_format)
    try:
        yield model
    finally:
        del model
        if cuda:
            torch.cuda.empty_cache()


def _forward(model: torch.nn.Module, in_channels: int, resolution: int, size: int, device: torch.device):
    """One inference of ``size`` random images, as a function (bf16 autocast on a GPU)."""
    cuda = device.type == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    x = torch.randn(size, in_channels, resolution, resolution, device=device).contiguous(memory_format=fmt)
    # No cast cache: a graph's capture must not keep (or reuse) bf16 weights cast before it.
    cast = torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False) if cuda else nullcontext()

    def step() -> None:
        with torch.inference_mode(), cast:
            model(x)

    return step


def default_batch(device: torch.device) -> int:
    """The throughput batch when none is given: 256 on a GPU, 32 on the CPU (where 256 takes long)."""
    return 256 if device.type == "cuda" else 32


def measure(spec, device: str | torch.device | None = "auto", *, batch: int | None = None,
            repeats: int | None = None) -> dict:
    """:func:`inference_speed` on ``device`` (``auto``: the first GPU, else the CPU), with where
    and how it ran: ``device`` (``cuda:0 (NVIDIA H200)``, ``cpu``) and ``precision`` (bf16 on a
    GPU, fp32 on the CPU). ``batch``: the throughput batch (:func:`default_batch` by default).

    Raises:
        ValueError: an unknown device, or a GPU that is not there.
    """
    from .train import _device_name, resolve_device

    dev = resolve_device(device)
    out = inference_speed(spec, dev, batch=batch or default_batch(dev), repeats=repeats)
    return {**out, "device": _device_name(dev), "precision": "bf16" if dev.type == "cuda" else "fp32"}
