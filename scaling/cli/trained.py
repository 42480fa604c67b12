"""`family --train` and `sweep --train`: a plan's members trained as an Optuna study beside the search,
with the search's data, recipe, storage, workers and resume."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from .app import Format, InputError, _emit, _f, _m, _table, console, err, plural
from ..units import flops_unit

StudyFile = Annotated[Optional[Path], typer.Option("--study", help="With --train: a study TOML file (studies/*.toml).")]
Name = Annotated[Optional[str], typer.Option(help="With --train: the study (folder under --studies-dir) whose data "
                                                  "and recipe to use.")]
Data = Annotated[Optional[str], typer.Option(help="With --train: 'default' or an ImageFolder folder / archive.")]
Storage = Annotated[Optional[str], typer.Option(help="With --train: database URL shared by workers.")]
Gpus = Annotated[Optional[str], typer.Option(help="With --train: all, none, or indices such as 0,2.")]
Workers = Annotated[int, typer.Option(min=1, max=256, help="With --train: worker processes on the CPU.")]
PerGpu = Annotated[Optional[str], typer.Option("--per-gpu", help="With --train: workers on each GPU (1..16, under MPS "
                                                                  "where the machine has it) or auto.")]
Seeds = Annotated[int, typer.Option(min=1, help="With --train: train each member with this many seeds.")]
Epochs = Annotated[Optional[int], typer.Option(min=1, help="With --train: epochs per member (must match the study's).")]
BatchSize = Annotated[Optional[int], typer.Option(min=1, help="With --train: batch size (must match the study's).")]
StudiesDir = Annotated[Path, typer.Option(help="Where study folders live.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Report = Annotated[bool, typer.Option(help="With --train: write or refresh reports/NAME/ at the end.")]


def train_plans(make_plans: Callable, *, study_file, name, data, storage, gpus, workers, seeds, epochs, batch_size,
                studies_dir: Path, quiet: bool, report: bool = True, fmt: Format = Format.table,
                output: Optional[Path] = None, per_gpu: Optional[str] = None) -> int:
    """Train the plans ``make_plans(config, base_spec)`` returns, one study each
    (:func:`scaling.runs.train_plans`, as :func:`scaling.api.run_family` and ``run_sweep`` do), and
    print their members with accuracy and speed (``fmt``, also written to ``output``); the exit
    code of the workers."""
    from ..runs import train_plans as train
    from ..search import base_spec
    from ..study import StudyError
    from .searching import parse_per_gpu, prepare_study, refresh_report
    from .training import _load_data

    config, gpu_ids, folder, url = prepare_study(study_file, studies_dir, storage, gpus, epochs=epochs,
                                                 batch_size=batch_size, name=name, source=data, must_exist=True,
                                                 per_gpu=parse_per_gpu(per_gpu))
    data, _ = _load_data(config.source, config.base_resolution, quiet, train_size=config.train_size,
                         val_size=config.val_size)
    base = base_spec(config).replace(num_classes=data.num_classes)  # FLOPs as trained
    plans = make_plans(config, base)
    try:
        trained = train(config, plans, data, url, folder, gpu_ids, workers=workers, seeds=seeds, quiet=quiet,
                        console=err)
    except StudyError as e:  # the machine's fault: a full disk, a read-only or damaged storage
        raise InputError(str(e))
    if trained.interrupted:  # said in one line; a re-run trains what is missing
        return trained.code
    df = trained.members
    _emit(df, fmt, output, lambda: show_trained(df))
    for r in trained.failures.itertuples():
        state = "recovered" if r.recovered else "queued again" if r.queued else "failed"
        err.print(f"{state}: {r.study} trial {r.trial} {r.label}: {r.reason}", markup=False)  # stdout keeps the rows
    if report:
        refresh_report(config.name, studies_dir, storage)
    return trained.code


def show_trained(df) -> None:
    import pandas as pd

    def num(v, fmt: str) -> str:
        return "" if v is None or pd.isna(v) else format(v, fmt)

    unit, scale = flops_unit(df["flops"])
    for series, part in df.groupby("series", sort=False):
        rows = [[r.label, str(r.resolution), r.repeats, _m(r.params), _f(r.flops, scale), f"{100 * r.top1:.2f}",
                 num(None if r.seeds < 2 else 100 * r.top1_std, ".2f"), num(r.images_per_second, ",.0f"),
                 num(r.latency_ms, ".2f"), num(r.throughput, ",.0f"), num(r.peak_memory_mb, ",.0f"), r.device or ""]
                for r in part.itertuples()]
        cols = [("member", "left"), ("res", "right"), ("repeats", "left"), ("params M", "right"),
                (unit, "right"), ("top-1 %", "right"), ("std", "right"), ("train img/s", "right"),
                ("latency ms", "right"), ("infer img/s", "right"), ("peak MB", "right"), ("device", "left")]
        batch = part["inference_batch"].dropna()
        console.print(_table(
            f"{series}: {plural(len(part), 'member')} trained", cols, rows,
            caption=(f"latency: one image (batch 1); infer img/s: batch {int(batch.iloc[0]) if len(batch) else '?'}; "
                     "peak MB: GPU memory while training (blank on the CPU).")))
