"""One training step: ``step(images, labels, lr) -> loss``, eager or replayed from a CUDA graph.

Every step implements :class:`Step`. :class:`EagerStep` runs the forward and backward passes
in micro-batches (gradient accumulation) and the optimizer; :class:`GraphStep` replays the
whole step captured once in a CUDA graph; :class:`HalvingStep`, the step
:func:`scaling.train.train` trains with, takes the graph where it applies and the eager step
otherwise, and is the one place that handles CUDA running out of memory: it halves the
micro-batch (the same effective batch) down to a floor, then raises :class:`OutOfMemory`.
(On the CPU the kernel kills the process rather than raise: the micro-batch is chosen up
front there, :mod:`scaling.memory`.)

B0-sized networks at proxy batch sizes launch ~750 small kernels per step; on a fast
GPU the host cannot launch them as fast as they run, and the GPU idles (see
docs/BENCHMARKS.md). Replaying a captured graph launches the whole step at once.

Capture needs a few eager warm-up steps (on a side stream); their effect on the weights,
the batch-norm statistics and the momentum is undone before capture, so the run trains
as if they never happened. The learning rate lives in a device tensor that the step
reads, so the schedule can change it between replays. Only SGD (torch's fused kernel,
which takes a tensor learning rate) is captured; other optimizers train eagerly.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Callable, Protocol

import torch

WARMUP = 3

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, labels) -> mean loss


class Step(Protocol):
    """What the training loop calls once per batch."""

    micro: int  # images per forward pass: the batch, or less (gradient accumulation)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        """One optimizer step over the batch (x, y) at learning rate ``lr``; the batch's mean loss
        (a 0-dim device tensor, not synchronised with the host)."""
        ...

    def release(self) -> None:
        """Free what the step holds beyond the model and the optimizer (a graph's memory pool)."""
        ...


# ---------------------------------------------------------------------------- eager


class EagerStep:
    """One optimizer step in micro-batches of ``micro`` images: each one's forward and backward
    pass (its loss weighted by its share of the batch, so the gradients add up to the whole
    batch's), then the optimizer.

    Under DistributedDataParallel (``model`` its wrapper, ``processes`` > 1) the gradients are
    averaged over the processes once, in the last micro-batch's backward pass, and the loss
    returned is the mean over the processes: every process sees a NaN at the same step.

    Args:
        model: the network (or its DistributedDataParallel wrapper), in train mode.
        opt: its optimizer.
        loss_fn: ``(logits, labels) -> loss``.
        micro: images per forward pass.
        amp: bf16 autocast in the forward pass.
        lr: where the optimizer reads its learning rate from a device tensor (fused SGD), that
            tensor; None: the param groups' ``lr`` is set.
        processes: data-parallel processes.
    """

    def __init__(self, model, opt, loss_fn: LossFn, micro: int, amp: bool, lr: torch.Tensor | None = None,
                 processes: int = 1):
        self.model, self.opt, self.loss_fn, self.micro, self.amp = model, opt, loss_fn, micro, amp
        self.lr, self.processes = lr, processes

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        if self.lr is not None:
            self.lr.fill_(lr)
        else:
            for g in self.opt.param_groups:
                g["lr"] = lr
        loss = self._accumulate(x, y)
        if self.processes > 1:
            from . import distributed

            loss = distributed.all_reduce_sum(loss.detach().clone()).div_(self.processes)
        return loss

    def _accumulate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        n = y.shape[0]
        total = torch.zeros((), device=x.device)
        chunks = list(zip(x.split(self.micro), y.split(self.micro)))
        for k, (xs, ys) in enumerate(chunks):
            # Under DDP gradients are averaged over the processes once, in the last
            # micro-batch's backward pass; before it they accumulate locally.
            last = k + 1 == len(chunks)
            local = self.model.no_sync() if self.processes > 1 and not last else contextlib.nullcontext()
            with local:
                with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.amp):
                    logits = self.model(xs)
                loss = self.loss_fn(logits, ys) * (ys.shape[0] / n)
                loss.backward()
            total += loss.detach()
        self.opt.step()
        return total

    def release(self) -> None:
        pass


# ---------------------------------------------------------------------------- out of memory


class OutOfMemory(Exception):
    """CUDA ran out of memory where the micro-batch cannot be halved: at the floor, or under
    DistributedDataParallel. ``what`` says which; :meth:`reason` adds where in the run."""

    def __init__(self, what: str, advice: str = ""):
        super().__init__(what)
        self.what, self.advice = what, advice

    def reason(self, where: str) -> str:
        """``out of memory at micro-batch 8 (floor 8), epoch 2, step 3`` (``where``: ``epoch 2, step 3``)."""
        return f"{self.what}, {where}" + (f"; {self.advice}" if self.advice else "")


class GraphLost(Exception):
    """CUDA ran out of memory capturing (or replaying) the graph: the step trains eagerly from
    now on, at half the batch. Call it again with the same batch."""


class HalvingStep:
    """The step a run trains with: replayed from a CUDA graph (captured at the first call)
    where ``graphs`` and the micro-batch is the whole batch, else ``eager``'s micro-batches;
    on CUDA out of memory it frees what it can and halves the micro-batch.

    Out of memory in the graph: :class:`GraphLost`, and the eager step at half the batch from
    then on (call again). Out of memory in the eager step: half the micro-batch and the same
    batch again, down to ``floor``; below it, or under DistributedDataParallel (where the other
    processes may be inside the gradient all-reduce, which this one cannot join any more),
    :class:`OutOfMemory`, and the run stops.

    Args:
        eager: the eager step; its ``micro`` is the micro-batch to start with.
        batch: images per step (this process's share of the batch).
        floor: the smallest micro-batch to halve to.
        graphs: capture the step in a CUDA graph (:func:`can_capture`; ``eager.lr`` a tensor).
        rank, processes: this process and the number of data-parallel processes.
    """

    def __init__(self, eager: EagerStep, *, batch: int, floor: int, graphs: bool = False, rank: int = 0,
                 processes: int = 1):
        if graphs and eager.lr is None:
            raise ValueError("a CUDA graph reads the learning rate from a device tensor: pass it to the eager step")
        self.eager, self.batch, self.floor, self.graphs = eager, batch, floor, graphs
        self.rank, self.processes = rank, processes
        self.graph: GraphStep | None = None

    @property
    def micro(self) -> int:
        return self.eager.micro

    @micro.setter
    def micro(self, value: int) -> None:
        self.eager.micro = value

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        e = self.eager
        if self.graphs and self.micro == self.batch:
            try:
                if self.graph is None:
                    self.graph = GraphStep(e.model, e.opt, e.lr, e.loss_fn, x, y, e.amp)
                return self.graph(x, y, lr)
            except torch.OutOfMemoryError:
                self.graph = None
            # Out of the except block: the failed capture's frames (and the memory they hold) are gone.
            self._free(x.device)
            self.micro //= 2  # eager from here, in micro-batches as memory allows
            raise GraphLost(f"out of memory capturing the CUDA graph; eager at micro-batch {self.micro}")
        while True:
            try:
                return e(x, y, lr)
            except torch.OutOfMemoryError:
                self._free(x.device)
                if self.processes > 1:
                    raise OutOfMemory(f"out of memory at micro-batch {self.micro} on process {self.rank} of "
                                      f"{self.processes}", "out-of-memory halving is off under DDP: pass a smaller "
                                      "micro-batch (--micro-batch)")
                if self.micro // 2 < self.floor:
                    raise OutOfMemory(f"out of memory at micro-batch {self.micro} (floor {self.floor})")
                self.micro //= 2

    def _free(self, device: torch.device) -> None:
        self.eager.opt.zero_grad(set_to_none=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    def release(self) -> None:
        if self.graph is not None:
            self.graph.release()
            self.graph = None


# ---------------------------------------------------------------------------- CUDA graphs


class GraphStep:
    """Replays one captured training step on batches copied into static tensors (a :class:`Step`).

    Args:
        model: the network, on a CUDA device, in train mode.
        opt: a fused SGD whose param groups' ``lr`` is the tensor ``lr``.
        lr: the one-element device tensor the optimizer reads.
        loss_fn: ``(logits, labels) -> loss``.
        x, y: a first batch; its shapes, dtypes and memory format are the graph's.
        amp: bf16 autocast in the forward pass.
    """

    def __init__(self, model, opt, lr: torch.Tensor, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, amp: bool):
        self.model, self.opt, self.lr, self.loss_fn, self.amp = model, opt, lr, loss_fn, amp
        self.micro = x.shape[0]  # the whole batch, always
        self.x = torch.empty_like(x)  # keeps x's memory format
        self.y = torch.empty_like(y)
        self.x.copy_(x)
        self.y.copy_(y)
        saved_lr = lr.clone()
        params = {k: v.detach().clone() for k, v in model.state_dict().items()}
        side = warmup_stream(x.device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP):
                opt.zero_grad(set_to_none=True)
                self._forward_backward()
                opt.step()
        torch.cuda.current_stream().wait_stream(side)
        # Undo the warm-up: weights, batch-norm statistics, momentum (zero momentum
        # makes the next step act as a first step).
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(params[k])
            for state in opt.state.values():
                buf = state.get("momentum_buffer")
                if buf is not None:
                    buf.zero_()
            lr.copy_(saved_lr)
        self.graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.loss = self._forward_backward()
            opt.step()

    def _forward_backward(self) -> torch.Tensor:
        # The autocast cache must be off while capturing: cast weights may not be kept.
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp, cache_enabled=False):
            logits = self.model(self.x)
        loss = self.loss_fn(logits, self.y)
        loss.backward()
        return loss.detach()

    def release(self) -> None:
        """Free the graph's private memory pool: drop its static tensors and the gradients
        it allocated, then reset the graph."""
        self.opt.zero_grad(set_to_none=True)
        del self.x, self.y, self.loss
        self.graph.reset()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        """One step on (x, y) at learning rate ``lr``; returns the step's loss (a new tensor)."""
        self.lr.fill_(lr)
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        self.graph.replay()
        return self.loss.clone()


class GraphEval:
    """Held-out counts of one evaluation batch (loss sum, top-1 and top-5 hits), captured once
    in a CUDA graph and replayed for every batch of every evaluation of a run.

    An eager evaluation of a B0-sized network at the training batch size is bound by the
    host's kernel launches (1.14 s for 10,000 images at 256 a batch on an H200); the graph
    launches a batch at once. Batches shorter than the captured one (the last) are copied
    into the front of the static input and only their rows are counted, so one graph, and
    the training's convolution plans at that batch size, serve every batch.

    The network is read through its parameters' and buffers' addresses, so the graph sees
    every later update of the weights and of the batch-norm statistics (the training graph
    and the optimizer update them in place). Call with the network in eval mode.
    """

    def __init__(self, model, x: torch.Tensor, num_classes: int, amp: bool):
        self.model, self.amp = model, amp
        n = x.shape[0]
        self.x = torch.zeros_like(x)
        self.y = torch.zeros(n, dtype=torch.long, device=x.device)
        self.valid = torch.zeros(n, dtype=torch.bool, device=x.device)
        self.k = min(5, num_classes)
        side = warmup_stream(x.device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():
            self._counts()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph):
            self.out = self._counts()

    def _counts(self) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp, cache_enabled=False):
            logits = self.model(self.x)
        logits = logits.float()
        loss = torch.nn.functional.cross_entropy(logits, self.y, reduction="none")
        hit = logits.topk(self.k, dim=1).indices == self.y[:, None]
        v = self.valid
        return torch.stack([(loss * v).double().sum(), (hit[:, 0] & v).double().sum(),
                            (hit.any(dim=1) & v).double().sum()])

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(loss sum, top-1 hits, top-5 hits) over the batch (x, y), as a new float64 tensor."""
        b = y.shape[0]
        if b > self.x.shape[0]:
            raise ValueError(f"batch of {b} exceeds the captured {self.x.shape[0]}")
        self.x[:b].copy_(x, non_blocking=True)
        self.y[:b].copy_(y, non_blocking=True)
        self.valid.fill_(False)
        self.valid[:b] = True
        self.graph.replay()
        return self.out.clone()

    def release(self) -> None:
        del self.x, self.y, self.valid, self.out
        self.graph.reset()


_WARMUP_STREAMS: dict[int, torch.cuda.Stream] = {}


def warmup_stream(device: torch.device) -> torch.cuda.Stream:
    """One side stream per GPU for every capture's warm-up, made once: cuBLAS keeps a
    workspace for each stream it has run on for as long as the process lives, so a new
    stream per captured network (a worker trains dozens) would add one each time."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _WARMUP_STREAMS:
        _WARMUP_STREAMS[index] = torch.cuda.Stream(device=index)
    return _WARMUP_STREAMS[index]


def can_capture(device: torch.device, optimizer: str, ema: float, processes: int = 1) -> bool:
    """Whether :class:`GraphStep` applies: a CUDA device, SGD, no weight averaging, one process.

    Not under DistributedDataParallel: its gradient all-reduce is launched from autograd
    hooks by a reducer with host-side state (buckets, readiness), which a replayed graph
    would skip; capturing it takes NCCL inside the graph, DDP's static-graph mode and a
    warm-up on the capture stream, none of which is tested here yet.
    """
    return device.type == "cuda" and optimizer == "sgd" and not ema and processes == 1
