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
