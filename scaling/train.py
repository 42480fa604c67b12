"""One training function: spec + data + recipe in, result out.

The CLI (`scaling train`) and the search's objective call :func:`train`. On a GPU it
trains in bf16 autocast, channels_last, without cudnn autotuning (it costs about 20 s per
new network and gains nothing at 128 px; docs/BENCHMARKS.md) and with the data resident on
the device; on the CPU in float32. Loss that turns NaN or Inf stops the run within one
step; CUDA out of memory halves the micro-batch (same effective batch, gradient
accumulation) down to a floor. A checkpoint is written atomically after every epoch, and
``resume=True`` continues from it exactly.

Inside a process group of several processes (torchrun; :mod:`scaling.distributed`) the
same call trains data-parallel with DistributedDataParallel: each process takes a
disjoint shard of every batch (``batch_size / world`` images; the effective batch, the
steps per epoch and the learning-rate schedule stay those of one process), gradients are
averaged, evaluation is sharded and its counts summed, so top-1 and top-5 are over the
whole held-out split. Batch norm normalises with each process's own batch statistics
(torch's SyncBatchNorm on GPUs with ``sync_bn``); the running statistics are averaged
over the processes after every epoch, before evaluating and checkpointing. Rank 0 alone
shows progress and writes files. CUDA graphs and out-of-memory halving are off there
(see :meth:`_Loop._step`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from . import distributed, memory
from .checkpoint import check_resume, data_fingerprint, load_checkpoint, read_saved_result, save_checkpoint
from .checkpoint import save_weights as save_weights_file
from .data import Batches, DataSet
from .files import write_text_atomic
from .data.batches import _seed as _derive_seed
from .model import EfficientNet
from .recipe import Recipe
from .spec import NetworkSpec, smallest_batch
from .step import GraphStep, can_capture

WARMUP_STEPS = 5  # the first steps (cudnn plans for new shapes, graph capture, allocator growth) are timed apart


@dataclass
class TrainResult:
    """What a training run produced; JSON-serialisable through :meth:`to_dict`."""

    status: str  # ok, nan (the loss diverged) or oom (out of memory)
    top1: float | None = None  # held-out, in [0, 1]
    top5: float | None = None
    history: list[dict] = field(default_factory=list)  # per epoch: loss, top1, top5, lr, seconds
    images_per_second: float | None = None  # training images per second after warm-up
    peak_memory_mb: float | None = None  # peak GPU memory allocated (None on CPU)
    times: dict = field(default_factory=dict)  # seconds: data, warmup, train, eval, total
    device: str = ""
    seed: int = 0
    recipe: dict = field(default_factory=dict)
    spec: dict = field(default_factory=dict)
    reason: str = ""  # why it failed, where
    failed_at: dict | None = None  # {"epoch": e, "step": s} of a NaN or OOM
    micro_batch: int | None = None  # the micro-batch it ended with (below batch size after OOM)
    epochs_completed: int = 0
    notes: list[str] = field(default_factory=list)  # what changed on the way (e.g. CUDA graphs given up)
    processes: int = 1  # data-parallel processes (DistributedDataParallel) that trained it
    classes: list[str] = field(default_factory=list)  # the data's class names, in label order
    data_fingerprint: str = ""  # the training and held-out splits' content (checkpoint.data_fingerprint)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainResult":
        """A saved result; fields a newer version added keep their defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2))


class _Stop(Exception):
    """Raised inside the loop to end a run with a status."""

    def __init__(self, status: str, reason: str, where: dict | None = None):
        super().__init__(reason)
        self.status, self.reason, self.where = status, reason, where


# ---------------------------------------------------------------------------- pieces


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"``: the first GPU if there is one, else the CPU. Checks a CUDA index exists."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}: {e}") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count()
        index = dev.index if dev.index is not None else 0
        if index >= n:
            raise ValueError(f"CUDA device {device!r} does not exist ({n} GPU{'s' if n != 1 else ''} visible)")
        dev = torch.device("cuda", index)
    elif dev.type != "cpu":
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    return dev


def compute_loss(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels, label_smoothing=smoothing)


def make_optimizer(model: torch.nn.Module, recipe: Recipe, lr: torch.Tensor | None = None) -> torch.optim.Optimizer:
    """The recipe's optimizer; with ``lr`` (a device tensor), torch's fused SGD reading it."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if lr is not None:
        return torch.optim.SGD(groups, lr=lr, momentum=recipe.momentum, nesterov=True, fused=True)
    lr = recipe.peak_lr()
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=recipe.momentum, nesterov=True)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.RMSprop(groups, lr=lr, alpha=recipe.rmsprop_alpha, eps=recipe.rmsprop_eps,
                               momentum=recipe.momentum)


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Batches, amp: bool, graph: bool = False,
             state: dict | None = None) -> tuple[float, float, float]:
    """Top-1, top-5 (fractions) and mean loss over one pass of ``batches``.

    On a GPU every batch runs at the batches' full batch size: a shorter last batch is
    padded and only its own rows are counted, so an evaluation at the training batch size
    reuses the training's convolution plans (a new shape costs cuDNN up to 0.8 s a
    depthwise layer). With ``graph`` the batch is replayed from a CUDA graph
    (:class:`scaling.step.GraphEval`), captured at the first call and kept in ``state``
    (a dict the caller holds for the run) for the next ones. No host sync until the end.

    In a process group each process passes its shard (``Batches(..., shard=...)``) and
    the counts are summed over the processes: every process returns the whole split's.
    Pass the bare network, not its DistributedDataParallel wrapper (whose forward would
    start collectives that processes with fewer batches never join).
    """
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64, device=batches.device)  # loss sum, top-1, top-5 hits
    n = 0
    cuda = batches.device.type == "cuda"
    for x, y in batches:
        b = y.shape[0]
        if graph and cuda:
            if state is None:
                raise ValueError("graph evaluation keeps its graph in state: pass a dict")
            if "graph" not in state:
                from .step import GraphEval

                state["graph"] = GraphEval(model, x, _num_classes(model), amp)
            counts += state["graph"](x, y)
        else:
            if cuda and b < batches.batch_size:  # the full batch's shapes: the plans exist already
                full = x.new_zeros((batches.batch_size, *x.shape[1:]))
                if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
                    full = full.contiguous(memory_format=torch.channels_last)
                full[:b].copy_(x)
                x = full
            with torch.autocast(batches.device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(x)[:b]
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hit = top == y[:, None]
            counts += torch.stack([F.cross_entropy(logits.float(), y, reduction="sum").double(),
                                   hit[:, 0].sum().double(), hit.any(dim=1).sum().double()])
        n += b
    if distributed.world_size() > 1:
        counts = torch.cat([counts, torch.tensor([float(n)], dtype=torch.float64, device=batches.device)])
        ls, c1, c5, n = distributed.all_reduce_sum(counts).tolist()
        return c1 / n, c5 / n, ls / n
    ls, c1, c5 = counts.tolist()
    return c1 / n, c5 / n, ls / n


def _num_classes(model: torch.nn.Module) -> int:
    spec = getattr(model, "spec", None)
    if spec is not None:
        return spec.num_classes
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1].out_features


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------- train


def train(
    spec: NetworkSpec,
    data: DataSet,
    recipe: Recipe | None = None,
    *,
    device: str | torch.device | None = None,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    quiet: bool = False,
    deterministic: bool = False,
    on_epoch: Callable[[int, float], None] | None = None,
    data_seconds: float = 0.0,
    save_weights: str | Path | None = None,
    cuda_graphs: bool | None = None,
    micro_batch: int | None = None,
    sync_bn: bool = False,
    cudnn_benchmark: bool = False,
) -> TrainResult:
    """Train ``spec`` on ``data`` with ``recipe`` and evaluate it on the held-out split.

    Args:
        spec: the network; its classes and resolution are taken from ``data``.
        data: training and validation splits at one resolution.
        recipe: optimizer, schedule, epochs, batch size (default: the proxy recipe).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``None`` for the first GPU if any; in a
            process group, this process's device (``cuda:LOCAL_RANK`` or ``cpu``).
        seed: seeds the weights, the shuffling, the augmentation and dropout.
        checkpoint: a file written atomically after every epoch (by rank 0).
        resume: continue from ``checkpoint`` where it exists.
        quiet: no progress bar (always quiet on ranks other than 0).
        deterministic: deterministic algorithms (CPU runs then resume bit-exactly).
        on_epoch: called with (epoch, top1) after each epoch's evaluation; may raise to stop.
        data_seconds: time the caller spent loading the data, reported in ``times``.
        save_weights: where to write the final (EMA, if any) weights of a successful run,
            readable by ``EfficientNet.from_pretrained`` (by rank 0).
        cuda_graphs: capture the training step in a CUDA graph (:mod:`scaling.step`);
            default: where it applies (a GPU, SGD, no EMA, one process).
        micro_batch: start with this micro-batch (gradient accumulation over the batch,
            or over this process's share of it); default: the whole batch, on the CPU as much
            of it as the memory there is allows (:mod:`scaling.memory`).
        sync_bn: in a process group on GPUs, normalise with batch statistics over all
            processes' images (SyncBatchNorm) rather than each process's own.
        cudnn_benchmark: let cudnn time its algorithms for every new layer shape. Measured
            on an H200 (docs/BENCHMARKS.md): about 20 s more for a new network's first step
            and 4-10 s more for its first evaluation; in return B0's steps ran 1.25x faster at
            64 px and no faster at 128 or 144 px, so it pays only in runs of many epochs.

    Returns:
        A :class:`TrainResult`; a run that diverged or ran out of memory has status
        ``nan`` or ``oom``, a reason, and no metric from after the failure. In a process
        group every process returns the same metrics.
    """
    recipe = recipe or Recipe()
    dev = resolve_device(device)
    rank, world = distributed.rank(), distributed.world_size()
    if world > 1:
        if recipe.batch_size % world:
            raise ValueError(f"batch size {recipe.batch_size} does not divide among {world} processes")
        if cuda_graphs:
            raise ValueError("CUDA graphs are off under DistributedDataParallel")
        if sync_bn and dev.type != "cuda":
            raise ValueError("sync_bn needs GPUs (torch's SyncBatchNorm runs on CUDA only)")
        quiet = quiet or rank != 0
    per_process = recipe.batch_size // world
    if micro_batch is not None and not 1 <= micro_batch <= per_process:
        raise ValueError(f"micro-batch must lie in 1..{per_process}, got {micro_batch}")
    spec = run_spec(spec, data, recipe)
    least = smallest_batch(spec)
    if min(per_process, micro_batch or per_process) < least:
        raise ValueError(batch_too_small(min(per_process, micro_batch or per_process), spec))
    result = TrainResult(status="ok", device=_device_name(dev, world), seed=seed, recipe=recipe.to_dict(),
                         spec=spec.to_dict(), times={"data": data_seconds}, processes=world,
                         classes=list(data.classes), data_fingerprint=data_fingerprint(data))
    if resume and checkpoint and Path(checkpoint).exists():
        saved = read_saved_result(Path(checkpoint))
        state_of = check_resume(Path(checkpoint), saved, spec, recipe, seed, result.classes, result.data_fingerprint)
        if state_of.finished:  # nothing to train: the finished run's result, unchanged
            done = TrainResult.from_dict(saved)
            done.notes = [*done.notes, "already finished: resumed with nothing left to train"]
            return done
    t_start = time.perf_counter()
    cuda = dev.type == "cuda"
    amp = cuda
    if cuda:
        torch.backends.cudnn.benchmark = cudnn_benchmark
        torch.cuda.reset_peak_memory_stats(dev)
    old_det = torch.are_deterministic_algorithms_enabled()
    if deterministic:
        torch.use_deterministic_algorithms(True)
    model = net = opt = ema = state = train_batches = val_batches = None
    try:
        torch.manual_seed(seed)
        net = EfficientNet(spec).to(dev)
        if cuda:
            net = net.to(memory_format=torch.channels_last)
        if cuda_graphs is None:
            cuda_graphs = can_capture(dev, recipe.optimizer, recipe.ema, world)
        elif cuda_graphs and not can_capture(dev, recipe.optimizer, recipe.ema, world):
            raise ValueError("CUDA graphs need a CUDA device, the sgd optimizer and no EMA")
        if world > 1 and sync_bn:
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        lr_tensor = torch.tensor(recipe.peak_lr(), device=dev) if cuda_graphs else None
        opt = make_optimizer(net, recipe, lr_tensor)
        ema = _make_ema(net, recipe)
        model = net
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # Each process keeps its own batch-norm running statistics (no broadcast of
            # rank 0's before every forward); _Loop averages them after every epoch.
            model = DistributedDataParallel(net, device_ids=[dev.index] if cuda else None,
                                            gradient_as_bucket_view=True, **_no_buffer_sync())
            # On the CPU, the convolutions' weight gradients of depthwise kernels come with
            # other strides in their size-1 dimension than DDP's buckets; a copy, not an error.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            result.notes.append(
                f"data-parallel over {world} processes ({distributed.backend()}): {per_process} images per "
                f"process and step, effective batch {recipe.batch_size}; batch norm "
                f"{'synchronised (SyncBatchNorm)' if sync_bn else 'per process'}, running statistics averaged "
                "after every epoch; CUDA graphs and out-of-memory halving off")
        t0 = time.perf_counter()
        dtype = torch.bfloat16 if cuda else torch.float32
        shard = (rank, world)
        train_batches = Batches(data.train, per_process, train=True, device=dev, seed=seed, dtype=dtype, shard=shard)
        # On a GPU at the training batch size: its convolution plans serve the evaluation too. On
        # the CPU bounded by the memory there is (scaling.memory): the kernel would kill the process.
        val_full = per_process if cuda else min(recipe.batch_size, 1024)
        val_size = val_full if cuda else memory.eval_batch_size(spec, val_full, split=data.val, processes=world)
        val_batches = Batches(data.val, val_size, train=False, device=dev, seed=seed, dtype=dtype, shard=shard)
        result.times["data"] += time.perf_counter() - t0
        state = _Loop(model, opt, ema, recipe, train_batches, val_batches, dev, amp, result, lr_tensor,
                      net=net, seed=seed)
        if micro_batch is not None:
            state.micro = micro_batch
        elif not cuda:  # no out-of-memory error on the CPU: the micro-batch from the memory there is, up front
            plan = memory.choose_micro_batch(spec, recipe, per_process, split=data.train, processes=world)
            state.micro = result.micro_batch = plan.micro
            if plan.splits or val_size < val_full:
                result.notes.append(memory.describe(plan, val_size if val_size < val_full else None))
                if rank == 0:  # said even when quiet (no progress bar): a search's trials train quietly
                    from rich.console import Console

                    Console(stderr=True).print(result.notes[-1], markup=False, highlight=False, soft_wrap=True)
        start_epoch = 0
        if resume and checkpoint and Path(checkpoint).exists():
            start_epoch = state.restore(Path(checkpoint))
        state.run(start_epoch, checkpoint and Path(checkpoint), quiet, on_epoch)
        if save_weights is not None and rank == 0:
            final = ema.module if ema is not None else net
            save_weights_file(save_weights, spec, final.state_dict(), classes=data.classes)
    except _Stop as stop:
        result.status, result.reason, result.failed_at = stop.status, stop.reason, stop.where
    finally:
        if deterministic != old_det:
            torch.use_deterministic_algorithms(old_det)
        if cuda:
            result.peak_memory_mb = torch.cuda.max_memory_allocated(dev) / 2**20
        if state is not None:
            state.release_graphs()
        del model, net, opt, ema, state, train_batches, val_batches
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    result.times["total"] = time.perf_counter() - t_start + data_seconds
    return result


def run_spec(spec: NetworkSpec, data: DataSet, recipe: Recipe) -> NetworkSpec:
    """The network as :func:`train` trains it: the data's classes and resolution, the recipe's batch-norm momentum."""
    spec = spec.replace(num_classes=data.num_classes, resolution=data.resolution, in_channels=3)
    if recipe.bn_momentum is not None:
        spec = spec.replace(bn_momentum=recipe.bn_momentum)
    return spec


def batch_too_small(batch: int, spec: NetworkSpec) -> str:
    """Why ``batch`` images per forward pass cannot train ``spec``, with the smallest that can."""
    from .spec import smallest_feature_size

    side = smallest_feature_size(spec)
    return (f"a batch of {batch} leaves one value per channel at the {side}x{side} batch-norm layers of this network at "
            f"{spec.resolution} px (batch norm needs more than one): the smallest batch that works is "
            f"{smallest_batch(spec)}")


def _no_buffer_sync() -> dict:
    """DistributedDataParallel's keyword for "no broadcast of buffers before every forward"
    (``broadcast_buffers`` before torch 2.14). The new one still copies rank 0's buffers
    once at construction, which changes nothing: every process builds the same network
    from the seed."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    params = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


def _device_name(dev: torch.device, processes: int = 1) -> str:
    """``cuda:0 (NVIDIA H100 80GB HBM3)``, ``cpu``; ``4 x cuda (NVIDIA H100 80GB HBM3)``, ``2 x cpu``."""
    if processes > 1:
        name = f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""
        return f"{processes} x {dev.type}{name}"
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return "cpu"


def _make_ema(model, recipe: Recipe):
    if not recipe.ema:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema), use_buffers=True)


class _Loop:
    """The epoch loop's state, so that checkpointing and resuming see all of it."""

    def __init__(self, model, opt, ema, recipe: Recipe, train_b: Batches, val_b: Batches, dev, amp, result,
                 lr_tensor: torch.Tensor | None = None, net=None, seed: int = 0):
        self.model, self.opt, self.ema, self.recipe = model, opt, ema, recipe
        self.net = model if net is None else net  # the bare network (model may be its DDP wrapper)
        self.seed = seed
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.lr_tensor = lr_tensor  # set: the optimizer reads the learning rate from it
        self.graph: GraphStep | None = None  # captured at the first step when lr_tensor is set
        self.eval_state: dict | None = {} if lr_tensor is not None else None  # the evaluation's CUDA graph
        self.train_b, self.val_b, self.dev, self.amp, self.result = train_b, val_b, dev, amp, result
        self.micro = train_b.batch_size  # this process's share of the batch
        self.step = 0  # optimizer steps done
        self.steps_per_epoch = len(train_b)
        self.images_timed = 0
        for k in ("warmup", "train", "eval"):
            result.times.setdefault(k, 0.0)

    # -- checkpoints

    def save(self, path: Path, epoch: int) -> None:
        save_checkpoint(path, epoch=epoch, step=self.step, micro=self.micro, model=self.net, optimizer=self.opt,
                        ema=self.ema, result=self.result.to_dict(), images_timed=self.images_timed)

    def restore(self, path: Path) -> int:
        """Load a checkpoint that :func:`check_resume` found to be this run's; the next epoch."""
        at = load_checkpoint(path, self.dev, self.net, self.opt, self.ema, lr=self.lr_tensor)
        saved = at.result
        self.step, self.images_timed = at.step, at.images_timed
        self.micro = min(at.micro, self.train_b.batch_size)  # saved by a run with fewer processes, maybe
        self.result.history = saved["history"]
        self.result.epochs_completed = saved["epochs_completed"]
        for k in ("warmup", "train", "eval"):
            self.result.times[k] = saved["times"].get(k, 0.0)
        return at.next_epoch

    # -- the loop

    def run(self, start_epoch: int, checkpoint: Path | None, quiet: bool, on_epoch) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        epochs = self.recipe.epochs
        progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} img/s"),
            TextColumn("{task.fields[top1]}"), TimeElapsedColumn(), disable=quiet, transient=False,
        )
        with progress:
            for epoch in range(start_epoch, epochs):
                task = progress.add_task("", total=self.steps_per_epoch, epoch=f"{epoch + 1}/{epochs}",
                                         loss="-", speed="-", top1="")
                self.train_b.set_epoch(epoch)
                if self.world > 1:  # dropout and stochastic depth: other draws on each process
                    torch.manual_seed(_derive_seed(self.seed, "dropout", self.rank, epoch))
                loss, lr, seconds = self._epoch(epoch, progress, task)
                t0 = time.perf_counter()
                if self.world > 1:
                    self._average_buffers()
                evaluated = (epoch + 1) % self.recipe.eval_every == 0 or epoch + 1 == epochs
                top1 = top5 = val_loss = None
                if evaluated:
                    model = self.ema.module if self.ema is not None else self.net
                    top1, top5, val_loss = evaluate(model, self.val_b, self.amp, graph=self.eval_state is not None,
                                                    state=self.eval_state)
                    self.result.top1, self.result.top5 = top1, top5
                    progress.update(task, top1=f"top-1 {100 * top1:.1f}%")
                self.result.times["eval"] += time.perf_counter() - t0
                self.result.history.append(dict(epoch=epoch + 1, loss=loss, val_loss=val_loss, top1=top1, top5=top5,
                                                lr=lr, seconds=seconds))
                self.result.epochs_completed = epoch + 1
                self._speed()
                if checkpoint is not None and self.rank == 0:
                    self.save(checkpoint, epoch)
                if on_epoch is not None and evaluated:
                    on_epoch(epoch, top1)

    def release_graphs(self) -> None:
        """Free the training and evaluation graphs' memory pools."""
        if self.graph is not None:
            self.graph.release()
            self.graph = None
        if self.eval_state and "graph" in self.eval_state:
            self.eval_state.pop("graph").release()

    def _average_buffers(self) -> None:
        """Average the floating-point buffers (batch-norm running statistics) over the
        processes, of the network and of its EMA, so that all hold the same model."""
        for module in (self.net, self.ema.module if self.ema is not None else None):
            if module is None:
                continue
            with torch.no_grad():
                for b in module.buffers():
                    if b.is_floating_point():
                        distributed.all_reduce_sum(b).div_(self.world)

    def _speed(self) -> None:
        t = self.result.times["train"]
        self.result.images_per_second = self.images_timed / t if t > 0 else None
        self.result.micro_batch = self.micro

    def _epoch(self, epoch: int, progress, task) -> tuple[float, float, float]:
        self.model.train()
        dev, r = self.dev, self.recipe
        loss_sum = torch.zeros((), device=dev)
        pending: tuple[torch.Tensor, int] | None = None  # the last step's loss, checked one step late on GPU
        _sync(dev)
        t_epoch = t_mark = time.perf_counter()
        marked_images = 0
        lr = 0.0
        for i, (x, y) in enumerate(self.train_b):
            lr = r.lr_at(self.step, self.steps_per_epoch)
            loss = self._step(x, y, lr, epoch, i)
            if self.world > 1:  # the mean over all processes: every process sees a NaN at the same step
                loss = distributed.all_reduce_sum(loss.detach().clone()).div_(self.world)
            self.step += 1
            if dev.type == "cuda":
                if pending is not None:
                    self._check(*pending, epoch)
                pending = (loss, i)
            else:
                self._check(loss, i, epoch)
            loss_sum += loss
            marked_images += y.shape[0] * self.world  # every process's images
            if self.ema is not None:
                self.ema.update_parameters(self.net)
            if epoch == 0 and i + 1 == WARMUP_STEPS:
                _sync(dev)
                now = time.perf_counter()
                self.result.times["warmup"] += now - t_mark
                t_mark, marked_images = now, 0
            if (i + 1) % 10 == 0 or i + 1 == self.steps_per_epoch:
                progress.update(task, completed=i + 1, loss=f"{loss.item():.3f}")
                elapsed = time.perf_counter() - t_mark
                if elapsed > 0 and marked_images:
                    progress.update(task, speed=f"{marked_images / elapsed:,.0f}")
        if pending is not None:
            self._check(*pending, epoch)
        _sync(dev)
        now = time.perf_counter()
        self.result.times["train"] += now - t_mark
        self.images_timed += marked_images
        return loss_sum.item() / max(1, self.steps_per_epoch), lr, now - t_epoch

    def _check(self, loss: torch.Tensor, i: int, epoch: int) -> None:
        if not torch.isfinite(loss).item():
            raise _Stop("nan", f"loss became {loss.item()} at epoch {epoch + 1}, step {i + 1}",
                        {"epoch": epoch + 1, "step": i + 1})

    def _step(self, x: torch.Tensor, y: torch.Tensor, lr: float, epoch: int, i: int) -> torch.Tensor:
        """One optimizer step over the batch: replayed from a CUDA graph, or eagerly in
        micro-batches, halved on out-of-memory."""
        if self.lr_tensor is not None and self.micro == self.recipe.batch_size:
            try:
                if self.graph is None:
                    smoothing = self.recipe.label_smoothing
                    self.graph = GraphStep(self.model, self.opt, self.lr_tensor,
                                           lambda logits, labels: compute_loss(logits, labels, smoothing), x, y, self.amp)
                return self.graph(x, y, lr)
            except torch.OutOfMemoryError:
                self.graph = None  # train eagerly from here, in micro-batches as memory allows
                self.opt.zero_grad(set_to_none=True)
                gc.collect()
                torch.cuda.empty_cache()
                self.micro //= 2
                self.result.notes.append(f"out of memory capturing the CUDA graph; eager from epoch {epoch + 1}")
        if self.lr_tensor is not None:
            self.lr_tensor.fill_(lr)
        else:
            for g in self.opt.param_groups:
                g["lr"] = lr
        while True:
            try:
                return self._accumulate(x, y)
            except torch.OutOfMemoryError:
                self.opt.zero_grad(set_to_none=True)
                gc.collect()
                if self.dev.type == "cuda":
                    torch.cuda.empty_cache()
                if self.world > 1:
                    # The other processes may be inside the gradient all-reduce, which this
                    # one cannot join any more: no retry (torchrun ends them when it exits).
                    raise _Stop("oom", f"out of memory at micro-batch {self.micro} on process {self.rank} of "
                                f"{self.world}, epoch {epoch + 1}, step {i + 1}; out-of-memory halving is off "
                                "under DDP: pass a smaller micro-batch (--micro-batch)",
                                {"epoch": epoch + 1, "step": i + 1})
                floor = max(self.recipe.min_micro_batch, smallest_batch(self.net.spec))
                if self.micro // 2 < floor:
                    raise _Stop("oom", f"out of memory at micro-batch {self.micro} (floor "
                                f"{floor}), epoch {epoch + 1}, step {i + 1}",
                                {"epoch": epoch + 1, "step": i + 1})
                self.micro //= 2

    def _accumulate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        n = y.shape[0]
        total = torch.zeros((), device=self.dev)
        chunks = list(zip(x.split(self.micro), y.split(self.micro)))
        for k, (xs, ys) in enumerate(chunks):
            # Under DDP gradients are averaged over the processes once, in the last
            # micro-batch's backward pass; before it they accumulate locally.
            local = self.model.no_sync() if self.world > 1 and k + 1 < len(chunks) else contextlib.nullcontext()
            with local:
                with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.amp):
                    logits = self.model(xs)
                loss = compute_loss(logits, ys, self.recipe.label_smoothing) * (ys.shape[0] / n)
                loss.backward()
            total += loss.detach()
        self.opt.step()
        return total
