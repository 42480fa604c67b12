"""One training function: spec + data + recipe in, result out.

The CLI (`scaling train`) and the search's objective call :func:`train`. On a GPU it
trains in bf16 autocast, channels_last, with cudnn benchmarking and the data resident on
the device; on the CPU in float32. Loss that turns NaN or Inf stops the run within one
step; CUDA out of memory halves the micro-batch (same effective batch, gradient
accumulation) down to a floor. A checkpoint is written atomically after every epoch, and
``resume=True`` continues from it exactly.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .data import Batches, DataSet
from .model import EfficientNet
from .recipe import Recipe
from .spec import NetworkSpec
from .step import GraphStep, can_capture

WARMUP_STEPS = 5  # the first steps (cudnn autotuning, allocator growth) are timed apart


@dataclass
class TrainResult:
    """What a training run produced; JSON-serialisable through :meth:`to_dict`."""

    status: str  # ok, nan, oom or stopped
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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        _atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2))


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
def evaluate(model: torch.nn.Module, batches: Batches, amp: bool) -> tuple[float, float, float]:
    """Top-1, top-5 (fractions) and mean loss over one pass of ``batches``."""
    model.eval()
    correct1 = torch.zeros((), dtype=torch.long, device=batches.device)
    correct5 = torch.zeros((), dtype=torch.long, device=batches.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=batches.device)
    n = 0
    for x, y in batches:
        with torch.autocast(batches.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hit = top == y[:, None]
        correct1 += hit[:, 0].sum()
        correct5 += hit.any(dim=1).sum()
        n += y.shape[0]
    return correct1.item() / n, correct5.item() / n, loss_sum.item() / n


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
) -> TrainResult:
    """Train ``spec`` on ``data`` with ``recipe`` and evaluate it on the held-out split.

    Args:
        spec: the network; its classes and resolution are taken from ``data``.
        data: training and validation splits at one resolution.
        recipe: optimizer, schedule, epochs, batch size (default: the proxy recipe).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``None`` for the first GPU if any.
        seed: seeds the weights, the shuffling, the augmentation and dropout.
        checkpoint: a file written atomically after every epoch.
        resume: continue from ``checkpoint`` where it exists.
        quiet: no progress bar.
        deterministic: deterministic algorithms (CPU runs then resume bit-exactly).
        on_epoch: called with (epoch, top1) after each epoch's evaluation; may raise to stop.
        data_seconds: time the caller spent loading the data, reported in ``times``.
        save_weights: where to write the final (EMA, if any) weights of a successful run,
            readable by ``EfficientNet.from_pretrained``.
        cuda_graphs: capture the training step in a CUDA graph (:mod:`scaling.step`);
            default: where it applies (a GPU, SGD, no EMA).

    Returns:
        A :class:`TrainResult`; a run that diverged or ran out of memory has status
        ``nan`` or ``oom``, a reason, and no metric from after the failure.
    """
    recipe = recipe or Recipe()
    dev = resolve_device(device)
    spec = spec.replace(num_classes=data.num_classes, resolution=data.resolution, in_channels=3)
    if recipe.bn_momentum is not None:
        spec = spec.replace(bn_momentum=recipe.bn_momentum)
    result = TrainResult(status="ok", device=_device_name(dev), seed=seed, recipe=recipe.to_dict(),
                         spec=spec.to_dict(), times={"data": data_seconds})
    t_start = time.perf_counter()
    cuda = dev.type == "cuda"
    amp = cuda
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(dev)
    old_det = torch.are_deterministic_algorithms_enabled()
    if deterministic:
        torch.use_deterministic_algorithms(True)
    model = opt = ema = state = train_batches = val_batches = None
    try:
        torch.manual_seed(seed)
        model = EfficientNet(spec).to(dev)
        if cuda:
            model = model.to(memory_format=torch.channels_last)
        if cuda_graphs is None:
            cuda_graphs = can_capture(dev, recipe.optimizer, recipe.ema)
        elif cuda_graphs and not can_capture(dev, recipe.optimizer, recipe.ema):
            raise ValueError("CUDA graphs need a CUDA device, the sgd optimizer and no EMA")
        lr_tensor = torch.tensor(recipe.peak_lr(), device=dev) if cuda_graphs else None
        opt = make_optimizer(model, recipe, lr_tensor)
        ema = _make_ema(model, recipe)
        t0 = time.perf_counter()
        dtype = torch.bfloat16 if cuda else torch.float32
        train_batches = Batches(data.train, recipe.batch_size, train=True, device=dev, seed=seed, dtype=dtype)
        val_batches = Batches(data.val, min(recipe.batch_size, 1024), train=False, device=dev, seed=seed, dtype=dtype)
        result.times["data"] += time.perf_counter() - t0
        state = _Loop(model, opt, ema, recipe, train_batches, val_batches, dev, amp, result, lr_tensor)
        start_epoch = 0
        if resume and checkpoint and Path(checkpoint).exists():
            start_epoch = state.restore(Path(checkpoint), spec, seed)
        state.run(start_epoch, checkpoint and Path(checkpoint), quiet, on_epoch)
        if save_weights is not None:
            final = ema.module if ema is not None else model
            _atomic_save({"format": "scaling/1", "spec": spec.to_dict(), "state_dict": final.state_dict()},
                         Path(save_weights))
    except _Stop as stop:
        result.status, result.reason, result.failed_at = stop.status, stop.reason, stop.where
    finally:
        if deterministic != old_det:
            torch.use_deterministic_algorithms(old_det)
        if cuda:
            result.peak_memory_mb = torch.cuda.max_memory_allocated(dev) / 2**20
        if state is not None and state.graph is not None:
            state.graph.release()
        del model, opt, ema, state, train_batches, val_batches
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    result.times["total"] = time.perf_counter() - t_start + data_seconds
    return result


def _device_name(dev: torch.device) -> str:
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
                 lr_tensor: torch.Tensor | None = None):
        self.model, self.opt, self.ema, self.recipe = model, opt, ema, recipe
        self.lr_tensor = lr_tensor  # set: the optimizer reads the learning rate from it
        self.graph: GraphStep | None = None  # captured at the first step when lr_tensor is set
        self.train_b, self.val_b, self.dev, self.amp, self.result = train_b, val_b, dev, amp, result
        self.micro = recipe.batch_size
        self.step = 0  # optimizer steps done
        self.steps_per_epoch = len(train_b)
        self.images_timed = 0
        for k in ("warmup", "train", "eval"):
            result.times.setdefault(k, 0.0)

    # -- checkpoints

    def save(self, path: Path, epoch: int) -> None:
        _atomic_save({
            "format": "scaling-train/1", "epoch": epoch, "step": self.step, "micro": self.micro,
            "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": torch.get_rng_state(), "result": self.result.to_dict(), "images_timed": self.images_timed,
        }, path)

    def restore(self, path: Path, spec: NetworkSpec, seed: int) -> int:
        ck = torch.load(path, map_location=self.dev, weights_only=False)
        saved = ck["result"]
        if saved["spec"] != spec.to_dict() or saved["recipe"] != self.recipe.to_dict() or saved["seed"] != seed:
            raise ValueError(f"checkpoint {path} belongs to another run (spec, recipe or seed differ)")
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        if self.lr_tensor is not None:  # loading replaced the groups' lr with copies
            for g in self.opt.param_groups:
                g["lr"] = self.lr_tensor
        if self.ema is not None and ck["ema"] is not None:
            self.ema.load_state_dict(ck["ema"])
        torch.set_rng_state(ck["rng"].cpu())
        self.step, self.micro, self.images_timed = ck["step"], ck["micro"], ck["images_timed"]
        self.result.history = saved["history"]
        self.result.epochs_completed = saved["epochs_completed"]
        for k in ("warmup", "train", "eval"):
            self.result.times[k] = saved["times"].get(k, 0.0)
        return ck["epoch"] + 1

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
                loss, lr, seconds = self._epoch(epoch, progress, task)
                t0 = time.perf_counter()
                model = self.ema.module if self.ema is not None else self.model
                top1, top5, val_loss = evaluate(model, self.val_b, self.amp)
                self.result.times["eval"] += time.perf_counter() - t0
                self.result.history.append(dict(epoch=epoch + 1, loss=loss, val_loss=val_loss, top1=top1, top5=top5,
                                                lr=lr, seconds=seconds))
                self.result.top1, self.result.top5 = top1, top5
                self.result.epochs_completed = epoch + 1
                self._speed()
                progress.update(task, top1=f"top-1 {100 * top1:.1f}%")
                if checkpoint is not None:
                    self.save(checkpoint, epoch)
                if on_epoch is not None:
                    on_epoch(epoch, top1)

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
            self.step += 1
            if dev.type == "cuda":
                if pending is not None:
                    self._check(*pending, epoch)
                pending = (loss, i)
            else:
                self._check(loss, i, epoch)
            loss_sum += loss
            marked_images += y.shape[0]
            if self.ema is not None:
                self.ema.update_parameters(self.model)
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
                if self.micro // 2 < self.recipe.min_micro_batch:
                    raise _Stop("oom", f"out of memory at micro-batch {self.micro} (floor "
                                f"{self.recipe.min_micro_batch}), epoch {epoch + 1}, step {i + 1}",
                                {"epoch": epoch + 1, "step": i + 1})
                self.micro //= 2

    def _accumulate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        n = y.shape[0]
        total = torch.zeros((), device=self.dev)
        for xs, ys in zip(x.split(self.micro), y.split(self.micro)):
            with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.amp):
                logits = self.model(xs)
            loss = compute_loss(logits, ys, self.recipe.label_smoothing) * (ys.shape[0] / n)
            loss.backward()
            total += loss.detach()
        self.opt.step()
        return total
