"""Commands that train and evaluate one network: train, evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import (InputError, app, console, err)


# ---------------------------------------------------------------------------- train, evaluate


def _network(name: Optional[str], width, depth, resolution) -> "NetworkSpec":  # noqa: F821
    from ..spec import custom_spec, spec_for

    if name is None:
        if width is None or depth is None:
            raise InputError("give a network name (e.g. efficientnet-b0) or --width and --depth (and --resolution)")
        return custom_spec(width, depth, resolution or 224)
    try:
        overrides = {k: v for k, v in (("width", width), ("depth", depth), ("resolution", resolution)) if v is not None}
        return spec_for(name, **overrides)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="NAME")


def _load_data(data: str, resolution: int, quiet: bool, **kw):
    import time

    from ..data import DataError, load_data

    if data not in ("default", "") and not Path(data).expanduser().exists():
        raise typer.BadParameter(f"no such file or folder: {data}", param_hint="--data")
    t0 = time.perf_counter()
    try:
        ds = load_data(None if data in ("default", "") else Path(data).expanduser(), resolution, quiet=quiet, **kw)
    except (DataError, OSError) as e:
        raise InputError(f"--data {data}: {e}")
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
    name: Annotated[Optional[str], typer.Argument(help="efficientnet-b0 .. b8, or none with --width/--depth.")] = None,
    width: Annotated[Optional[float], typer.Option(min=0.01, help="Width multiplier of B0.")] = None,
    depth: Annotated[Optional[float], typer.Option(min=0.01, help="Depth multiplier of B0.")] = None,
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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
):
    """Train one network briefly on a proxy task and report held-out accuracy.

    Example: scaling train efficientnet-b0 --resolution 128 --data cifar10-jpeg.tar.gz --epochs 15
    """
    from ..recipe import get_recipe
    from ..train import train as run_training

    spec = _network(name, width, depth, resolution)
    try:
        rec = get_recipe(recipe, epochs=epochs, batch_size=batch_size, lr=lr)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--recipe")
    dev = _device(device)
    label = spec.name if spec.name.startswith("custom") else f"{spec.name}-r{spec.resolution}"
    run_dir = run_dir or Path("runs") / f"{label}-seed{seed}"
    ckpt = run_dir / "checkpoint.pt"
    if ckpt.exists() and not (resume or fresh):
        raise InputError(f"{run_dir} holds a checkpoint: pass --resume to continue it or --fresh to start again")
    if resume and not ckpt.exists():
        raise InputError(f"--resume: no checkpoint in {run_dir}")
    ds, data_s = _load_data(data, spec.resolution, quiet, train_size=train_size, val_size=val_size)
    if ds.train.images.shape[0] < rec.batch_size:
        raise typer.BadParameter(f"{rec.batch_size} exceeds the {len(ds.train)} training images", param_hint="--batch-size")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise typer.BadParameter(f"cannot create {run_dir}: {e.strerror}", param_hint="--run-dir")
    if not quiet:
        err.print(f"training {spec.name or 'custom'} at {spec.resolution}px on {ds.name} ({len(ds.train):,} train, "
                  f"{len(ds.val):,} val, {ds.num_classes} classes) on {dev}; recipe {rec.name}, {rec.epochs} epochs, "
                  f"batch {rec.batch_size}")
    result = run_training(spec, ds, rec, device=dev, seed=seed, checkpoint=ckpt, resume=resume, quiet=quiet,
                          deterministic=deterministic, data_seconds=data_s, save_weights=run_dir / "weights.pt")
    result.save(run_dir / "result.json")
    _print_result(result, run_dir)
    if result.status != "ok":
        raise typer.Exit(1)


def _print_result(result, run_dir: Path) -> None:
    t = result.times
    if result.status == "ok":
        console.print(f"top-1 {100 * result.top1:.2f}%  top-5 {100 * result.top5:.2f}%  after "
                      f"{result.epochs_completed} epochs on {result.device}")
    else:
        console.print(f"FAILED ({result.status}): {result.reason}")
    speed = f"{result.images_per_second:,.0f} img/s" if result.images_per_second else "-"
    mem = f", peak GPU memory {result.peak_memory_mb:,.0f} MiB" if result.peak_memory_mb else ""
    console.print(f"{speed}{mem}; time {t.get('total', 0):.1f} s (data {t.get('data', 0):.1f}, warm-up "
                  f"{t.get('warmup', 0):.1f}, training {t.get('train', 0):.1f}, evaluation {t.get('eval', 0):.1f})")
    console.print(f"result: {run_dir / 'result.json'}")


def _saved_resolution(path: Path) -> Optional[int]:
    """The resolution a checkpoint of ours was trained at, or None for other files."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    if isinstance(obj, dict) and obj.get("format") == "scaling/1":
        return obj.get("spec", {}).get("resolution")
    return None


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

    from ..data import Batches
    from ..model import EfficientNet
    from ..spec import canonical_name, spec_for
    from ..train import evaluate as run_eval

    if not weights.is_file():
        raise typer.BadParameter(f"no such file: {weights}", param_hint="--weights")
    saved = _saved_resolution(weights)
    if saved is None:  # not our checkpoint: the name says what network it is
        try:
            canonical_name(name)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="NAME")
    dev = _device(device)
    size = resolution or saved or spec_for(name).resolution
    ds, _ = _load_data(data, size, quiet, val_size=val_size)
    try:
        model = EfficientNet.from_pretrained(name, weights_path=weights, num_classes=ds.num_classes)
    except ValueError as e:
        raise InputError(f"--weights {weights}: {e}")
    model = model.to(dev).eval()
    amp = dev.type == "cuda"
    batches = Batches(ds.val, batch_size, train=False, device=dev, seed=0,
                      dtype=torch.bfloat16 if amp else torch.float32)
    top1, top5, loss = run_eval(model, batches, amp)
    console.print(f"{name} on {ds.name} ({len(ds.val):,} held-out images at {ds.resolution}px): "
                  f"top-1 {100 * top1:.2f}%  top-5 {100 * top5:.2f}%  loss {loss:.4f}")
