"""Commands about networks: candidates, family, flops, export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import trained as T
from .app import (BaseOpt, Format, By, InputError, _base, _check_output, _check_output_path, _emit, _ends, _f, _g,
                  _m, _range, _table, app, console, plural)
from ..units import flops_unit


# ---------------------------------------------------------------------------- candidates

Phi = Annotated[float, typer.Option("--phi", min=0, max=10, help="Compound coefficient phi, 0..10.")]
Step = Annotated[float, typer.Option(help="Grid step of alpha, beta and gamma (> 0).")]
Tol = Annotated[float, typer.Option(help="Relative tolerance around the target product (> 0).")]
BaseRes = Annotated[int, typer.Option("--base-resolution", min=8, max=4096, help="Base network's image size.")]
BaseWidth = Annotated[float, typer.Option("--base-width", min=0.01, max=64, help="Base network: --base's width times this.")]
BaseDepth = Annotated[float, typer.Option("--base-depth", min=0.01, max=64, help="Base network: --base's depth times this.")]
Multiple = Annotated[int, typer.Option(min=1, max=256, help="Round resolutions to this multiple.")]
Fmt = Annotated[Format, typer.Option("--format", help="table, csv or json.")]
Out = Annotated[Optional[Path], typer.Option("--output", "-o", help="Also write the rows to this file (CSV or JSON).")]


FlopsTol = Annotated[float, typer.Option(
    "--flops-tolerance", min=0.001, max=10,
    help="Hold each network's realized FLOPs within this fraction of target^phi x the base's (0.1: 10%).")]
MaxGrid = Annotated[int, typer.Option("--max-grid", min=1, help="Refuse a grid of more points than this.")]
Wide = Annotated[bool, typer.Option("--wide", help="Every column (the default fits 100 columns).")]


@app.command()
def candidates(
    phi: Phi = 1.0,
    alpha_range: Annotated[str, typer.Option("--alpha-range", help="LOW,HIGH of alpha.")] = "1,2",
    beta_range: Annotated[str, typer.Option("--beta-range", help="LOW,HIGH of beta.")] = "1,1.5",
    gamma_range: Annotated[str, typer.Option("--gamma-range", help="LOW,HIGH of gamma.")] = "1,1.5",
    step: Step = 0.05,
    tolerance: Tol = 0.05,
    target: Annotated[float, typer.Option(min=1.01, help="Target of alpha*beta^2*gamma^2 (> 1).")] = 2.0,
    flops_tolerance: FlopsTol = 0.1,
    base_resolution: BaseRes = 224,
    base_width: BaseWidth = 1.0,
    base_depth: BaseDepth = 1.0,
    base_name: BaseOpt = None,
    multiple: Multiple = 8,
    max_grid: MaxGrid = 2_000_000,
    wide: Wide = False,
    fmt: Fmt = Format.table,
    output: Out = None,
):
    """Which (alpha, beta, gamma) fit the FLOPs budget at phi, merged by the network they round to.

    Each network is held to its realized FLOPs: within --flops-tolerance of target^phi times
    the base's (B0's unless --base says otherwise), its resolution moved to the nearest size in
    budget where rounding pushed it out, or left out where no size in the gamma range is.

    Example: scaling candidates --phi 1 --step 0.05 --format csv -o candidates.csv   |   scaling candidates --base resnet50
    """
    from ..bases import BaseError
    from ..compound import Grid, GridTooLarge, PAPER, candidates as make_candidates
    from ..tables import candidates_frame

    if not step > 0:
        raise typer.BadParameter(f"must be > 0, got {step}", param_hint="--step")
    if not tolerance > 0:
        raise typer.BadParameter(f"must be > 0, got {tolerance}", param_hint="--tolerance")
    grid = Grid(alpha=_range(alpha_range, "--alpha-range"), beta=_range(beta_range, "--beta-range"),
                gamma=_range(gamma_range, "--gamma-range"), step=step, target=target, tolerance=tolerance)
    _check_output(output)
    base = _base_spec(base_name, base_width, base_depth, base_resolution)
    try:
        cands = make_candidates(phi, grid, base, multiple, flops_tolerance=flops_tolerance, max_points=max_grid)
        df = candidates_frame(cands, base, target=target) if cands else None
    except GridTooLarge as e:
        raise InputError(f"{e} (--max-grid)")
    except BaseError as e:
        raise InputError(f"--base: {e}")
    n_grid = sum(1 for _ in grid.iter_triples())
    if not cands:
        raise InputError(
            f"the grid has no candidate: {n_grid} (alpha, beta, gamma) with a product within {tolerance:.2%} of "
            f"{target:g}, none held within {flops_tolerance:.0%} of its FLOPs budget; widen --tolerance, "
            "--flops-tolerance or the ranges, or lower --step"
        )
    n_triples = int(df["n_triples"].sum())

    unit, scale = flops_unit(df["flops"])

    def show():
        cols = [("#", "right"), ("α", "right"), ("β", "right"), ("γ", "right")]
        if wide:
            cols += [("αβ²γ²", "right"), ("d", "right"), ("w", "right"), ("r", "right")]
        cols += [("res", "right")]
        if wide:
            cols += [("repeats", "left"), ("stem/head", "left")]
        cols += [("params M", "right"), (unit, "right"), (_times_base(base), "right"),
                 (f"vs {target:g}^{phi:g}", "right")]
        if wide:
            cols += [("nominal ×", "right"), ("same network from (α/β/γ)", "left")]
        rows = []
        for r, c in zip(df.itertuples(), cands):
            mark = "*" if PAPER in c.triples else ""
            res = str(r.resolution) + ("" if r.resolution == r.nominal_resolution else f" ({r.nominal_resolution})")
            row = [str(r.Index + 1), f"{r.alpha:g}", f"{r.beta:g}", f"{r.gamma:g}{mark}"]
            if wide:
                row += [f"{r.product:.3f}", f"{r.d:.3f}", f"{r.w:.3f}", f"{r.r:.3f}"]
            row += [res]
            if wide:
                row += [r.repeats, _ends(r.channels)]
            row += [_m(r.params), _f(r.flops, scale), f"{r.flops_ratio:.3f}", f"{100 * r.ratio_error:+.1f}%"]
            if wide:
                also = " ".join(f"{t.alpha:g}/{t.beta:g}/{t.gamma:g}" for t in c.triples[1:])
                row += [f"{r.nominal_ratio:.3f}", also]
            rows.append(row)
        console.print(_table(
            f"phi={phi:g}: {plural(len(df), 'network')} from {n_triples} of {plural(n_grid, 'triple')}, FLOPs within "
            f"{flops_tolerance:.0%} of {target:g}^{phi:g} x the base" + _of_base(base),
            cols, rows,
            caption=(f"FLOPs: multiply-adds at batch 1 (fvcore). {_times_base(base)!r}: realized FLOPs over the "
                     "base's; the next column: "
                     f"its difference from {target:g}^phi. res (N): moved from N px (gamma^phi rounded) to hold the "
                     "budget. * marks the network the paper's (1.2, 1.1, 1.15) rounds to. --wide shows every column."),
        ))

    _emit(df, fmt, output, show)


# ---------------------------------------------------------------------------- family


def _triple_and_phis(alpha: float, beta: float, gamma: float, phi: str):
    """The family options, checked: each base >= 1, phi values in 0..10."""
    from ..compound import Triple, parse_phis

    for value, option in ((alpha, "--alpha"), (beta, "--beta"), (gamma, "--gamma")):
        _multiplier(value, option)
    try:
        phis = parse_phis(phi)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--phi")
    if not phis or any(not 0 <= p <= 10 for p in phis):
        raise typer.BadParameter(f"values must lie in 0..10, got {phi!r}", param_hint="--phi")
    return Triple(alpha, beta, gamma), phis


def _multiplier(value: float, option: str) -> float:
    if not value >= 1.0:
        raise typer.BadParameter(f"must be a number >= 1, got {value:g}", param_hint=option)
    return value


def _base_spec(name, width: float, depth: float, resolution: int):
    """The base network of ``--base`` (B0 by default) at ``--base-width``, ``--base-depth`` and
    ``--base-resolution``; a bad base or multiplier ends in one line, exit code 2."""
    base = _base(name)
    try:
        return base.spec(width=width, depth=depth, resolution=resolution)
    except ValueError as e:
        raise InputError(f"--base {base.name}: {e}")


def _times_base(spec) -> str:
    """The heading of the column of FLOPs over the base's: "× B0", or "× base" for another base."""
    return "× base" if _of_base(spec) else "× B0"


def _of_base(spec) -> str:
    """ " (base resnet50)" in a table's title where the base is not B0."""
    from ..bases import DEFAULT, base_name

    name = base_name(spec)
    return "" if name == DEFAULT else f" (base {name})"


@app.command()
def family(
    alpha: Annotated[float, typer.Option(help="Depth base alpha (>= 1).")] = 1.2,
    beta: Annotated[float, typer.Option(help="Width base beta (>= 1).")] = 1.1,
    gamma: Annotated[float, typer.Option(help="Resolution base gamma (>= 1).")] = 1.15,
    phi: Annotated[str, typer.Option("--phi", help="Range such as 0-7, or a list such as 1,3,5 (0..10).")] = "0-7",
    base_resolution: BaseRes = 224,
    base_width: BaseWidth = 1.0,
    base_depth: BaseDepth = 1.0,
    base_name: BaseOpt = None,
    multiple: Multiple = 8,
    official: Annotated[Optional[bool], typer.Option(
        help="Show the official B0..B7 beside the family (default); with --train, also train them.")] = None,
    wide: Wide = False,
    fmt: Fmt = Format.table,
    output: Out = None,
    train: Annotated[bool, typer.Option("--train", help="Train every member with the study's data and recipe.")] = False,
    study_file: T.StudyFile = None,
    name: T.Name = None,
    data: T.Data = None,
    storage: T.Storage = None,
    gpus: T.Gpus = None,
    per_gpu: T.PerGpu = None,
    workers: T.Workers = 1,
    seeds: T.Seeds = 1,
    epochs: T.Epochs = None,
    batch_size: T.BatchSize = None,
    studies_dir: T.StudiesDir = Path("studies"),
    quiet: T.Quiet = False,
    report: T.Report = True,
):
    """The phi-scaled family of B0 (or --base) with (alpha, beta, gamma), beside the official B0..B7.

    With --train, every member is trained (an Optuna study beside the search, same data,
    recipe, workers and resume, and the study's base) and shown with its accuracy, speed and memory.

    Example: scaling family --alpha 1.2 --beta 1.1 --gamma 1.15 --phi 1-7   |   scaling family --train --official
    """
    import pandas as pd

    from ..bases import DEFAULT, BaseError
    from ..compound import family as make_family, official as official_specs
    from ..tables import family_frame, official_frame

    triple, phis = _triple_and_phis(alpha, beta, gamma, phi)
    _check_output(output)
    other_base = _base(base_name).name != DEFAULT
    if official and other_base:
        raise InputError(f"--official: the official networks are EfficientNet-B0..B7, not of base {base_name}")
    if train:
        if base_name is not None:
            raise InputError("--base with --train: the family is trained on the study's base (--study, --name)")
        from ..plans import family_plans

        try:
            plans = family_plans(phis, alpha, beta, gamma, official=bool(official))
        except ValueError as e:  # the official networks are B0..B7
            raise typer.BadParameter(str(e), param_hint="--phi")
        def chosen(config, base):
            if official and config.base != DEFAULT:
                raise InputError(f"--official: the official networks are EfficientNet-B0..B7, not of study "
                                 f"{config.name!r}'s base {config.base}")
            return plans

        code = T.train_plans(chosen, study_file=study_file, name=name, data=data, storage=storage, gpus=gpus,
                             workers=workers, seeds=seeds, epochs=epochs, batch_size=batch_size,
                             studies_dir=studies_dir, quiet=quiet, report=report, fmt=fmt, output=output,
                             per_gpu=per_gpu)
        raise typer.Exit(code)
    official = (not other_base) if official is None else official
    base = _base_spec(base_name, base_width, base_depth, base_resolution)
    try:
        fam = family_frame(make_family(triple, phis, base, multiple), base)
    except (BaseError, ValueError) as e:
        raise InputError(f"--base {base_name}: {e}")
    off = official_frame(official_specs()) if official else fam.iloc[0:0]
    df = pd.concat([fam, off], ignore_index=True) if official else fam

    unit, scale = flops_unit(df["flops"])

    def rows(frame):
        out = []
        for r in frame.itertuples():
            nominal = "" if r.nominal_ratio is None or pd.isna(r.nominal_ratio) else f"{r.nominal_ratio:.2f}"
            row = [r.name, f"{r.d:.3f}", f"{r.w:.3f}", f"{r.r:.3f}", str(r.resolution)]
            row += [r.repeats, r.channels] if wide else []
            out.append(row + [_m(r.params), _f(r.flops, scale), f"{r.flops_ratio:.2f}", nominal])
        return out

    cols = [("network", "left"), ("d", "right"), ("w", "right"), ("r", "right"), ("res", "right")]
    cols += [("repeats", "left"), ("channels", "left")] if wide else []
    cols += [("params M", "right"), (unit, "right"), (_times_base(base), "right"), ("nominal ×", "right")]

    def show():
        console.print(_table(
            f"Compound family ({alpha:g}, {beta:g}, {gamma:g}); alpha*beta²*gamma² = {triple.product:.4f}"
            + _of_base(base),
            cols, rows(fam), caption=("d, w, r = alpha^phi, beta^phi, gamma^phi; FLOPs are multiply-adds at batch 1; "
                                      f"{_times_base(base)!r}: realized FLOPs over the base's; nominal ×: "
                                      "(alpha*beta²*gamma²)^phi. "
                                      "--wide adds repeats and channels.")))
        if official:
            console.print(_table("Official EfficientNet-B0..B7", cols, rows(off)))

    _emit(df, fmt, output, show)


# ---------------------------------------------------------------------------- flops


@app.command()
def flops(
    names: Annotated[Optional[list[str]], typer.Argument(
        metavar="[NAME]...",
        help="efficientnet-b0 .. b8, efficientnet-l2; several give one row each (also resnet50, mobilenetv2: "
             "the base at --width, --depth, default 1).")] = None,
    width: Annotated[Optional[float], typer.Option(min=0.01, help="Width multiplier of B0 (custom network).")] = None,
    depth: Annotated[Optional[float], typer.Option(min=0.01, help="Depth multiplier of B0 (custom network).")] = None,
    resolution: Annotated[Optional[int], typer.Option(min=8, max=8192, help="Image size.")] = None,
    num_classes: Annotated[int, typer.Option(min=1, help="Classifier outputs.")] = 1000,
    by: Annotated[By, typer.Option(help="total, stage or layer (one network; several are shown in total).")] = By.stage,
    traced: Annotated[bool, typer.Option(help="Count by tracing the model with plain fvcore (slow) as a check.")] = False,
    base_name: BaseOpt = None,
    measure: Annotated[bool, typer.Option(
        "--measure", help="Also measure inference: latency at batch 1 and throughput at --batch (bf16 and "
                          "channels_last on a GPU, fp32 on the CPU; warm-up, then the median of the repeats).")] = False,
    device: Annotated[str, typer.Option(help="With --measure: auto (a GPU if there is one), cpu, cuda or cuda:N.")] = "auto",
    batch: Annotated[Optional[int], typer.Option(
        "--batch", min=1, max=65536, help="With --measure: the throughput batch (default 256 on a GPU, 32 on the CPU).")] = None,
    repeats: Annotated[Optional[int], typer.Option(
        min=1, max=1000, help="With --measure: timed repeats at batch 1 (default 30 on a GPU, 5 on the CPU; "
                              "a third as many at --batch, at least 3).")] = None,
    fmt: Fmt = Format.table,
    output: Out = None,
):
    """FLOPs (multiply-adds), parameters and activations of one network, in total or per stage or layer;
    with --measure, also its inference latency and throughput on --device.

    With --base other than efficientnet-b0, the base at --width and --depth (default 1) and
    --resolution (default 224), counted by an fvcore trace (cached); its stages are the
    network's top-level modules. Several names give one row each, and with --measure the fits of
    log latency against log FLOPs and log activations across them (which predicts latency better).

    Example: scaling flops efficientnet-b3 --by stage   |   scaling flops --width 1.1 --depth 1.2 --resolution 256
    |   scaling flops --base resnet50 --by total   |   scaling flops efficientnet-b0 efficientnet-b1 resnet50 --measure
    """
    from ..bases import DEFAULT, BaseError
    from ..complexity import breakdown, count, count_traced
    from ..spec import custom_spec

    custom = (width, depth, resolution)
    base = _base(base_name)
    names = list(names or [])
    speed = (lambda spec: _measure(spec, device, batch, repeats)) if measure else None
    if base.name != DEFAULT:
        if names:
            raise InputError(f"NAME names an EfficientNet; with --base {base.name} give --width, --depth and "
                             "--resolution (default 1, 1 and 224)")
        spec = _base_spec(base.name, width or 1.0, depth or 1.0, resolution or 224).replace(num_classes=num_classes)
        _check_output(output)
        try:
            total = count(spec)
            import pandas as pd

            df = (pd.DataFrame([{"stage": "total", **total.to_dict()}]) if by == By.total
                  else breakdown(spec, by.value))
        except BaseError as e:
            raise InputError(f"--base: {e}")
        _show_flops(spec, total, df, by, fmt, output, note="   (an fvcore trace)", speed=speed)
        return
    if len(names) > 1:
        specs = [_named_spec(n, width, depth, resolution, num_classes) for n in names]
        _check_output(output)
        _show_many(specs, fmt, output, speed, traced)
        return
    if not names:
        if width is None or depth is None or resolution is None:
            raise InputError("give a network name (e.g. efficientnet-b0) or all of --width, --depth and --resolution")
        spec = custom_spec(width, depth, resolution, num_classes=num_classes)
    else:
        spec = _named_spec(names[0], width, depth, resolution, num_classes)
    _check_output(output)
    try:
        total = count(spec)
    except BaseError as e:
        raise InputError(str(e))
    if traced:
        plain = count_traced(spec)
        if plain != total:
            raise RuntimeError(f"fast count {total} differs from plain fvcore {plain}")
    import pandas as pd

    df = pd.DataFrame([{"stage": "total", **total.to_dict()}]) if by == By.total else breakdown(spec, by.value)
    _show_flops(spec, total, df, by, fmt, output, note="   (plain fvcore agrees)" if traced else "", speed=speed)


def _named_spec(name: str, width, depth, resolution, num_classes: int):
    """The spec a NAME of ``scaling flops`` names: an EfficientNet (--width, --depth, --resolution
    overriding its own), or a built-in base (resnet50, mobilenetv2) at --width and --depth (default 1)."""
    from ..bases import ALIASES, BASES, DEFAULT
    from ..spec import spec_for

    try:
        overrides = {k: v for k, v in zip(("width", "depth", "resolution"), (width, depth, resolution))
                     if v is not None}
        return spec_for(name, num_classes=num_classes, **overrides)
    except ValueError as e:
        key = ALIASES.get(name.strip().lower(), name.strip().lower())
        if key in BASES and key != DEFAULT:
            return _base_spec(key, width or 1.0, depth or 1.0, resolution or 224).replace(num_classes=num_classes)
        raise typer.BadParameter(str(e), param_hint="NAME")


def _measure(spec, device: str, batch, repeats) -> dict:
    """``--measure``: :func:`scaling.speed.measure` of ``spec``; a bad or missing device ends in one line."""
    from ..speed import measure

    try:
        return measure(spec, device, batch=batch, repeats=repeats)
    except ValueError as e:
        raise InputError(f"--device: {e}")


def _speed_text(s: dict) -> str:
    return (f"latency {s['latency_ms']:.3f} ms at batch 1   throughput {s['throughput']:,.0f} img/s at batch "
            f"{s['inference_batch']}   ({s['precision']}, {s['device']})")


def _show_many(specs, fmt, output, speed, traced: bool) -> None:
    """``scaling flops NAME NAME ...``: one row per network (totals), with --measure its speed and the fits."""
    import pandas as pd

    from ..bases import base_name, count
    from ..complexity import count_traced
    from ..latency import fit_frame

    rows = []
    for spec in specs:
        total = count(spec)
        if traced and base_name(spec) == "efficientnet-b0":
            plain = count_traced(spec)
            if plain != total:
                raise RuntimeError(f"fast count {total} differs from plain fvcore {plain}")
        row = {"network": spec.name or "custom", "base": base_name(spec), "width": spec.width, "depth": spec.depth,
               "resolution": spec.resolution, **total.to_dict()}
        if speed is not None:
            row.update(speed(spec))
        rows.append(row)
    df = pd.DataFrame(rows)
    fits = fit_frame(df) if speed is not None else None

    def show():
        cols = [("network", "left"), ("res", "right"), ("params M", "right"), ("GFLOPs", "right"),
                ("activations M", "right")]
        if speed is not None:
            cols += [("latency ms", "right"), ("img/s", "right")]
        out = []
        for r in df.itertuples():
            row = [r.network, str(r.resolution), _m(r.params), _g(r.flops), f"{r.activations / 1e6:.2f}"]
            if speed is not None:
                row += [f"{r.latency_ms:.3f}", f"{r.throughput:,.0f}"]
            out.append(row)
        caption = "FLOPs: multiply-adds at batch 1; activations: elements the layers write."
        if speed is not None:
            first = df.iloc[0]
            caption += (f" Latency at batch 1, img/s at batch {first['inference_batch']}, {first['precision']} on "
                        f"{first['device']}.")
        console.print(_table(f"{plural(len(df), 'network')}", cols, out, caption=caption))
        if fits is not None:
            console.print(_fits_text(fits))

    _emit(df, fmt, output, show)


def _fits_text(fits) -> str:
    """The two fits of log latency and the choice, for the terminal."""
    if not fits.ok:
        return fits.sentence().capitalize() + "."
    lines = ["log latency fitted across the networks (least squares):"]
    for f, label in ((fits.flops, "FLOPs"), (fits.activations, "activations")):
        lines.append(f"  against log {label}: slope {f.slope:.3f}, RMSE {f.rmse:.3f} (log) = {f.pct:.1f}%")
    return "\n".join(lines) + "\n" + fits.sentence()[0].upper() + fits.sentence()[1:] + "."


def _show_flops(spec, total, df, by, fmt, output, note: str = "", speed=None) -> None:
    """``scaling flops``'s output: the totals, and the rows per stage or layer; ``speed``: with
    --measure, the function measuring it (its fields go into every row of the CSV/JSON)."""
    measured = speed(spec) if speed is not None else None
    if measured is not None:
        df = df.assign(**measured)

    def show():
        label = spec.name or "custom"
        head = (f"{label}: width {spec.width:g}, depth {spec.depth:g}, {spec.resolution}x{spec.resolution}, "
                f"{spec.num_classes} classes")
        console.print(head)
        console.print(f"FLOPs {total.flops:,} ({_g(total.flops)} G multiply-adds)   params {total.params:,} "
                      f"({_m(total.params)} M)   activations {total.activations:,}" + note)
        if measured is not None:
            console.print(_speed_text(measured))
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
    onnx: Annotated[Path, typer.Option("--onnx", help="Where to write the ONNX file.")],
    name: Annotated[Optional[str], typer.Argument(help="efficientnet-b0 .. b8, efficientnet-l2 (none with --base).")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="Local weights file (ours, EfficientNet-PyTorch, torchvision, timm).")] = None,
    resolution: Annotated[Optional[int], typer.Option(min=32, max=8192, help="Input size (default: the network's).")] = None,
    num_classes: Annotated[int, typer.Option(min=1, help="Classifier outputs.")] = 1000,
    base_name: BaseOpt = None,
    width: Annotated[Optional[float], typer.Option(min=0.01, help="With --base: its width multiplier (default 1).")] = None,
    depth: Annotated[Optional[float], typer.Option(min=0.01, help="With --base: its depth multiplier (default 1).")] = None,
):
    """Export a network to ONNX (static "same" padding, dynamic batch).

    With --base other than efficientnet-b0: that base at --width and --depth, or the network
    a weights file of ours (from `scaling train --base ...`) holds.

    Example: scaling export efficientnet-b0 --onnx b0.onnx   |   scaling export --base resnet50 --onnx r50.onnx
    """
    from ..bases import DEFAULT
    from ..export import check_onnx, export_onnx
    from ..model import EfficientNet
    from ..spec import canonical_name

    base = _base(base_name)
    if base.name != DEFAULT:
        if name is not None:
            raise InputError(f"NAME names an EfficientNet; with --base {base.name} leave it out")
        _export_base(base, onnx, weights, resolution, num_classes, width, depth)
        return
    if name is None:
        raise typer.BadParameter("give a network name (e.g. efficientnet-b0), or --base", param_hint="NAME")
    try:
        canonical_name(name)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="NAME")
    _check_output_path(onnx, "--onnx")
    try:
        check_onnx()  # before any work: a plain `pip install .` has no exporter
    except ImportError as e:
        raise InputError(str(e))
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


def _export_base(base, onnx: Path, weights: Optional[Path], resolution, num_classes: int, width, depth) -> None:
    """``scaling export --base ...``: the base's network (or the one our weights file holds) to ONNX."""
    from ..bases import BaseError, build, spec_from_dict
    from ..checkpoint import read_weights
    from ..export import check_onnx, export_onnx

    _check_output_path(onnx, "--onnx")
    try:
        check_onnx()
    except ImportError as e:
        raise InputError(str(e))
    try:
        if weights is not None:
            if not weights.is_file():
                raise typer.BadParameter(f"no such file: {weights}", param_hint="--weights")
            ours = read_weights(weights)
            if ours is None:
                raise InputError(f"--weights {weights}: not a weights file of ours (with --base, the file "
                                 "`scaling train --base ...` writes)")
            spec = spec_from_dict(dict(ours.spec))
            model = build(spec)
            model.load_state_dict(ours.state_dict)
        else:
            spec = _base_spec(base.name, width or 1.0, depth or 1.0, resolution or 224).replace(num_classes=num_classes)
            model = build(spec)
        export_onnx(model, onnx, resolution, spec=spec)
    except (BaseError, ImportError) as e:
        raise InputError(str(e))
    size = resolution or spec.resolution
    console.print(f"wrote {onnx} ({onnx.stat().st_size / 1e6:.1f} MB): input images [N, {spec.in_channels}, "
                  f"{size}, {size}] float32, output logits [N, {spec.num_classes}]")


@app.command()
def sweep(
    dimension: Annotated[str, typer.Option(help="width, depth or resolution.")],
    values: Annotated[Optional[str], typer.Option(help="Multipliers such as 1.1,1.2,1.4.")] = None,
    match: Annotated[Optional[str], typer.Option(help="'family': one network per family member, nearest in FLOPs.")] = None,
    alpha: Annotated[float, typer.Option(help="The family's alpha (with --match family).")] = 1.2,
    beta: Annotated[float, typer.Option(help="The family's beta.")] = 1.1,
    gamma: Annotated[float, typer.Option(help="The family's gamma.")] = 1.15,
    phi: Annotated[str, typer.Option("--phi", help="The family's phi range, such as 1-7.")] = "1-7",
    base_resolution: BaseRes = 224,
    base_width: BaseWidth = 1.0,
    base_depth: BaseDepth = 1.0,
    base_name: BaseOpt = None,
    multiple: Multiple = 8,
    fmt: Fmt = Format.table,
    output: Out = None,
    train: Annotated[bool, typer.Option("--train", help="Train every network with the study's data and recipe.")] = False,
    study_file: T.StudyFile = None,
    name: T.Name = None,
    data: T.Data = None,
    storage: T.Storage = None,
    gpus: T.Gpus = None,
    per_gpu: T.PerGpu = None,
    workers: T.Workers = 1,
    seeds: T.Seeds = 1,
    epochs: T.Epochs = None,
    batch_size: T.BatchSize = None,
    studies_dir: T.StudiesDir = Path("studies"),
    quiet: T.Quiet = False,
    report: T.Report = True,
):
    """B0 (or --base) scaled along one dimension only, for comparison with compound scaling at equal FLOPs.

    With --train, the networks are trained on the study's base network (as the family is),
    beside the search, with the same data and recipe.

    Example: scaling sweep --dimension width --match family --alpha 1.2 --beta 1.1 --gamma 1.15 --train
    """
    import pandas as pd

    from ..bases import BaseError
    from ..compound import DIMENSIONS

    if dimension not in DIMENSIONS:
        raise typer.BadParameter(f"must be one of {', '.join(DIMENSIONS)}, got {dimension!r}", param_hint="--dimension")
    if (values is None) == (match is None):
        raise InputError("give either --values or --match family")
    if match is not None and match != "family":
        raise typer.BadParameter(f"only 'family' is known, got {match!r}", param_hint="--match")
    vals = _multipliers(values) if values is not None else None
    _check_output(output)
    if train and base_name is not None:
        raise InputError("--base with --train: the sweep is trained on the study's base (--study, --name)")
    if train:
        from ..plans import sweep_plan

        family = None if values is not None else _family_plan(alpha, beta, gamma, phi)

        def plans(config, base):
            try:
                return [sweep_plan(dimension, base, config.multiple, values=vals, match=family)]
            except ValueError as e:  # a member's FLOPs that no multiplier reaches
                raise InputError(str(e))

        code = T.train_plans(plans, study_file=study_file, name=name, data=data, storage=storage, gpus=gpus,
                             workers=workers, seeds=seeds, epochs=epochs, batch_size=batch_size,
                             studies_dir=studies_dir, quiet=quiet, report=report, fmt=fmt, output=output,
                             per_gpu=per_gpu)
        raise typer.Exit(code)
    base = _base_spec(base_name, base_width, base_depth, base_resolution)
    try:
        df = _sweep_rows(base, dimension, vals, alpha, beta, gamma, phi, multiple)
    except BaseError as e:
        raise InputError(f"--base: {e}")

    def show():
        cols = [(dimension, "right"), ("res", "right"), ("repeats", "left"), ("stem/head", "left"),
                ("params M", "right"), ("GFLOPs", "right"), (_times_base(base).replace("×", "FLOPs x"), "right")]
        if match:
            cols += [("family phi", "right"), ("its GFLOPs", "right")]
        out = []
        for r in df.itertuples():
            row = [f"x{r.multiplier:.3f}", str(r.resolution), r.repeats, _ends(r.channels),
                   _m(r.params), _g(r.flops), f"{r.flops_ratio:.2f}"]
            if match:
                row += [f"{r.matched_phi:g}", _g(r.target_flops)]
            out.append(row)
        from ..bases import DEFAULT, base_name

        label = "B0" if base_name(base) == DEFAULT else base_name(base)
        console.print(_table(f"{label} scaled by {dimension} alone" + (" at the family's FLOPs" if match else ""),
                             cols, out))

    _emit(df, fmt, output, show)


def _sweep_rows(base, dimension: str, vals, alpha, beta, gamma, phi, multiple: int):
    """The rows of ``scaling sweep``: each multiplier's network and its complexity."""
    import pandas as pd

    from ..bases import structure
    from ..complexity import count
    from ..compound import family as make_family, match_flops, scale_one

    base_flops = count(base).flops
    rows = []
    if vals is not None:
        pairs = [(v, scale_one(base, dimension, v, multiple), None) for v in vals]
    else:
        triple, phis = _triple_and_phis(alpha, beta, gamma, phi)
        members = make_family(triple, phis, base, multiple)
        pairs = []
        for m in members:
            target = count(m.spec).flops
            try:
                v, s = match_flops(base, dimension, target, multiple)
            except ValueError as e:
                raise InputError(str(e))
            pairs.append((v, s, (m.phi, target)))
    for v, s, member in pairs:
        c = count(s)
        shape = structure(s)
        rows.append({"dimension": dimension, "multiplier": round(v, 4), "resolution": s.resolution,
                     "repeats": shape.repeats_text if shape else "", "channels": shape.widths_text if shape else "",
                     "params": c.params, "flops": c.flops,
                     "flops_ratio": round(c.flops / base_flops, 4),
                     "matched_phi": member[0] if member else None,
                     "target_flops": member[1] if member else None})
    return pd.DataFrame(rows)


def _multipliers(values: str) -> list[float]:
    try:
        vals = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"needs numbers such as 1.1,1.2; got {values!r}", param_hint="--values")
    if not vals or any(not 1 <= v <= 64 for v in vals):
        raise typer.BadParameter(f"needs multipliers in 1..64, got {values!r}", param_hint="--values")
    return vals


def _family_plan(alpha: float, beta: float, gamma: float, phi: str):
    """The family a sweep matches (``--match family``), its options checked."""
    from ..plans import family_plans

    triple, phis = _triple_and_phis(alpha, beta, gamma, phi)
    return family_plans(phis, triple.alpha, triple.beta, triple.gamma)[0]
