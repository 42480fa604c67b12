"""Commands of the search: search, worker, results."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import (BaseOpt, Format, InputError, _check_output, _emit, _f, _m, _table, app, console, err, plural)
from ..units import flops_unit
from .training import Device, _device, _load_data
from ..pool import INTERRUPTED


# ---------------------------------------------------------------------------- search

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


def _summarize(study, config, folder: Path, url: str) -> None:
    import pandas as pd

    from ..faults import told
    from ..agreement import member_top1, seed_agreement
    from ..results import failures_frame, paper_rank, results_frame, running, write_csv
    from ..records import study_records
    from ..search import queue_param
    from ..study import StudyError

    from ..repair import write_snapshot

    try:
        with told(url, config.name):
            df = results_frame(study)
            write_csv(df, folder / "results.csv")
            write_snapshot(url, config.name, folder)  # what `scaling study repair` rebuilds from
    except StudyError as e:  # a full or read-only studies folder
        raise InputError(str(e))
    fails = failures_frame(study)
    n_run = running(study)
    if df.empty:
        console.print(f"study {config.name}: no completed trial yet" + (f" ({n_run} running)" if n_run else ""))
    else:
        unit, scale = flops_unit(df["flops"])

        def opt(v, fmt: str) -> str:
            return "" if v is None or pd.isna(v) else format(v, fmt)

        rows = [[str(r.rank), f"{r.alpha:g}", f"{r.beta:g}", f"{r.gamma:g}", str(r.resolution), _m(r.params),
                 _f(r.flops, scale), opt(r.flops_ratio, ".3f"), f"{100 * r.top1:.2f}",
                 "" if r.seeds < 2 else f"{100 * r.top1_std:.2f}", str(r.seeds),
                 opt(None if pd.isna(r.top1_residual) else 100 * r.top1_residual, "+.2f"), opt(r.rank_matched, "d")]
                for r in df.head(15).itertuples()]
        cols = [("rank", "right"), ("α", "right"), ("β", "right"), ("γ", "right"), ("res", "right"),
                ("params M", "right"), (unit, "right"), ("× base", "right"), ("top-1 %", "right"),
                ("std", "right"), ("seeds", "right"), ("vs fit", "right"), ("rank@F", "right")]
        console.print(_table(f"Study {config.name}: {plural(len(df), 'network')} trained"
                             + (f", {n_run} running" if n_run else ""), cols, rows,
                             caption=("rank: by top-1. × base: realized FLOPs over the base's. vs fit: top-1 minus "
                                      "the grid's line of top-1 against log FLOPs, in points; rank@F: by it, the "
                                      "ranking at matched FLOPs.")))
        best = df.iloc[0]
        console.print(f"best by top-1: (alpha, beta, gamma) = ({best.alpha:g}, {best.beta:g}, {best.gamma:g}), top-1 "
                      f"{100 * best.top1:.2f}% at {_f(best.flops, scale)} {unit}")
        matched = df[df["rank_matched"] == 1]
        if len(matched):
            m = matched.iloc[0]
            ties = int((df["top1_residual"] - m.top1_residual).abs().lt(1e-9).sum())
            console.print(f"best at matched FLOPs: ({m.alpha:g}, {m.beta:g}, {m.gamma:g}), "
                          f"{100 * m.top1_residual:+.2f} points over the grid's line of top-1 against log FLOPs"
                          + (f" ({ties} networks tie)" if ties > 1 else ""))
        rank = paper_rank(df, study_records(study))
        console.print("the paper's (1.2, 1.1, 1.15): " + (f"rank {rank} of {len(df)}" if rank else "not trained"))
        seeds = seed_agreement(member_top1(study, queue_param(study, config)))
        if seeds is not None:
            console.print(seeds.text("seed 0 against seed 1"), markup=False)
    done, again = fails["recovered"].astype(bool), fails["queued"].astype(bool)
    lost, recovered, queued = fails[~done & ~again], fails[done], fails[again]
    if len(queued):
        console.print(f"{plural(len(queued), 'trial')} stopped and queued again (the next run trains them):")
        for r in queued.itertuples():
            console.print(f"  trial {r.trial} {r.triples}: {r.reason}", markup=False)
    if len(lost):
        console.print(f"{plural(len(lost), 'failed trial')}:")
        for r in lost.itertuples():
            console.print(f"  trial {r.trial} {r.triples}: {r.reason}", markup=False)
    if len(recovered):
        console.print(f"{plural(len(recovered), 'trial')} recovered (trained again and completed):")
        for r in recovered.itertuples():
            console.print(f"  trial {r.trial} {r.triples}: {r.reason}", markup=False)
    console.print(f"results: {folder / 'results.csv'}")


@app.command()
def search(
    study_file: Annotated[Optional[Path], typer.Option("--study", help="A study TOML file (studies/*.toml).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Study name (folder under --studies-dir).")] = None,
    data: Annotated[Optional[str], typer.Option(help="'default' or an ImageFolder folder / archive.")] = None,
    phi: Annotated[Optional[float], typer.Option("--phi", min=0, max=10, help="Compound coefficient, 0..10.")] = None,
    base_resolution: Annotated[Optional[int], typer.Option(min=8, max=4096, help="B0's image size.")] = None,
    base_width: Annotated[Optional[float], typer.Option(min=0.01, max=64, help="Base network: --base's width times this.")] = None,
    base_depth: Annotated[Optional[float], typer.Option(min=0.01, max=64, help="Base network: --base's depth times this.")] = None,
    base_name: BaseOpt = None,
    objective: Annotated[Optional[str], typer.Option(
        help="A trial's value: accuracy (top-1, the default), accuracy-flops or accuracy-latency: "
             "top-1 x (X / T)^w, X the network's FLOPs or its latency on this device (ms, batch 1).")] = None,
    objective_target: Annotated[Optional[float], typer.Option(
        "--target", "--objective-target", min=1e-12,
        help="T of --objective: FLOPs (default: the base network's), or a latency in ms (needed).")] = None,
    objective_exponent: Annotated[Optional[float], typer.Option(
        "--exponent", min=-1, max=1, help="w of --objective (default -0.07, the paper's).")] = None,
    sampler: Annotated[Optional[str], typer.Option(help="grid (each network once), tpe or random.")] = None,
    trials: Annotated[Optional[int], typer.Option(min=1, help="Networks (grid) or trials (tpe, random).")] = None,
    seeds: Annotated[Optional[int], typer.Option(min=1, help="Train each network with this many seeds.")] = None,
    prune: Annotated[Optional[bool], typer.Option(help="Stop trials below the median early.")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Epochs per trial.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Batch size per trial.")] = None,
    storage: Annotated[Optional[str], typer.Option(help="Database URL shared by workers (default: SQLite in the study folder).")] = None,
    gpus: Annotated[Optional[str], typer.Option(help="all, none, or indices such as 0,2: one worker per GPU.")] = None,
    per_gpu: Annotated[Optional[str], typer.Option("--per-gpu", help="Workers on each GPU: 1..16 (under MPS where the "
                                                                     "machine has it) or auto.")] = None,
    workers: Annotated[int, typer.Option(min=1, max=256, help="Worker processes on the CPU (without GPUs).")] = 1,
    studies_dir: Annotated[Path, typer.Option(help="Where study folders live.")] = Path("studies"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    report: Annotated[bool, typer.Option(help="Write or refresh reports/NAME/ at the end.")] = True,
    only: Annotated[Optional[str], typer.Option(
        help="Train only these networks of the grid, comma-separated: topN and bottomN (of --ranked-by's ranking), "
             "paper, alpha:beta:gamma; each gets --seeds seeds (those it lacks), also in an existing study.")] = None,
    ranked_by: Annotated[Optional[str], typer.Option(
        help="The study whose ranking --only's topN and bottomN read (default: this study).")] = None,
):
    """Train each candidate network briefly (an Optuna study) and rank them by held-out top-1
    (or by --objective: top-1 x (FLOPs / T)^w or x (latency / T)^w, so that a search prefers
    networks that are cheap or fast on this device).

    Example: scaling search --phi 1   |   scaling search --study studies/proxy.toml --data cifar10-jpeg.tar.gz --gpus all
    |   scaling search --name cifar10 --only top8,paper --seeds 2
    """
    from ..search import create_study, largest_resolution, select_networks
    from ..selection import SelectionError, parse_selection
    from ..storage import storage_url
    from ..study import StudyConfig, StudyError

    selection = None
    if only is not None:
        try:
            selection = parse_selection(only, ranked_by)
        except SelectionError as e:
            raise typer.BadParameter(str(e), param_hint="--only")
    elif ranked_by is not None:
        raise typer.BadParameter("ranks the networks that --only chooses: give --only too", param_hint="--ranked-by")
    config, gpu_ids, folder, url = prepare_study(
        study_file, studies_dir, storage, gpus, epochs=epochs, batch_size=batch_size, name=name, source=data,
        phi=phi, base_resolution=base_resolution, base_width=base_width, base_depth=base_depth, base=base_name,
        objective=objective, objective_target=objective_target, objective_exponent=objective_exponent, sampler=sampler,
        trials=trials, seeds=None if selection else seeds, prune=prune, per_gpu=parse_per_gpu(per_gpu))
    # The workers' Triton kernels compile (on a fresh machine, about 7 s) and the workers start (CUDA, the
    # compiler's front end: about 9 s) while the data and the study are made.
    from ..pool import launched

    with _compiling(gpu_ids) as compiling, launched(config, url, gpu_ids, err) as launch:
        data, _ = _load_data(config.source, config.base_resolution, quiet, train_size=config.train_size,
                             val_size=config.val_size, max_resolution=largest_resolution(config))
        selected = None
        if selection is not None:  # a grid's chosen networks, more seeds for them: the definition stays as it is
            ranked = selection.ranked_by or config.name
            try:
                selected = select_networks(config, selection, seeds or config.seeds,
                                           storage_url(StudyConfig(name=ranked), studies_dir / ranked, storage),
                                           num_classes=data.num_classes)
            except StudyError as e:
                raise InputError(str(e))
            err.print(f"--only {selected.asked}: {plural(len(selected.keys), 'network')} x "
                      f"{plural(selected.seeds, 'seed')} (those not trained yet)", soft_wrap=True)
        if not gpu_ids:
            from ..budget import cpu_estimate, search_specs

            specs = [s.replace(num_classes=data.num_classes) for s in search_specs(config, selected)]
            err.print(cpu_estimate(specs, len(data.train), len(data.val), config.training_recipe().epochs,
                                   selected.seeds if selected else config.seeds), soft_wrap=True)
        try:
            from ..checkpoint import data_identity

            study = create_study(config, url, num_classes=data.num_classes,  # candidates counted as trained
                                 identity=data_identity(data), selected=selected)
            code = execute(config, url, study, gpu_ids, workers, quiet, compiling=compiling, launch=launch)
        except StudyError as e:  # a full disk, a read-only or damaged storage, an infeasible space
            raise InputError(str(e))
    if code in INTERRUPTED:  # said in one line; the ranking so far is kept in results.csv
        from ..results import results_frame, write_csv

        write_csv(results_frame(study), folder / "results.csv")
        raise typer.Exit(code)
    _summarize(study, config, folder, url)
    if report:
        refresh_report(config.name, studies_dir, storage)
    if code:
        raise typer.Exit(code)


def prepare_study(study_file, studies_dir: Path, storage, gpus, *, epochs=None, batch_size=None, must_exist=False,
                  **explicit):
    """The study's resolved definition (:func:`scaling.runs.define`: a reduced budget on a CPU for
    the embedded default, its note said on stderr), checked against what studies/NAME/ holds; its
    GPUs, folder and storage URL.

    ``--name`` without ``--study`` reopens study NAME as it was defined (by options or by a
    TOML file); options given beside it must agree with that definition. With ``must_exist``
    (family and sweep training) a NAME that does not exist is refused, listing those that do.
    """
    import torch

    from ..runs import SourceMissing, define
    from ..study import StudyError

    # Counted by NVML, not by CUDA (torch.cuda.is_available starts CUDA's driver): a process that
    # has not started CUDA can fork its workers (scaling.forked).
    gpu_ids = _gpus(gpus) if gpus is not None else list(range(torch.cuda.device_count()))
    try:
        d = define(study_file, studies_dir=studies_dir, storage=storage, gpus=len(gpu_ids), must_exist=must_exist,
                   epochs=epochs, batch_size=batch_size, **explicit)
    except SourceMissing as e:
        raise typer.BadParameter(f"no such file or folder: {e.source}", param_hint="--data")
    except StudyError as e:
        raise InputError(str(e))
    if d.note:
        err.print(d.note, soft_wrap=True)
    return d.config, gpu_ids, d.folder, d.url


def parse_per_gpu(text: Optional[str]) -> int | str | None:
    """``--per-gpu``: a whole number in 1..16 or auto (None: the study's, else 1)."""
    from ..study import PER_GPU_MAX

    if text is None or text == "auto":
        return text
    if not text.isdigit() or not 1 <= int(text) <= PER_GPU_MAX:
        raise typer.BadParameter(f"needs a whole number in 1..{PER_GPU_MAX} or auto; got {text!r}", param_hint="--per-gpu")
    return int(text)


def execute(config, url: str, study, gpu_ids: list[int], workers: int, quiet: bool, compiling=None,
            launch=None) -> int:
    """The study's worker pool (:func:`scaling.pool.run_pool`), saying what it does on stderr."""
    from ..pool import run_pool

    return run_pool(config, url, study, gpu_ids, workers, quiet, console=err, compiling=compiling, launch=launch)


@contextmanager
def _compiling(gpu_ids: list[int]):
    """The Triton kernels' compilation started where the search uses GPUs
    (:func:`scaling.depthwise.start_compiling`), or None; whatever is still compiling when
    the block ends (a bad input, an interruption) is stopped. A bad ``SCALING_DEPTHWISE``
    is left to the pool to say."""
    compiling = None
    if gpu_ids:
        from ..depthwise import start_compiling

        try:
            compiling = start_compiling()
        except ValueError:
            compiling = None
    try:
        yield compiling
    finally:
        if compiling is not None:
            compiling.cancel()


def refresh_report(name: str, studies_dir: Path, storage) -> None:
    """Write or refresh reports/NAME/ after a search or a trained family; a report that
    cannot be written is said, never fatal to the run that produced the results."""
    try:
        from ..report import write_report
    except ImportError:
        return
    try:
        html, pdf = write_report(name, studies_dir, Path("reports"), storage=storage)
        console.print(f"report: {html}  {pdf}")
    except Exception as e:  # noqa: BLE001 - the results are safe in the study; say why the report is not
        err.print(f"the report was not written ({type(e).__name__}: {e}); `scaling report {name}` retries",
                  markup=False)


@app.command()
def worker(
    name: Annotated[str, typer.Argument(help="The study's name.")],
    storage: Annotated[str, typer.Option(help="The study's database URL (see `scaling search --storage`).")],
    device: Device = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    wait: Annotated[bool, typer.Option("--wait", hidden=True,
                                       help="Start CUDA, then wait for the line 'go' on standard input (the "
                                            "search's own workers, started while it makes the study).")] = False,
):
    """Join a study as one more worker (on this or another machine) and train its queued networks.

    Example: scaling worker cifar10 --storage postgresql://user@host/scaling --device cuda:0
    """

    from ..signals import install_signal_handlers
    from ..storage import load_study
    from ..study import StudyConfig, StudyError
    from ..worker import run_worker, wait_for_go

    dev = _device(device)
    waited = 0.0
    if wait:
        try:
            waited = wait_for_go(dev)
        except KeyboardInterrupt:  # Ctrl+C reaches the whole process group; the search says it
            raise typer.Exit(130)
        if waited is None:  # the search ended before its study was made
            raise typer.Exit(0)
    try:
        study = load_study(StudyConfig(name=name), storage)  # a bad URL: StudyError, one line
        definition = study.user_attrs.get("definition")
        if definition is None:
            raise StudyError(f"study {name!r} has no definition; start it with `scaling search`")
        config = StudyConfig.from_json(definition)
    except StudyError as e:
        raise InputError(str(e))
    install_signal_handlers()
    try:
        run_worker(config, storage, device=dev, quiet=quiet, waited_s=waited)
    except KeyboardInterrupt as e:
        raise typer.Exit(getattr(e, "exit_code", 130))
    except StudyError as e:  # a full disk, a read-only or damaged storage
        raise InputError(str(e))


def require_study(name: str, studies_dir: Path, storage) -> None:
    """Refuse (one line, listing the studies that exist) a study NAME that does not exist."""
    from ..storage import open_storage
    from ..study import StudyConfig, StudyError

    try:
        StudyConfig(name=name)  # a plain folder name
        if storage is None:
            exists = (studies_dir / name / "optuna.db").is_file()
        else:
            import optuna

            exists = name in optuna.get_all_study_names(storage=open_storage(storage))
        if not exists:
            from ..runs import study_missing

            raise study_missing(name, studies_dir, storage)
    except StudyError as e:
        raise InputError(str(e))


@app.command()
def results(
    name: Annotated[str, typer.Argument(help="The study's name.")],
    storage: Annotated[Optional[str], typer.Option(help="Database URL (default: SQLite in the study folder).")] = None,
    studies_dir: Annotated[Path, typer.Option(help="Where study folders live.")] = Path("studies"),
    fmt: Annotated[Format, typer.Option("--format", help="table, csv or json.")] = Format.table,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Also write the rows to this file (CSV or JSON).")] = None,
    against: Annotated[Optional[str], typer.Option(
        help="Another grid study of the same networks (another proxy): the rank correlation of the two.")] = None,
):
    """Print a study's ranking and write studies/NAME/results.csv.

    Example: scaling results default-cpu   |   scaling results default-cpu --format json -o ranking.json
    |   scaling results cifar10-proxy --against cifar10
    """
    from ..results import results_frame, write_csv
    from ..storage import load_study, storage_url
    from ..study import StudyConfig, StudyError

    _check_output(output)
    require_study(name, studies_dir, storage)
    folder = studies_dir / name
    try:
        config = StudyConfig(name=name)
        url = storage_url(config, folder, storage)
        study = load_study(config, url)
    except StudyError as e:
        raise InputError(str(e))
    if against is not None:
        require_study(against, studies_dir, storage)

    def show() -> None:
        _summarize(study, config, folder, url)
        _show_laws(url, name)
        if against is not None:
            _show_against(name, against, studies_dir, storage)

    if fmt == Format.table and output is None:
        show()
        return
    df = results_frame(study)
    write_csv(df, folder / "results.csv")
    _emit(df, fmt, output, show)


def _show_against(name: str, other: str, studies_dir: Path, storage) -> None:
    """One line: how study ``name`` and study ``other`` rank the networks both trained."""
    from ..agreement import grid_agreement, member_top1
    from ..runs import saved_definition
    from ..search import queue_param, study_members
    from ..storage import load_study, storage_url
    from ..study import StudyError

    tables, members = [], []
    try:
        for n in (name, other):
            config = saved_definition(n, studies_dir, storage)
            if config is None or config.sampler != "grid" or config.plan is not None:
                raise InputError(f"--against compares two grid studies; {n!r} is not one")
            study = load_study(config, storage_url(config, studies_dir / n, storage))
            tables.append(member_top1(study, queue_param(study, config)))
            members.append(study_members(config, study.user_attrs.get("num_classes")))
    except StudyError as e:
        raise InputError(str(e))
    found = grid_agreement(tables[0], members[0], tables[1], members[1])
    what = f"{name} against {other}"
    console.print(found.text(what) if found is not None else
                  f"{what}: fewer than 3 networks trained by both, no rank correlation", markup=False)


def _show_laws(url: str, name: str) -> None:
    """One line per trained series: its law, or "no law fits" / "not fitted" and why; a law's
    held-out check on the next line."""
    from ..laws import check_series
    from ..report.sections import holdout_text
    from ..results import plan_studies, series_frame

    df = series_frame(plan_studies(url, name))
    if df.empty:
        return
    for series, checked in check_series(df, bootstrap=0).items():
        fit = checked.fit
        extra = ""
        if fit.law is not None:
            extra = (f" (a={fit.law.a:.3g}, b={fit.law.b:.3g}, c={fit.law.c:.3g}, {fit.law.n} points, "
                     f"RMSE {100 * fit.law.rmse:.2f} pp)")
        console.print(f"law of {series}: {fit.text()}" + (extra if fit.ok else ""), markup=False)
        if checked.check is not None:
            console.print(f"  held out {holdout_text(checked.check)}", markup=False)
