"""Commands that train and evaluate one network: train, evaluate."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import (BaseOpt, InputError, _base, app, console, err, plural)


# ---------------------------------------------------------------------------- train, evaluate


def _network(name: Optional[str], width, depth, resolution, base_name: Optional[str] = None):
    """The spec to train: a named EfficientNet, B0 at --width and --depth, or --base's network
    at --width and --depth (default 1) and --resolution (default 224)."""
    from ..bases import DEFAULT
    from ..spec import custom_spec, spec_for

    base = _base(base_name)
    if base.name != DEFAULT:
        if name is not None:
            raise InputError(f"NAME names an EfficientNet; with --base {base.name} give --width, --depth and "
                             "--resolution (default 1, 1 and 224)")
        try:
            return base.spec(width=width or 1.0, depth=depth or 1.0, resolution=resolution or 224)
        except ValueError as e:
            raise InputError(f"--base {base.name}: {e}")
    if name is None:
        if width is None or depth is None:
            raise InputError("give a network name (e.g. efficientnet-b0) or --width and --depth (and --resolution)")
        return custom_spec(width, depth, resolution or 224)
    try:
        overrides = {k: v for k, v in (("width", width), ("depth", depth), ("resolution", resolution)) if v is not None}
        return spec_for(name, **overrides)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="NAME")


def _check_data(data: str) -> None:
    """Refuse a --data path that does not exist, naming it."""
    if data not in ("default", "") and not Path(data).expanduser().exists():
        raise typer.BadParameter(f"no such file or folder: {data}", param_hint="--data")


def _load_data(data: str, resolution: int, quiet: bool, **kw):
    import time

    from ..data import DataError, load_data

    _check_data(data)
    t0 = time.perf_counter()
    try:
        ds = load_data(None if data in ("default", "") else Path(data).expanduser(), resolution, quiet=quiet, **kw)
    except (DataError, OSError) as e:
        from ..faults import no_space

        full = no_space(e)
        raise InputError(str(full) if full is not None else f"--data {data}: {e}")
    return ds, time.perf_counter() - t0


def _device(device: str):
    from ..train import resolve_device

    try:
        return resolve_device(device)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--device")


Data = Annotated[str, typer.Option("--data", help="'default' (the embedded data set), or an ImageFolder folder or .tar/.tar.gz.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]


@app.command()
def train(
    ctx: typer.Context,
    name: Annotated[Optional[str], typer.Argument(help="efficientnet-b0 .. b8, or none with --width/--depth.")] = None,
    width: Annotated[Optional[float], typer.Option(min=0.01, help="Width multiplier of B0 (or of --base).")] = None,
    depth: Annotated[Optional[float], typer.Option(min=0.01, help="Depth multiplier of B0 (or of --base).")] = None,
    base_name: BaseOpt = None,
    resolution: Annotated[Optional[int], typer.Option(min=32, max=2048, help="Training image size.")] = None,
    data: Data = "default",
    train_size: Annotated[Optional[int], typer.Option(min=1, help="Training images (a class-balanced subset).")] = None,
    val_size: Annotated[Optional[int], typer.Option(min=1, help="Held-out images (a class-balanced subset).")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Epochs (default: the recipe's).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Batch size (default: the recipe's).")] = None,
    lr: Annotated[Optional[float], typer.Option(min=1e-9, help="Learning rate per 256 images (> 0).")] = None,
    recipe: Annotated[str, typer.Option(help="proxy (short runs) or paper (Tan & Le 2019).")] = "proxy",
    seed: Annotated[int, typer.Option(help="Seed of weights, order, augmentation.")] = 0,
    device: Device = "auto",
    run_dir: Annotated[Optional[Path], typer.Option(help="Folder for checkpoint.pt, result.json, weights.pt.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run folder's checkpoint.")] = False,
    fresh: Annotated[bool, typer.Option(help="Start again even where a checkpoint exists.")] = False,
    deterministic: Annotated[bool, typer.Option(help="Deterministic algorithms (exact resume on CPU).")] = False,
    ddp: Annotated[Optional[str], typer.Option(
        "--ddp", metavar="N|all",
        help="Data-parallel over N GPUs of this machine ('all': every visible one), or N CPU processes with "
             "--device cpu: re-runs this command under torchrun. The batch is split among them.")] = None,
    micro_batch: Annotated[Optional[int], typer.Option(
        min=1, help="Images per forward pass (gradient accumulation; per process with --ddp). Default: the "
                    "whole batch, halved on out-of-memory (not under --ddp).")] = None,
    sync_bn: Annotated[bool, typer.Option(help="With --ddp on GPUs: batch-norm statistics over all GPUs' "
                                               "images (SyncBatchNorm) rather than each GPU's.")] = False,
    cuda_graphs: Annotated[Optional[bool], typer.Option(
        "--cuda-graphs/--no-cuda-graphs", help="Capture the step in a CUDA graph (default: on one GPU with SGD "
                                               "and no EMA; never with --ddp).")] = None,
    depthwise: Annotated[str, typer.Option(
        help="What runs the depthwise convolutions on a GPU: triton (scaling's kernels: no cuDNN plan to "
             "build per new shape), torch (cuDNN), or auto: SCALING_DEPTHWISE where set, else triton for "
             "runs of at most 3,600 steps.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
):
    """Train one network briefly on a proxy task and report held-out accuracy.

    Example: scaling train efficientnet-b0 --resolution 128 --data cifar10-jpeg.tar.gz --epochs 15

    Data-parallel over 4 GPUs: the same with --ddp 4 (or run it under torchrun yourself).
    """
    from .. import distributed
    from ..recipe import get_recipe
    from ..train import train as run_training

    if depthwise not in ("auto", "triton", "torch"):
        raise typer.BadParameter(f"auto, triton or torch, got {depthwise!r}", param_hint="--depthwise")
    from .. import depthwise as dw_kernels

    try:
        dw_kernels.chosen()
    except ValueError as e:
        raise InputError(str(e))
    spec = _network(name, width, depth, resolution, base_name)
    _check_data(data)  # before the run folder's checkpoint is looked at
    try:
        rec = get_recipe(recipe, epochs=epochs, batch_size=batch_size, lr=lr)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--recipe")
    child = distributed.is_distributed()
    if ddp is not None and child:
        raise InputError("--ddp starts torchrun itself; under torchrun leave it out")
    if ddp is not None:
        nproc, dev = _ddp_processes(ddp, device)
    elif child:
        nproc, dev = int(os.environ["WORLD_SIZE"]), _ddp_device(device, "torchrun")
    else:
        nproc, dev = 1, _device(device)
    if depthwise == "triton" and not (dev.type == "cuda" and dw_kernels.available(dev)):
        raise InputError("--depthwise triton needs a CUDA GPU and Triton (it comes with torch on Linux)")
    if rec.batch_size % nproc:
        raise typer.BadParameter(f"{rec.batch_size} does not divide among {nproc} processes",
                                 param_hint="--batch-size")
    if micro_batch is not None and micro_batch > rec.batch_size // nproc:
        raise typer.BadParameter(f"{micro_batch} exceeds the {rec.batch_size // nproc} images per process and step",
                                 param_hint="--micro-batch")
    _check_batch(spec, rec.batch_size // nproc, micro_batch)
    if sync_bn and (nproc == 1 or dev.type != "cuda"):
        raise InputError("--sync-bn: only with --ddp on GPUs (torch's SyncBatchNorm runs on CUDA only)")
    if cuda_graphs and (nproc > 1 or dev.type != "cuda"):
        raise InputError("--cuda-graphs: only on one GPU (not with --ddp)")
    label = spec.name if spec.name.startswith("custom") else f"{spec.name}-r{spec.resolution}"
    if base_name is not None and _base(base_name).name != "efficientnet-b0":  # a base's network at its multipliers
        label = f"{spec.name}-w{spec.width:g}-d{spec.depth:g}-r{spec.resolution}"
    run_dir = run_dir or Path("runs") / f"{label}-seed{seed}"
    ckpt = run_dir / "checkpoint.pt"
    if ckpt.exists() and not (resume or fresh):
        raise InputError(f"{run_dir} holds a checkpoint: pass --resume to continue it or --fresh to start again")
    if resume and not ckpt.exists():
        raise InputError(f"--resume: no checkpoint in {run_dir}")
    rank = 0
    if child:  # join the group; rank 0 loads (and caches) the data first, then the others
        rank, _, _, dev = distributed.init(dev.type)
        quiet = quiet or rank != 0
        if rank != 0:
            distributed.barrier()
    try:
        ds, data_s = _load_data(data, spec.resolution, quiet, train_size=train_size, val_size=val_size)
        if child and rank == 0:
            distributed.barrier()
        if len(ds.train) < rec.batch_size:
            raise typer.BadParameter(f"{rec.batch_size} exceeds the {len(ds.train)} training images",
                                     param_hint="--batch-size")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise typer.BadParameter(f"cannot create {run_dir}: {e.strerror}", param_hint="--run-dir")
        if ddp is not None:  # checked and cached: now the same command in nproc processes
            del ds
            argv = _relaunch_argv(ctx, device=dev.type, run_dir=run_dir, ddp=None)
            if not quiet:
                err.print(f"data-parallel over {nproc} {'GPUs' if dev.type == 'cuda' else 'CPU processes'}: "
                          f"torchrun {' '.join(distributed.command(argv, nproc)[3:])}", markup=False, highlight=False,
                          soft_wrap=True)
            rc = distributed.launch(argv, nproc)
            if rc:
                raise typer.Exit(rc)
            return
        if resume and _finished(ckpt, spec, ds, rec, seed):
            return
        if not quiet:
            where = f"{nproc} x {dev.type}" if child else str(dev)
            err.print(f"training {spec.name or 'custom'} at {spec.resolution}px on {ds.name} ({len(ds.train):,} "
                      f"train, {len(ds.val):,} val, {ds.num_classes} classes) on {where}; recipe {rec.name}, "
                      f"{plural(rec.epochs, 'epoch')}, batch {rec.batch_size}")
        result = run_training(spec, ds, rec, device=dev, seed=seed, checkpoint=ckpt, resume=resume, quiet=quiet,
                              deterministic=deterministic, data_seconds=data_s, save_weights=run_dir / "weights.pt",
                              micro_batch=micro_batch, sync_bn=sync_bn, cuda_graphs=cuda_graphs,
                              triton_depthwise={"auto": None, "triton": True, "torch": False}[depthwise])
        if rank == 0:
            result.save(run_dir / "result.json")
            _print_result(result, run_dir)
        elif result.status != "ok":
            err.print(f"process {rank}: FAILED ({result.status}): {result.reason}", markup=False, highlight=False)
        if result.status != "ok":
            raise typer.Exit(1)
    finally:
        if child:
            distributed.shutdown()


def _check_batch(spec, per_process: int, micro_batch: Optional[int]) -> None:
    """Refuse a batch (or micro-batch) that leaves batch norm one value per channel."""
    from ..spec import smallest_batch
    from ..train import batch_too_small

    least = smallest_batch(spec)
    if per_process < least:
        raise typer.BadParameter(batch_too_small(per_process, spec), param_hint="--batch-size")
    if micro_batch is not None and micro_batch < least:
        raise typer.BadParameter(batch_too_small(micro_batch, spec), param_hint="--micro-batch")


def _finished(ckpt: Path, spec, ds, rec, seed: int) -> bool:
    """Check that the checkpoint is this run's (one line, exit 2 where not); True where it is
    finished already, said, and nothing is to change."""
    import warnings

    from ..checkpoint import RunMismatch, check_resume, data_fingerprint, read_saved_result
    from ..train import run_spec

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            saved = read_saved_result(ckpt)
            state = check_resume(ckpt, saved, run_spec(spec, ds, rec), rec, seed, list(ds.classes),
                                 data_fingerprint(ds))
    except RunMismatch as e:
        raise InputError(str(e))
    for w in caught:
        err.print(f"warning: {w.message}", markup=False, highlight=False, soft_wrap=True)
    if not state.finished:
        return False
    top1 = f"top-1 {100 * state.top1:.2f}%, " if state.top1 is not None else ""
    console.print(f"{ckpt.parent} is finished ({top1}{state.epochs_completed} epoch"
                  f"{'s' if state.epochs_completed != 1 else ''}); nothing changed. More epochs: --epochs N "
                  "(where the schedule allows); again from the start: --fresh", markup=False, highlight=False)
    return True


def _ddp_device(device: str, why: str):
    """The device kind of data-parallel processes: cuda (one GPU each) or cpu."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise typer.BadParameter(f"with {why} give cpu, cuda or auto (process i uses cuda:i; CUDA_VISIBLE_DEVICES "
                                 f"picks the GPUs), got {device!r}", param_hint="--device")
    if device == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter("no GPU is visible", param_hint="--device")
    return torch.device(device)


def _ddp_processes(ddp: str, device: str):
    """(processes, device kind) of --ddp N|all."""
    import torch

    dev = _ddp_device(device, "--ddp")
    gpus = torch.cuda.device_count() if dev.type == "cuda" else 0
    if ddp.strip().lower() == "all":
        if dev.type != "cuda":
            raise typer.BadParameter("'all' counts GPUs and none is in use; give N with --device cpu for N CPU "
                                     "processes", param_hint="--ddp")
        return gpus, dev
    try:
        n = int(ddp)
    except ValueError:
        raise typer.BadParameter(f"needs a number of processes or 'all', got {ddp!r}", param_hint="--ddp")
    if n < 1:
        raise typer.BadParameter(f"needs at least 1 process, got {n}", param_hint="--ddp")
    if dev.type == "cuda" and n > gpus:
        raise typer.BadParameter(f"{n} GPUs asked for, {gpus} visible", param_hint="--ddp")
    return n, dev


def _relaunch_argv(ctx: typer.Context, **replace) -> list[str]:
    """This command's arguments as given, with ``replace``'s values (None drops one)."""
    head, opts = [ctx.info_name or "train"], []
    for p in ctx.command.params:
        value = replace[p.name] if p.name in replace else ctx.params.get(p.name)
        if value is None:
            continue
        if p.param_type_name == "argument":
            head.append(str(value))
        elif getattr(p, "is_flag", False) and isinstance(value, bool):
            if value != p.default or p.default is None:
                opts.append(p.opts[0] if value else p.secondary_opts[0])
        else:
            opts += [p.opts[0], str(value)]
    return head + opts


def _print_result(result, run_dir: Path) -> None:
    t = result.times
    if result.status == "ok":
        console.print(f"top-1 {100 * result.top1:.2f}%  top-5 {100 * result.top5:.2f}%  after "
                      f"{plural(result.epochs_completed, 'epoch')} on {result.device}")
    else:
        console.print(f"FAILED ({result.status}): {result.reason}")
    speed = f"{result.images_per_second:,.0f} img/s" if result.images_per_second else "-"
    mem = f", peak GPU memory {result.peak_memory_mb:,.0f} MiB" if result.peak_memory_mb else ""
    console.print(f"{speed}{mem}; time {t.get('total', 0):.1f} s (data {t.get('data', 0):.1f}, set-up "
                  f"{t.get('setup', 0):.1f}, warm-up {t.get('warmup', 0):.1f}, training {t.get('train', 0):.1f}, "
                  f"evaluation {t.get('eval', 0):.1f}, other {t.get('other', 0):.1f})")
    console.print(f"result: {run_dir / 'result.json'}")


@app.command()
def evaluate(
    name: Annotated[str, typer.Argument(help="efficientnet-b0 .. b8, efficientnet-l2, or 'custom' for a checkpoint of ours.")],
    weights: Annotated[Path, typer.Option(help="Local weights file (ours, EfficientNet-PyTorch, torchvision, timm).")],
    data: Data = "default",
    val_size: Annotated[Optional[int], typer.Option(min=1, help="Held-out images (a class-balanced subset).")] = None,
    resolution: Annotated[Optional[int], typer.Option(min=32, max=2048, help="Image size (default: the weights').")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size.")] = 256,
    device: Device = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
):
    """Top-1 and top-5 of given weights on the held-out split.

    Example: scaling evaluate efficientnet-b0 --weights runs/b0/weights.pt --data cifar10-jpeg.tar.gz
    """
    import torch

    from ..checkpoint import class_difference, match_classes, read_weights
    from ..data import Batches
    from ..model import EfficientNet
    from ..spec import canonical_name, spec_for
    from ..train import evaluate as run_eval

    if not weights.is_file():
        raise typer.BadParameter(f"no such file: {weights}", param_hint="--weights")
    ours = read_weights(weights)
    saved = ours.spec.get("resolution") if ours is not None else None  # None: not a weights file of ours
    if saved is None:  # not our checkpoint: the name says what network it is
        try:
            canonical_name(name)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="NAME")
    dev = _device(device)
    size = resolution or saved or spec_for(name).resolution
    ds, _ = _load_data(data, size, quiet, val_size=val_size)
    classes = ours.classes if saved is not None else None  # ours: check the data's classes
    if classes is not None and sorted(classes) != sorted(ds.classes):
        raise InputError(f"--weights {weights} was trained on other classes than --data {data}'s: "
                         f"{class_difference(classes, list(ds.classes))}")
    if saved is not None and classes is None:
        err.print(f"warning: {weights} stores no class names (written by an older version): the data's classes "
                  "cannot be checked against the weights'", markup=False, highlight=False, soft_wrap=True)
    try:
        model = EfficientNet.from_pretrained(name, weights_path=weights, num_classes=ds.num_classes)
    except ValueError as e:
        raise InputError(f"--weights {weights}: {e}")
    if classes is not None and match_classes(model, classes, list(ds.classes), weights):
        err.print("the data has the weights' classes in another order: the classifier answers by name",
                  markup=False, highlight=False)
    model = model.to(dev).eval()
    amp = dev.type == "cuda"
    batches = Batches(ds.val, batch_size, train=False, device=dev, seed=0,
                      dtype=torch.bfloat16 if amp else torch.float32)
    top1, top5, loss = run_eval(model, batches, amp)
    console.print(f"{name} on {ds.name} ({len(ds.val):,} held-out images at {ds.resolution}px): "
                  f"top-1 {100 * top1:.2f}%  top-5 {100 * top5:.2f}%  loss {loss:.4f}")
