"""The `scaling` command line: thin Typer commands over the library."""

from __future__ import annotations

import os
import sys
import tempfile
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

# Logs and pipes get a wide table rather than one squeezed to 80 columns.
console = Console(width=None if sys.stdout.isatty() else 180)
err = Console(stderr=True)


class OneLineErrors(TyperGroup):
    """Bad input ends with one line on stderr and exit code 2, never a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args=args, prog_name=prog_name or "scaling", complete_var=complete_var,
                              standalone_mode=False, **extra)
        except typer.Exit as e:
            sys.exit(e.exit_code)
        except typer.Abort:
            err.print("aborted")
            sys.exit(130)
        except _CLICK_ERRORS as e:
            if type(e).__name__ == "NoArgsIsHelpError":
                console.print(e.format_message(), markup=False, highlight=False)
                sys.exit(0)
            err.print(f"error: {e.format_message()}", markup=False, highlight=False, soft_wrap=True)
            sys.exit(2)
        except InputError as e:
            err.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
            sys.exit(2)
        if isinstance(rv, int) and not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


# Typer 0.2x vendors click as typer._click; older Typer raises click's own exceptions.
_CLICK_ERRORS = tuple({click.ClickException, getattr(typer, "TyperException", click.ClickException)})


class InputError(Exception):
    """A problem with what the user asked for (exit code 2)."""


app = typer.Typer(
    cls=OneLineErrors,
    help="Compound-scaling studies of ConvNets, in the manner of EfficientNet.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


class By(str, Enum):
    total = "total"
    stage = "stage"
    layer = "layer"


# ---------------------------------------------------------------------------- helpers


def _range(text: str, option: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.replace(":", ",").split(","))
    except ValueError:
        raise typer.BadParameter(f"needs LOW,HIGH such as 1,1.5; got {text!r}", param_hint=option)
    if not 1.0 <= lo <= hi:
        raise typer.BadParameter(f"needs 1 <= LOW <= HIGH; got {text!r}", param_hint=option)
    return lo, hi


def _check_output(path: Optional[Path]) -> None:
    """Refuse an output path that cannot be written, before any work is done."""
    if path is None:
        return
    if path.is_dir():
        raise typer.BadParameter(f"{path} is a directory; give a file path", param_hint="--output")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise typer.BadParameter(f"folder {parent} does not exist", param_hint="--output")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise typer.BadParameter(f"{path} is not writable", param_hint="--output")


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _emit(df, fmt: Format, output: Optional[Path], show) -> None:
    """Print or write a DataFrame: rich table, CSV or JSON; --output picks by extension for tables."""
    if output is not None:
        kind = fmt.value if fmt != Format.table else ("json" if output.suffix == ".json" else "csv")
        text = df.to_json(orient="records", indent=2) if kind == "json" else df.to_csv(index=False)
        _write_atomic(output, text)
        err.print(f"wrote {len(df)} rows to {output}")
        if fmt != Format.table:
            return
    if fmt == Format.csv:
        sys.stdout.write(df.to_csv(index=False))
    elif fmt == Format.json:
        sys.stdout.write(df.to_json(orient="records", indent=2) + "\n")
    else:
        show()


def _ends(channels: str) -> str:
    parts = channels.split("-")
    return f"{parts[0]}/{parts[-1]}"


def _g(flops: int) -> str:
    return f"{flops / 1e9:.3f}"


def _m(params: int) -> str:
    return f"{params / 1e6:.2f}"


def _table(title: str, columns: list[tuple[str, str]], rows: list[list[str]], caption: str = "") -> Table:
    t = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for name, justify in columns:
        t.add_column(name, justify=justify)
    for r in rows:
        t.add_row(*r)
    return t


# ---------------------------------------------------------------------------- candidates

Phi = Annotated[float, typer.Option("--phi", min=0, max=10, help="Compound coefficient phi, 0..10.")]
Step = Annotated[float, typer.Option(help="Grid step of alpha, beta and gamma (> 0).")]
Tol = Annotated[float, typer.Option(help="Relative tolerance around the target product (> 0).")]
BaseRes = Annotated[int, typer.Option("--base-resolution", min=8, max=4096, help="Base network's image size.")]
Multiple = Annotated[int, typer.Option(min=1, max=256, help="Round resolutions to this multiple.")]
Fmt = Annotated[Format, typer.Option("--format", help="table, csv or json.")]
Out = Annotated[Optional[Path], typer.Option("--output", "-o", help="Also write the rows to this file (CSV or JSON).")]


@app.command()
def candidates(
    phi: Phi = 1.0,
    alpha_range: Annotated[str, typer.Option("--alpha-range", help="LOW,HIGH of alpha.")] = "1,2",
    beta_range: Annotated[str, typer.Option("--beta-range", help="LOW,HIGH of beta.")] = "1,1.5",
    gamma_range: Annotated[str, typer.Option("--gamma-range", help="LOW,HIGH of gamma.")] = "1,1.5",
    step: Step = 0.05,
    tolerance: Tol = 0.05,
    target: Annotated[float, typer.Option(min=1.01, help="Target of alpha*beta^2*gamma^2 (> 1).")] = 2.0,
    base_resolution: BaseRes = 224,
    multiple: Multiple = 8,
    fmt: Fmt = Format.table,
    output: Out = None,
):
    """Which (alpha, beta, gamma) fit the FLOPs budget at phi, merged by the network they round to.

    Example: scaling candidates --phi 1 --step 0.05 --format csv -o candidates.csv
    """
    from .compound import Grid, PAPER, candidates as make_candidates
    from .spec import spec_for
    from .tables import candidates_frame

    if not step > 0:
        raise typer.BadParameter(f"must be > 0, got {step}", param_hint="--step")
    if not tolerance > 0:
        raise typer.BadParameter(f"must be > 0, got {tolerance}", param_hint="--tolerance")
    grid = Grid(alpha=_range(alpha_range, "--alpha-range"), beta=_range(beta_range, "--beta-range"),
                gamma=_range(gamma_range, "--gamma-range"), step=step, target=target, tolerance=tolerance)
    _check_output(output)
    base = spec_for("efficientnet-b0", resolution=base_resolution)
    cands = make_candidates(phi, grid, base, multiple)
    if not cands:
        raise InputError(
            f"the grid has no candidate: no (alpha, beta, gamma) with a product within {tolerance:.2%} of {target:g}; "
            "widen --tolerance or the ranges, or lower --step"
        )
    df = candidates_frame(cands, base)
    n_triples = int(df["n_triples"].sum())

    def show():
        rows = []
        for r in df.itertuples():
            mark = " *" if str(PAPER) in r.triples.split(" (") or r.triples.startswith(str(PAPER)) else ""
            rows.append([str(r.Index + 1), f"{r.alpha:g}", f"{r.beta:g}", f"{r.gamma:g}", f"{r.product:.3f}",
                         str(r.n_triples) + mark, f"{r.d:.3f}", f"{r.w:.3f}", f"{r.r:.3f}", str(r.resolution),
                         r.repeats, _ends(r.channels), _m(r.params), _g(r.flops), f"{r.flops_ratio:.3f}",
                         f"{100 * r.ratio_error:+.1f}%"])
        cols = [("#", "right"), ("alpha", "right"), ("beta", "right"), ("gamma", "right"), ("a*b²*g²", "right"),
                ("triples", "right"), ("d", "right"), ("w", "right"), ("r", "right"), ("res", "right"),
                ("repeats", "left"), ("stem/head", "left"), ("params M", "right"), ("GFLOPs", "right"),
                ("FLOPs x", "right"), (f"vs 2^{phi:g}", "right")]
        console.print(_table(
            f"Candidates at phi={phi:g}: {n_triples} triples -> {len(df)} distinct networks",
            cols, rows,
            caption=("FLOPs are multiply-adds at batch 1 (fvcore). 'FLOPs x' is realized over B0; the last column "
                     "is its difference from 2^phi, which rounding causes. * marks the paper's (1.2, 1.1, 1.15)."),
        ))

    _emit(df, fmt, output, show)


# ---------------------------------------------------------------------------- family


def _multiplier(value: float, option: str) -> float:
    if not value >= 1.0:
        raise typer.BadParameter(f"must be a number >= 1, got {value:g}", param_hint=option)
    return value


@app.command()
def family(
    alpha: Annotated[float, typer.Option(help="Depth base alpha (>= 1).")] = 1.2,
    beta: Annotated[float, typer.Option(help="Width base beta (>= 1).")] = 1.1,
    gamma: Annotated[float, typer.Option(help="Resolution base gamma (>= 1).")] = 1.15,
    phi: Annotated[str, typer.Option("--phi", help="Range such as 0-7, or a list such as 1,3,5 (0..10).")] = "0-7",
    base_resolution: BaseRes = 224,
    multiple: Multiple = 8,
    official: Annotated[bool, typer.Option(help="Show the official B0..B7 beside the family.")] = True,
    fmt: Fmt = Format.table,
    output: Out = None,
):
    """The phi-scaled family of B0 with (alpha, beta, gamma), beside the official B0..B7.

    Example: scaling family --alpha 1.2 --beta 1.1 --gamma 1.15 --phi 1-7
    """
    import pandas as pd

    from .compound import Triple, family as make_family, official as official_specs, parse_phis
    from .spec import spec_for
    from .tables import family_frame, official_frame

    for value, option in ((alpha, "--alpha"), (beta, "--beta"), (gamma, "--gamma")):
        _multiplier(value, option)
    try:
        phis = parse_phis(phi)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--phi")
    if not phis or any(not 0 <= p <= 10 for p in phis):
        raise typer.BadParameter(f"values must lie in 0..10, got {phi!r}", param_hint="--phi")
    _check_output(output)
    triple = Triple(alpha, beta, gamma)
    base = spec_for("efficientnet-b0", resolution=base_resolution)
    fam = family_frame(make_family(triple, phis, base, multiple), base)
    off = official_frame(official_specs()) if official else fam.iloc[0:0]
    df = pd.concat([fam, off], ignore_index=True) if official else fam

    def rows(frame):
        return [[r.name, f"{r.d:.3f}", f"{r.w:.3f}", f"{r.r:.3f}", str(r.resolution), r.repeats, r.channels,
                 _m(r.params), _g(r.flops), f"{r.flops_ratio:.2f}",
                 "" if r.nominal_ratio is None or pd.isna(r.nominal_ratio) else f"{r.nominal_ratio:.2f}"]
                for r in frame.itertuples()]

    cols = [("network", "left"), ("d", "right"), ("w", "right"), ("r", "right"), ("res", "right"),
            ("repeats", "left"), ("channels", "left"), ("params M", "right"), ("GFLOPs", "right"),
            ("FLOPs x B0", "right"), ("(a*b²*g²)^phi", "right")]

    def show():
        console.print(_table(
            f"Compound family ({alpha:g}, {beta:g}, {gamma:g}); alpha*beta²*gamma² = {triple.product:.4f}",
            cols, rows(fam), caption="d, w, r = alpha^phi, beta^phi, gamma^phi; FLOPs are multiply-adds at batch 1."))
        if official:
            console.print(_table("Official EfficientNet-B0..B7", cols, rows(off)))

    _emit(df, fmt, output, show)


# ---------------------------------------------------------------------------- flops


@app.command()
def flops(
    name: Annotated[Optional[str], typer.Argument(help="efficientnet-b0 .. b8, efficientnet-l2.")] = None,
    width: Annotated[Optional[float], typer.Option(min=0.01, help="Width multiplier of B0 (custom network).")] = None,
    depth: Annotated[Optional[float], typer.Option(min=0.01, help="Depth multiplier of B0 (custom network).")] = None,
    resolution: Annotated[Optional[int], typer.Option(min=8, max=8192, help="Image size.")] = None,
    num_classes: Annotated[int, typer.Option(min=1, help="Classifier outputs.")] = 1000,
    by: Annotated[By, typer.Option(help="total, stage or layer.")] = By.stage,
    traced: Annotated[bool, typer.Option(help="Count by tracing the model with plain fvcore (slow) as a check.")] = False,
    fmt: Fmt = Format.table,
    output: Out = None,
):
    """FLOPs (multiply-adds), parameters and activations of one network, in total or per stage or layer.

    Example: scaling flops efficientnet-b3 --by stage   |   scaling flops --width 1.1 --depth 1.2 --resolution 256
    """
    from .complexity import breakdown, count, count_traced
    from .spec import custom_spec, spec_for

    custom = (width, depth, resolution)
    if name is None:
        if width is None or depth is None or resolution is None:
            raise InputError("give a network name (e.g. efficientnet-b0) or all of --width, --depth and --resolution")
        spec = custom_spec(width, depth, resolution, num_classes=num_classes)
    else:
        try:
            overrides = {k: v for k, v in zip(("width", "depth", "resolution"), custom) if v is not None}
            spec = spec_for(name, num_classes=num_classes, **overrides)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="NAME")
    _check_output(output)
    total = count(spec)
    if traced:
        plain = count_traced(spec)
        if plain != total:
            raise RuntimeError(f"fast count {total} differs from plain fvcore {plain}")
    import pandas as pd

    df = pd.DataFrame([{"stage": "total", **total.to_dict()}]) if by == By.total else breakdown(spec, by.value)

    def show():
        label = spec.name or "custom"
        head = (f"{label}: width {spec.width:g}, depth {spec.depth:g}, {spec.resolution}x{spec.resolution}, "
                f"{spec.num_classes} classes")
        console.print(head)
        console.print(f"FLOPs {total.flops:,} ({_g(total.flops)} G multiply-adds)   params {total.params:,} "
                      f"({_m(total.params)} M)   activations {total.activations:,}"
                      + ("   (plain fvcore agrees)" if traced else ""))
        if by == By.total:
            return
        key = "stage" if by == By.stage else "layer"
        extra = [("layers", "right")] if by == By.stage else [("input", "left"), ("output", "left")]
        cols = [(key, "left")] + extra + [("MFLOPs", "right"), ("share", "right"), ("params", "right"),
                                          ("activations", "right")]
        rows = []
        for r in df.itertuples():
            mid = [str(r.layers)] if by == By.stage else [r.input, r.output]
            rows.append([getattr(r, key)] + mid + [f"{r.flops / 1e6:.2f}", f"{100 * r.flops / total.flops:.1f}%",
                                                   f"{r.params:,}", f"{r.activations:,}"])
        console.print(_table(f"By {key}", cols, rows))

    _emit(df, fmt, output, show)


# ---------------------------------------------------------------------------- export


@app.command()
def export(
    name: Annotated[str, typer.Argument(help="efficientnet-b0 .. b8, efficientnet-l2.")],
    onnx: Annotated[Path, typer.Option("--onnx", help="Where to write the ONNX file.")],
    weights: Annotated[Optional[Path], typer.Option(help="Local weights file (ours, EfficientNet-PyTorch, torchvision, timm).")] = None,
    resolution: Annotated[Optional[int], typer.Option(min=32, max=8192, help="Input size (default: the network's).")] = None,
    num_classes: Annotated[int, typer.Option(min=1, help="Classifier outputs.")] = 1000,
):
    """Export a network to ONNX (static "same" padding, dynamic batch).

    Example: scaling export efficientnet-b0 --onnx b0.onnx
    """
    from .export import export_onnx
    from .model import EfficientNet
    from .spec import canonical_name

    try:
        canonical_name(name)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="NAME")
    _check_output_path(onnx, "--onnx")
    if weights is not None and not weights.is_file():
        raise typer.BadParameter(f"no such file: {weights}", param_hint="--weights")
    if weights is not None:
        model = EfficientNet.from_pretrained(name, weights_path=weights, num_classes=num_classes)
    else:
        model = EfficientNet.from_name(name, num_classes=num_classes)
    try:
        export_onnx(model, onnx, resolution)
    except ImportError as e:
        raise InputError(str(e))
    size = resolution or model.spec.resolution
    console.print(f"wrote {onnx} ({onnx.stat().st_size / 1e6:.1f} MB): input images [N, {model.spec.in_channels}, "
                  f"{size}, {size}] float32, output logits [N, {num_classes}]")


# ---------------------------------------------------------------------------- train, evaluate


def _network(name: Optional[str], width, depth, resolution) -> "NetworkSpec":
    from .spec import custom_spec, spec_for

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

    from .data import DataError, load_data

    if data not in ("default", "") and not Path(data).expanduser().exists():
        raise typer.BadParameter(f"no such file or folder: {data}", param_hint="--data")
    t0 = time.perf_counter()
    try:
        ds = load_data(None if data in ("default", "") else Path(data).expanduser(), resolution, quiet=quiet, **kw)
    except (DataError, OSError) as e:
        raise InputError(f"--data {data}: {e}")
    return ds, time.perf_counter() - t0


def _device(device: str):
    from .train import resolve_device

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
    from .recipe import get_recipe
    from .train import train as run_training

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

    from .data import Batches
    from .model import EfficientNet
    from .spec import canonical_name, spec_for
    from .train import evaluate as run_eval

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


# ---------------------------------------------------------------------------- search

# On a machine without a GPU, the default study shrinks to this and says so.
CPU_BUDGET = dict(base_resolution=32, base_width=0.25, base_depth=0.25, train_size=2000, val_size=500, trials=12,
                  recipe={"name": "proxy", "epochs": 4, "batch_size": 64, "lr": 0.4})


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl+C so that Optuna marks the running trial."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _gpus(text: Optional[str]) -> list[int]:
    import torch

    if text in (None, "", "none"):
        return []
    n = torch.cuda.device_count()
    if text == "all":
        if n == 0:
            raise typer.BadParameter("no GPU is visible", param_hint="--gpus")
        return list(range(n))
    try:
        ids = [int(v) for v in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"needs all, none or indices such as 0,2; got {text!r}", param_hint="--gpus")
    bad = [i for i in ids if not 0 <= i < n]
    if bad:
        raise typer.BadParameter(f"GPU {bad[0]} does not exist ({n} visible)", param_hint="--gpus")
    return ids


def _summarize(study, config, folder: Path) -> None:
    from .results import failures_frame, paper_rank, results_frame, running, write_csv

    df = results_frame(study)
    write_csv(df, folder / "results.csv")
    fails = failures_frame(study)
    n_run = running(study)
    if df.empty:
        console.print(f"study {config.name}: no completed trial yet" + (f" ({n_run} running)" if n_run else ""))
    else:
        rows = [[str(r.rank), f"{r.alpha:g}", f"{r.beta:g}", f"{r.gamma:g}", str(r.resolution), r.repeats,
                 _m(r.params), _g(r.flops), f"{100 * r.top1:.2f}",
                 "" if r.seeds < 2 else f"{100 * r.top1_std:.2f}", str(r.seeds)] for r in df.head(15).itertuples()]
        cols = [("rank", "right"), ("alpha", "right"), ("beta", "right"), ("gamma", "right"), ("res", "right"),
                ("repeats", "left"), ("params M", "right"), ("GFLOPs", "right"), ("top-1 %", "right"),
                ("std", "right"), ("seeds", "right")]
        console.print(_table(f"Study {config.name}: {len(df)} networks trained"
                             + (f", {n_run} running" if n_run else ""), cols, rows))
        best = df.iloc[0]
        console.print(f"best: (alpha, beta, gamma) = ({best.alpha:g}, {best.beta:g}, {best.gamma:g}), top-1 "
                      f"{100 * best.top1:.2f}% at {_g(best.flops)} GFLOPs")
        rank = paper_rank(df)
        console.print("the paper's (1.2, 1.1, 1.15): " + (f"rank {rank} of {len(df)}" if rank else "not trained"))
    if len(fails):
        console.print(f"{len(fails)} failed trial(s):")
        for r in fails.itertuples():
            console.print(f"  trial {r.trial} {r.triples}: {r.reason or 'error'}", markup=False)
    console.print(f"results: {folder / 'results.csv'}")


@app.command()
def search(
    study_file: Annotated[Optional[Path], typer.Option("--study", help="A study TOML file (studies/*.toml).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Study name (folder under --studies-dir).")] = None,
    data: Annotated[Optional[str], typer.Option(help="'default' or an ImageFolder folder / archive.")] = None,
    phi: Annotated[Optional[float], typer.Option("--phi", min=0, max=10, help="Compound coefficient, 0..10.")] = None,
    base_resolution: Annotated[Optional[int], typer.Option(min=8, max=4096, help="B0's image size.")] = None,
    sampler: Annotated[Optional[str], typer.Option(help="grid (each network once), tpe or random.")] = None,
    trials: Annotated[Optional[int], typer.Option(min=1, help="Networks (grid) or trials (tpe, random).")] = None,
    seeds: Annotated[Optional[int], typer.Option(min=1, help="Train each network with this many seeds.")] = None,
    prune: Annotated[Optional[bool], typer.Option(help="Stop trials below the median early.")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Epochs per trial.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Batch size per trial.")] = None,
    storage: Annotated[Optional[str], typer.Option(help="Database URL shared by workers (default: SQLite in the study folder).")] = None,
    gpus: Annotated[Optional[str], typer.Option(help="all, none, or indices such as 0,2: one worker per GPU.")] = None,
    workers: Annotated[int, typer.Option(min=1, max=256, help="Worker processes on the CPU (without GPUs).")] = 1,
    studies_dir: Annotated[Path, typer.Option(help="Where study folders live.")] = Path("studies"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
):
    """Train each candidate network briefly (an Optuna study) and rank them by held-out top-1.

    Example: scaling search --phi 1   |   scaling search --study studies/cifar10.toml --gpus all
    """
    import signal

    import torch

    from .search import create_study, run_worker, storage_url, open_storage
    from .study import StudyError, check_or_save, resolve

    gpu_ids = _gpus(gpus) if gpus is not None else (list(range(torch.cuda.device_count())) if torch.cuda.is_available() else [])
    explicit = dict(name=name, source=data, phi=phi, base_resolution=base_resolution, sampler=sampler,
                    trials=trials, seeds=seeds, prune=prune)
    try:
        config = resolve(study_file, **explicit)
        budget_note = ""
        if not gpu_ids and study_file is None and config.source == "default":
            reduced = {k: v for k, v in CPU_BUDGET.items() if explicit.get(k) is None}
            config = config.replace(**reduced, name=name or "default-cpu")
            budget_note = ("no GPU: a reduced budget - 12 of the grid's networks (spread over it), each 4 epochs on "
                           "2,000 images of the embedded data, from a base of B0 at width 0.25, depth 0.25, 32 px. "
                           "The full study, on a GPU: scaling search --phi 1 --name default --base-resolution 224")
        if epochs or batch_size:
            config = config.replace(recipe={**config.recipe, **{k: v for k, v in
                                                                (("epochs", epochs), ("batch_size", batch_size)) if v}})
        if config.source != "default" and not Path(config.source).expanduser().exists():
            raise typer.BadParameter(f"no such file or folder: {config.source}", param_hint="--data")
        if storage is not None:
            open_storage(storage)  # refuse a bad URL before anything is created
    except StudyError as e:
        raise InputError(str(e))
    from .search import study_candidates

    if not study_candidates(config):
        raise InputError("the grid has no candidate network; widen its ranges or tolerance")
    folder = studies_dir / config.name
    try:
        check_or_save(config, folder)
    except StudyError as e:
        raise InputError(str(e))
    url = storage_url(config, folder, storage)
    if budget_note:
        err.print(budget_note)
    _load_data(config.source, config.base_resolution, quiet, train_size=config.train_size, val_size=config.val_size)
    study = create_study(config, url)
    signal.signal(signal.SIGTERM, _on_sigterm)
    code = 0
    try:
        if gpu_ids:
            code = _run_workers(config, url, [({"CUDA_VISIBLE_DEVICES": str(i)}, "cuda:0") for i in gpu_ids])
        elif workers > 1:
            code = _run_workers(config, url, [({}, "cpu")] * workers)
        else:
            _run_local(config, url, study, quiet)
    except KeyboardInterrupt as e:
        code = 143 if isinstance(e, Terminated) else 130
        err.print("interrupted: the running trial is marked failed and queued again; run the same command to resume")
    _summarize(study, config, folder)
    if code:
        raise typer.Exit(code)


def _run_local(config, url, study, quiet) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .search import counts, run_worker

    total = study.user_attrs.get("enqueued") or config.trials or 20

    def done(s) -> int:
        c = counts(s)
        return c["COMPLETE"] + c["FAIL"]

    with Progress(TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  disable=quiet, console=err) as progress:
        task = progress.add_task("", total=total, completed=min(done(study), total))
        run_worker(config, url, quiet=True, on_trial=lambda s: progress.update(task, completed=min(done(s), total)))


def _run_workers(config, url, workers: list[tuple[dict, str]]) -> int:
    """One `scaling worker` process per (environment, device); waits for all."""
    import signal
    import subprocess
    import sys

    procs = []
    for env, device in workers:
        procs.append(subprocess.Popen([sys.executable, "-m", "scaling.cli", "worker", config.name, "--storage", url,
                                       "--device", device, "-q"], env=dict(os.environ, **env)))
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait()
        raise
    return 0 if all(c == 0 for c in codes) else 1


@app.command()
def worker(
    name: Annotated[str, typer.Argument(help="The study's name.")],
    storage: Annotated[str, typer.Option(help="The study's database URL (see `scaling search --storage`).")],
    device: Device = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
):
    """Join a study as one more worker (on this or another machine) and train its queued networks.

    Example: scaling worker cifar10 --storage postgresql://user@host/scaling --device cuda:0
    """
    import json
    import signal

    from .search import load_study, run_worker
    from .study import StudyConfig, StudyError

    dev = _device(device)
    try:
        from .search import open_storage

        open_storage(storage)
        config = StudyConfig(name=name)
        study = load_study(config, storage)
        definition = study.user_attrs.get("definition")
        if definition is None:
            raise StudyError(f"study {name!r} has no definition; start it with `scaling search`")
        d = json.loads(definition)
        config = StudyConfig(**{**d, "alpha": tuple(d["alpha"]), "beta": tuple(d["beta"]), "gamma": tuple(d["gamma"])})
    except StudyError as e:
        raise InputError(str(e))
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        run_worker(config, storage, device=dev, quiet=quiet)
    except KeyboardInterrupt as e:
        raise typer.Exit(143 if isinstance(e, Terminated) else 130)


@app.command()
def results(
    name: Annotated[str, typer.Argument(help="The study's name.")],
    storage: Annotated[Optional[str], typer.Option(help="Database URL (default: SQLite in the study folder).")] = None,
    studies_dir: Annotated[Path, typer.Option(help="Where study folders live.")] = Path("studies"),
):
    """Print a study's ranking and write studies/NAME/results.csv.

    Example: scaling results default
    """
    from .search import load_study, storage_url
    from .study import StudyConfig, StudyError

    folder = studies_dir / name
    if storage is None and not (folder / "optuna.db").exists():
        raise typer.BadParameter(f"no study {name!r} in {studies_dir}", param_hint="NAME")
    try:
        config = StudyConfig(name=name)
        study = load_study(config, storage_url(config, folder, storage))
    except StudyError as e:
        raise InputError(str(e))
    _summarize(study, config, folder)


def _check_output_path(path: Path, option: str) -> None:
    try:
        _check_output(path)
    except typer.BadParameter as e:
        raise typer.BadParameter(e.message, param_hint=option)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
