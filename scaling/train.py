"""One training function: spec + data + recipe in, result out.

The CLI (`scaling train`) and the search's objective call :func:`train`. On a GPU it
trains in bf16 autocast, channels_last, without cudnn autotuning (it costs about 20 s per
new network and gains nothing at 128 px; docs/BENCHMARKS.md) and with the data resident on
the device; on the CPU in float32. Loss that turns NaN or Inf stops the run within one
step; CUDA out of memory halves the micro-batch (same effective batch, gradient
accumulation) down to a floor (the step, graph or eager: :mod:`scaling.step`). A checkpoint
is written atomically after every epoch, and ``resume=True`` continues from it exactly
(:mod:`scaling.checkpoint`).

Inside a process group of several processes (torchrun; :mod:`scaling.distributed`) the
same call trains data-parallel with DistributedDataParallel: each process takes a
disjoint shard of every batch (``batch_size / world`` images; the effective batch, the
steps per epoch and the learning-rate schedule stay those of one process), gradients are
averaged, evaluation is sharded and its counts summed, so top-1 and top-5 are over the
whole held-out split. Batch norm normalises with each process's own batch statistics
(torch's SyncBatchNorm on GPUs with ``sync_bn``); the running statistics are averaged
over the processes after every epoch, before evaluating and checkpointing. Rank 0 alone
shows progress and writes files. CUDA graphs and out-of-memory halving are off there
(see :class:`scaling.step.HalvingStep`).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from . import depthwise, distributed, memory
from .checkpoint import check_resume, data_fingerprint, load_checkpoint, read_saved_result, save_checkpoint
from .checkpoint import save_weights as write_weights
from .data import Batches, DataSet
from .files import write_text_atomic
from .data.batches import _seed as _derive_seed
from .bases import build
from .model import EfficientNet  # noqa: F401 - scaling.train.EfficientNet, as before (tests build B0 through it)
from .recipe import Recipe
from .spec import NetworkSpec, smallest_batch
from .step import EagerStep, GraphLost, HalvingStep, OutOfMemory, Step, can_capture

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
    times: dict = field(default_factory=dict)  # seconds: data, setup, warmup, train, eval, other, total
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
    depthwise: str = ""  # what ran the depthwise convolutions: "triton" (scaling.depthwise) or "torch"

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
    triton_depthwise: bool | None = None,
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
        triton_depthwise: run the depthwise convolutions through :mod:`scaling.depthwise`
            (no cuDNN plan to build for each new shape); default: ``SCALING_DEPTHWISE``
            (``triton`` or ``torch``) where set, else on a GPU where Triton is installed, for
            a run of at most ``scaling.depthwise.AUTO_MAX_STEPS`` optimizer steps (a search's
            trials; a longer run keeps cuDNN, whose steady kernels are faster at larger
            sizes). ``False`` keeps torch's (cuDNN's) convolutions.

    Returns:
        A :class:`TrainResult`; a run that diverged or ran out of memory has status
        ``nan`` or ``oom``, a reason, and no metric from after the failure. In a process
        group every process returns the same metrics.
    """
    # 1. the run asked for, checked; a finished run's result where resuming one
    recipe = recipe or Recipe()
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    rank, world = distributed.rank(), distributed.world_size()
    if world > 1:
        if recipe.batch_size % world:
            raise ValueError(f"batch size {recipe.batch_size} does not divide among {world} processes")
        if cuda_graphs:
            raise ValueError("CUDA graphs are off under DistributedDataParallel")
        if sync_bn and not cuda:
            raise ValueError("sync_bn needs GPUs (torch's SyncBatchNorm runs on CUDA only)")
        quiet = quiet or rank != 0
    per_process = recipe.batch_size // world
    if micro_batch is not None and not 1 <= micro_batch <= per_process:
        raise ValueError(f"micro-batch must lie in 1..{per_process}, got {micro_batch}")
    spec = run_spec(spec, data, recipe)
    if min(per_process, micro_batch or per_process) < smallest_batch(spec):
        raise ValueError(batch_too_small(min(per_process, micro_batch or per_process), spec))
    if cuda_graphs is None:
        cuda_graphs = can_capture(dev, recipe.optimizer, recipe.ema, world)
    elif cuda_graphs and not can_capture(dev, recipe.optimizer, recipe.ema, world):
        raise ValueError("CUDA graphs need a CUDA device, the sgd optimizer and no EMA")
    checkpoint = Path(checkpoint) if checkpoint else None
    resuming = resume and checkpoint is not None and checkpoint.exists()
    result = TrainResult(status="ok", device=_device_name(dev, world), seed=seed, recipe=recipe.to_dict(),
                         spec=spec.to_dict(), times={"data": data_seconds}, processes=world,
                         classes=list(data.classes), data_fingerprint=data_fingerprint(data))
    if resuming:
        saved = read_saved_result(checkpoint)
        if check_resume(checkpoint, saved, spec, recipe, seed, result.classes, result.data_fingerprint).finished:
            done = TrainResult.from_dict(saved)  # nothing to train: the finished run's result, unchanged
            done.notes = [*done.notes, "already finished: resumed with nothing left to train"]
            return done

    t_start = time.perf_counter()
    amp = cuda
    if cuda:
        torch.backends.cudnn.benchmark = cudnn_benchmark
        torch.cuda.reset_peak_memory_stats(dev)
    old_det = torch.are_deterministic_algorithms_enabled()
    if deterministic:
        torch.use_deterministic_algorithms(True)
    model = net = opt = ema = eager = step = train_b = val_b = None
    eval_graph: dict | None = {} if cuda_graphs else None  # the evaluation's CUDA graph, captured at its first batch
    try:
        # 2. the network, its optimizer and weight average, the batches, the step
        torch.manual_seed(seed)
        net = build(spec).to(dev)  # any base's network (scaling.bases)
        if cuda:
            net = net.to(memory_format=torch.channels_last)
        steps = -(-len(data.train) // recipe.batch_size) * recipe.epochs
        result.depthwise = _depthwise_kernels(net, dev, triton_depthwise, steps)
        if world > 1 and sync_bn:
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        lr_tensor = torch.tensor(recipe.peak_lr(), device=dev) if cuda_graphs else None  # read by the graph
        opt = make_optimizer(net, recipe, lr_tensor)
        ema = _make_ema(net, recipe)
        model = net if world == 1 else _data_parallel(net, dev, recipe, sync_bn, result)
        t0 = time.perf_counter()
        train_b, val_b, val_full = _batches(data, spec, recipe, per_process, dev, seed)
        batches_s = time.perf_counter() - t0
        result.times["data"] += batches_s
        for k in ("setup", "warmup", "train", "eval"):
            result.times.setdefault(k, 0.0)
        micro = micro_batch or per_process
        if micro_batch is None and not cuda:  # no out-of-memory error on the CPU: the micro-batch from the memory there is
            micro = _cpu_micro_batch(spec, recipe, data, per_process, val_b.batch_size, val_full, result)

        def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return compute_loss(logits, labels, recipe.label_smoothing)

        eager = EagerStep(model, opt, loss_fn, micro, amp, lr=lr_tensor, processes=world)
        step = HalvingStep(eager, batch=per_process, floor=max(recipe.min_micro_batch, smallest_batch(spec)),
                           graphs=cuda_graphs, rank=rank, processes=world)

        # 3. where the checkpoint left the run
        start_epoch, steps_done, images_timed = 0, 0, 0
        if resuming:
            at = load_checkpoint(checkpoint, dev, net, opt, ema, lr=lr_tensor)
            start_epoch, steps_done, images_timed = at.next_epoch, at.step, at.images_timed
            step.micro = min(at.micro, per_process)  # saved by a run with fewer processes, maybe
            result.history, result.epochs_completed = at.result["history"], at.result["epochs_completed"]
            for k in ("warmup", "train", "eval"):
                result.times[k] = at.result["times"].get(k, 0.0)

        # 4. the epochs: train, evaluate where due, checkpoint, report
        result.times["setup"] = time.perf_counter() - t_start - batches_s  # the network, its optimizer, its step
        with _progress(quiet) as progress:
            for epoch in range(start_epoch, recipe.epochs):
                task = progress.add_task("", total=len(train_b), epoch=f"{epoch + 1}/{recipe.epochs}", loss="-",
                                         speed="-", top1="")
                train_b.set_epoch(epoch)
                if world > 1:  # dropout and stochastic depth: other draws on each process
                    torch.manual_seed(_derive_seed(seed, "dropout", rank, epoch))
                model.train()
                loss, lr, seconds, images = _train_epoch(step, train_b, recipe, epoch, steps_done, ema=ema, net=net,
                                                         result=result, show=partial(progress.update, task))
                steps_done += len(train_b)
                images_timed += images
                t0 = time.perf_counter()
                if world > 1:
                    _average_buffers(net, ema, world)
                evaluated = (epoch + 1) % recipe.eval_every == 0 or epoch + 1 == recipe.epochs
                top1 = top5 = val_loss = None
                if evaluated:
                    top1, top5, val_loss = evaluate(ema.module if ema is not None else net, val_b, amp,
                                                    graph=eval_graph is not None, state=eval_graph)
                    result.top1, result.top5 = top1, top5
                    progress.update(task, top1=f"top-1 {100 * top1:.1f}%")
                result.times["eval"] += time.perf_counter() - t0
                result.history.append(dict(epoch=epoch + 1, loss=loss, val_loss=val_loss, top1=top1, top5=top5,
                                           lr=lr, seconds=seconds))
                result.epochs_completed = epoch + 1
                t_train = result.times["train"]
                result.images_per_second = images_timed / t_train if t_train > 0 else None
                result.micro_batch = step.micro
                if checkpoint is not None and rank == 0:
                    save_checkpoint(checkpoint, epoch=epoch, step=steps_done, micro=step.micro, model=net,
                                    optimizer=opt, ema=ema, result=result.to_dict(), images_timed=images_timed)
                if on_epoch is not None and evaluated:
                    on_epoch(epoch, top1)

        # 5. the final weights
        if save_weights is not None and rank == 0:
            final = ema.module if ema is not None else net
            write_weights(save_weights, spec, final.state_dict(), classes=data.classes)
    except _Stop as stop:
        result.status, result.reason, result.failed_at = stop.status, stop.reason, stop.where
    finally:
        if deterministic != old_det:
            torch.use_deterministic_algorithms(old_det)
        if cuda:
            result.peak_memory_mb = torch.cuda.max_memory_allocated(dev) / 2**20
        if step is not None:
            step.release()
        if eval_graph and "graph" in eval_graph:
            eval_graph.pop("graph").release()
        del model, net, opt, ema, eager, step, train_b, val_b
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    result.times["total"] = time.perf_counter() - t_start + data_seconds
    named = sum(result.times.get(k, 0.0) for k in ("data", "setup", "warmup", "train", "eval"))
    # The rest: reports between epochs, checkpoints, the memory given back. (A resumed run's
    # warm-up, training and evaluation include earlier processes' seconds: no rest to say.)
    result.times["other"] = max(0.0, result.times["total"] - named)
    return result


def _depthwise_kernels(net: torch.nn.Module, dev: torch.device, wanted: bool | None, steps: int = 0) -> str:
    """Swap ``net``'s depthwise layers for the Triton ones where wanted (default: what
    ``SCALING_DEPTHWISE`` says, else a GPU with Triton and a run of at most
    :data:`scaling.depthwise.AUTO_MAX_STEPS` steps); returns what runs them."""
    wanted = depthwise.chosen() if wanted is None else wanted
    if wanted is None:
        wanted = dev.type == "cuda" and steps <= depthwise.AUTO_MAX_STEPS and depthwise.available(dev)
    if not wanted:
        return "torch"
    if not depthwise.available(dev):
        raise ValueError("the Triton depthwise kernels need a CUDA device and Triton installed")
    return "triton" if depthwise.use_triton_depthwise(net) else "torch"


def _train_epoch(step: Step, batches: Batches, recipe: Recipe, epoch: int, first_step: int, *, ema, net,
                 result: TrainResult, show: Callable[..., None]) -> tuple[float, float, float, int]:
    """One epoch's optimizer steps: (mean loss, last learning rate, seconds, images timed).

    A loss that is NaN or Inf stops the run (:class:`_Stop`), on a GPU one step late (no
    host sync per step); so does running out of memory where the step cannot halve its
    micro-batch any more. The first ``WARMUP_STEPS`` of the first epoch are timed apart
    (``times["warmup"]``) from the rest (``times["train"]``); ``show`` updates the progress bar.
    """
    dev, world, per_epoch = batches.device, distributed.world_size(), len(batches)
    loss_sum = torch.zeros((), device=dev)
    pending: tuple[torch.Tensor, int] | None = None  # the last step's loss, checked one step late on GPU
    _sync(dev)
    t_epoch = t_mark = time.perf_counter()
    marked_images = 0
    lr = 0.0
    for i, (x, y) in enumerate(batches):
        lr = recipe.lr_at(first_step + i, per_epoch)
        loss = _take_step(step, x, y, lr, epoch, i, result.notes)
        if dev.type == "cuda":
            if pending is not None:
                _check_finite(*pending, epoch)
            pending = (loss, i)
        else:
            _check_finite(loss, i, epoch)
        loss_sum += loss
        marked_images += y.shape[0] * world  # every process's images
        if ema is not None:
            ema.update_parameters(net)
        if epoch == 0 and i + 1 == WARMUP_STEPS:
            _sync(dev)
            now = time.perf_counter()
            result.times["warmup"] += now - t_mark
            t_mark, marked_images = now, 0
        if (i + 1) % 10 == 0 or i + 1 == per_epoch:
            show(completed=i + 1, loss=f"{loss.item():.3f}")
            elapsed = time.perf_counter() - t_mark
            if elapsed > 0 and marked_images:
                show(speed=f"{marked_images / elapsed:,.0f}")
    if pending is not None:
        _check_finite(*pending, epoch)
    _sync(dev)
    now = time.perf_counter()
    result.times["train"] += now - t_mark
    return loss_sum.item() / max(1, per_epoch), lr, now - t_epoch, marked_images


def _take_step(step: Step, x: torch.Tensor, y: torch.Tensor, lr: float, epoch: int, i: int,
               notes: list[str]) -> torch.Tensor:
    """``step(x, y, lr)`` (the ``i``-th of ``epoch``), with what its out-of-memory handling did
    said in the run's terms: a note where the CUDA graph gave way, a stop where nothing could."""
    try:
        try:
            return step(x, y, lr)
        except GraphLost:  # the same batch again, eagerly
            notes.append(f"out of memory capturing the CUDA graph; eager from epoch {epoch + 1}")
            return step(x, y, lr)
    except OutOfMemory as oom:
        raise _Stop("oom", oom.reason(f"epoch {epoch + 1}, step {i + 1}"), {"epoch": epoch + 1, "step": i + 1})


def _check_finite(loss: torch.Tensor, i: int, epoch: int) -> None:
    if not torch.isfinite(loss).item():
        raise _Stop("nan", f"loss became {loss.item()} at epoch {epoch + 1}, step {i + 1}",
                    {"epoch": epoch + 1, "step": i + 1})


# ---------------------------------------------------------------------------- setting up


def run_spec(spec: NetworkSpec, data: DataSet, recipe: Recipe) -> NetworkSpec:
    """The network as :func:`train` trains it: the data's classes and resolution, and where the
    spec has them (EfficientNet's), three input channels and the recipe's batch-norm momentum
    (the other bases keep PyTorch's 0.1, the proxy recipe's)."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(spec)}
    changes = dict(num_classes=data.num_classes, resolution=data.resolution)
    if "in_channels" in fields:
        changes["in_channels"] = 3
    if recipe.bn_momentum is not None and "bn_momentum" in fields:
        changes["bn_momentum"] = recipe.bn_momentum
    return spec.replace(**changes)


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


def _data_parallel(net: torch.nn.Module, dev: torch.device, recipe: Recipe, sync_bn: bool,
                   result: TrainResult) -> torch.nn.Module:
    """``net`` wrapped in DistributedDataParallel, and a note saying how it trains."""
    from torch.nn.parallel import DistributedDataParallel

    world = distributed.world_size()
    # Each process keeps its own batch-norm running statistics (no broadcast of rank 0's
    # before every forward); train() averages them after every epoch.
    model = DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None,
                                    gradient_as_bucket_view=True, **_no_buffer_sync())
    # On the CPU, the convolutions' weight gradients of depthwise kernels come with
    # other strides in their size-1 dimension than DDP's buckets; a copy, not an error.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    result.notes.append(
        f"data-parallel over {world} processes ({distributed.backend()}): {recipe.batch_size // world} images per "
        f"process and step, effective batch {recipe.batch_size}; batch norm "
        f"{'synchronised (SyncBatchNorm)' if sync_bn else 'per process'}, running statistics averaged "
        "after every epoch; CUDA graphs and out-of-memory halving off")
    return model


def _batches(data: DataSet, spec: NetworkSpec, recipe: Recipe, per_process: int, dev: torch.device,
             seed: int) -> tuple[Batches, Batches, int]:
    """This process's training and held-out batches, and the held-out batch size before the
    CPU's memory bounded it."""
    cuda, shard = dev.type == "cuda", (distributed.rank(), distributed.world_size())
    dtype = torch.bfloat16 if cuda else torch.float32
    train_b = Batches(data.train, per_process, train=True, device=dev, seed=seed, dtype=dtype, shard=shard)
    # On a GPU at the training batch size: its convolution plans serve the evaluation too. On
    # the CPU bounded by the memory there is (scaling.memory): the kernel would kill the process.
    val_full = per_process if cuda else min(recipe.batch_size, 1024)
    val_size = val_full if cuda else memory.eval_batch_size(spec, val_full, split=data.val, processes=shard[1])
    val_b = Batches(data.val, val_size, train=False, device=dev, seed=seed, dtype=dtype, shard=shard)
    return train_b, val_b, val_full


def _cpu_micro_batch(spec: NetworkSpec, recipe: Recipe, data: DataSet, per_process: int, val_size: int,
                     val_full: int, result: TrainResult) -> int:
    """The micro-batch a CPU step fits in (:func:`scaling.memory.choose_micro_batch`), said in a
    note (and on rank 0's stderr) where it splits the batch or the evaluation's is bounded."""
    plan = memory.choose_micro_batch(spec, recipe, per_process, split=data.train, processes=distributed.world_size())
    result.micro_batch = plan.micro
    if plan.splits or val_size < val_full:
        result.notes.append(memory.describe(plan, val_size if val_size < val_full else None))
        if distributed.rank() == 0:  # said even when quiet (no progress bar): a search's trials train quietly
            from rich.console import Console

            Console(stderr=True).print(result.notes[-1], markup=False, highlight=False, soft_wrap=True)
    return plan.micro


def _progress(quiet: bool):
    """The progress bar: one line per epoch (none when ``quiet``)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} img/s"),
        TextColumn("{task.fields[top1]}"), TimeElapsedColumn(), disable=quiet, transient=False,
    )


def _average_buffers(net: torch.nn.Module, ema, world: int) -> None:
    """Average the floating-point buffers (batch-norm running statistics) over the
    processes, of the network and of its EMA, so that all hold the same model."""
    for module in (net, ema.module if ema is not None else None):
        if module is None:
            continue
        with torch.no_grad():
            for b in module.buffers():
                if b.is_floating_point():
                    distributed.all_reduce_sum(b).div_(world)
