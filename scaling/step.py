"""A whole training step (forward, backward, SGD) captured once in a CUDA graph and replayed.

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

import torch

WARMUP = 3


class GraphStep:
    """Replays one captured training step on batches copied into static tensors.

    Args:
        model: the network, on a CUDA device, in train mode.
        opt: a fused SGD whose param groups' ``lr`` is the tensor ``lr``.
        lr: the one-element device tensor the optimizer reads.
        loss_fn: ``(logits, labels) -> loss``.
        x, y: a first batch; its shapes, dtypes and memory format are the graph's.
        amp: bf16 autocast in the forward pass.
    """

    def __init__(self, model, opt, lr: torch.Tensor, loss_fn, x: torch.Tensor, y: torch.Tensor, amp: bool):
        self.model, self.opt, self.lr, self.loss_fn, self.amp = model, opt, lr, loss_fn, amp
        self.x = torch.empty_like(x)  # keeps x's memory format
        self.y = torch.empty_like(y)
        self.x.copy_(x)
        self.y.copy_(y)
        saved_lr = lr.clone()
        params = {k: v.detach().clone() for k, v in model.state_dict().items()}
        side = _warmup_stream(x.device)
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
        side = _warmup_stream(x.device)
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


def _warmup_stream(device: torch.device) -> torch.cuda.Stream:
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
