"""Commands of the search: search, worker, results."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import (InputError, _f, _flops_unit, _m, _table, app, console, err)
from .training import Device, _device, _load_data


# ---------------------------------------------------------------------------- search

# On a machine without a GPU, the default study shrinks to this and says so.
CPU_BUDGET = dict(base_resolution=32, base_width=0.25, base_depth=0.25, train_size=2000, val_size=500, trials=12,
                  recipe={"name": "proxy", "epochs": 4, "batch_size": 64, "lr": 0.4})




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
    from ..faults import told
    from ..results import failures_frame, paper_rank, results_frame, running, write_csv
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
        unit, scale = _flops_unit(df["flops"])
        rows = [[str(r.rank), f"{r.alpha:g}", f"{r.beta:g}", f"{r.gamma:g}", str(r.resolution), r.repeats,
                 _m(r.params), _f(r.flops, scale), f"{100 * r.top1:.2f}",
                 "" if r.seeds < 2 else f"{100 * r.top1_std:.2f}", str(r.seeds)] for r in df.head(15).itertuples()]
        cols = [("rank", "right"), ("alpha", "right"), ("beta", "right"), ("gamma", "right"), ("res", "right"),
                ("repeats", "left"), ("params M", "right"), (unit, "right"), ("top-1 %", "right"),
                ("std", "right"), ("seeds", "right")]
        console.print(_table(f"Study {config.name}: {len(df)} networks trained"
                             + (f", {n_run} running" if n_run else ""), cols, rows))
        best = df.iloc[0]
        console.print(f"best: (alpha, beta, gamma) = ({best.alpha:g}, {best.beta:g}, {best.gamma:g}), top-1 "
                      f"{100 * best.top1:.2f}% at {_f(best.flops, scale)} {unit}")
        rank = paper_rank(df)
        console.print("the paper's (1.2, 1.1, 1.15): " + (f"rank {rank} of {len(df)}" if rank else "not trained"))
    lost, recovered = fails[~fails["recovered"].astype(bool)], fails[fails["recovered"].astype(bool)]
    if len(lost):
        console.print(f"{len(lost)} failed trial(s):")
        for r in lost.itertuples():
            console.print(f"  trial {r.trial} {r.triples}: {r.reason}", markup=False)
    if len(recovered):
        console.print(f"{len(recovered)} trial(s) recovered (trained again and completed):")
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
    report: Annotated[bool, typer.Option(help="Write or refresh reports/NAME/ at the end.")] = True,
):
    """Train each candidate network briefly (an Optuna study) and rank them by held-out top-1.

    Example: scaling search --phi 1   |   scaling search --study studies/cifar10.toml --gpus all
    """
    from ..search import create_study
    from ..study import StudyError

    config, gpu_ids, folder, url = prepare_study(
        study_file, studies_dir, storage, gpus, epochs=epochs, batch_size=batch_size, name=name, source=data,
        phi=phi, base_resolution=base_resolution, sampler=sampler, trials=trials, seeds=seeds, prune=prune)
    _load_data(config.source, config.base_resolution, quiet, train_size=config.train_size, val_size=config.val_size)
    try:
        study = create_study(config, url)
        code = execute(config, url, study, gpu_ids, workers, quiet)
    except StudyError as e:  # the machine's fault: a full disk, a read-only or damaged storage
        raise InputError(str(e))
    _summarize(study, config, folder, url)
    if report:
        refresh_report(config.name, studies_dir, storage)
    if code:
        raise typer.Exit(code)


def prepare_study(study_file, studies_dir: Path, storage, gpus, *, epochs=None, batch_size=None, **explicit):
    """The study's resolved definition (a reduced budget on a CPU for the embedded default,
    said on stderr), checked against what studies/NAME/ holds; its GPUs, folder and storage URL."""
    import torch

    from ..faults import told
    from ..search import open_storage, storage_url, study_candidates
    from ..study import StudyError, check_or_save, resolve

    gpu_ids = _gpus(gpus) if gpus is not None else (list(range(torch.cuda.device_count())) if torch.cuda.is_available() else [])
    try:
        config = resolve(study_file, **explicit)
        budget_note = ""
        if not gpu_ids and study_file is None and config.source == "default":
            reduced = {k: v for k, v in CPU_BUDGET.items() if explicit.get(k) is None}
            config = config.replace(**reduced, name=explicit.get("name") or "default-cpu")
            budget_note = ("no GPU: a reduced budget - 12 of the grid's networks (spread over it), each 4 epochs on "
                           "2,000 images of the embedded data, from a base of B0 at width 0.25, depth 0.25, 32 px. "
                           "The full study, on a GPU: scaling search --phi 1 --name default --base-resolution 224")
        elif not gpu_ids:
            budget_note = (f"no GPU: this study trains its networks on the CPU from B0 at {config.base_resolution} px, "
                           "which can take hours; --base-resolution, --trials and --epochs make it smaller")
        if epochs or batch_size:
            config = config.replace(recipe={**config.recipe, **{k: v for k, v in
                                                                (("epochs", epochs), ("batch_size", batch_size)) if v}})
        if config.source != "default" and not Path(config.source).expanduser().exists():
            raise typer.BadParameter(f"no such file or folder: {config.source}", param_hint="--data")
        if storage is not None:
            open_storage(storage)  # refuse a bad URL before anything is created
        if not study_candidates(config):
            raise InputError("the grid has no candidate network; widen its ranges or tolerance")
        folder = studies_dir / config.name
        with told(None, config.name):
            check_or_save(config, folder)
    except StudyError as e:
        raise InputError(str(e))
    if budget_note:
        err.print(budget_note)
    return config, gpu_ids, folder, storage_url(config, folder, storage)


def execute(config, url: str, study, gpu_ids: list[int], workers: int, quiet: bool) -> int:
    """Run the study's workers here (one per GPU, or N on the CPU, or this process) until
    its queue is empty; the exit code: 0, 1 when a worker failed, 2, 130 or 143."""
    from ..faults import NoSpace, StorageFault
    from ..search import install_signal_handlers
    from ..study import StudyError

    install_signal_handlers()
    try:
        if gpu_ids:
            return _run_workers(config, url, [({"CUDA_VISIBLE_DEVICES": str(i)}, "cuda:0") for i in gpu_ids])
        if workers > 1:  # the cores shared out: more threads than cores makes every worker crawl
            threads = str(max(1, (os.cpu_count() or 1) // workers))
            return _run_workers(config, url, [({"OMP_NUM_THREADS": threads}, "cpu")] * workers)
        _run_local(config, url, study, quiet)
    except KeyboardInterrupt as e:
        err.print("interrupted: the running trial is marked failed and queued again; run the same command to resume")
        return getattr(e, "exit_code", 130)
    except (NoSpace, StorageFault):  # the caller says it in one line, with nothing after it
        raise
    except StudyError as e:  # e.g. a sampler that finds nothing feasible
        err.print(f"error: {e}", markup=False)
        return 2
    return 0


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


def _run_local(config, url, study, quiet) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..search import counts, run_worker

    total = study.user_attrs.get("enqueued") or config.trials or 20

    def done(s) -> int:
        c = counts(s)
        return c["COMPLETE"] + c["FAIL"]

    with Progress(TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  disable=quiet, console=err) as progress:
        task = progress.add_task("", total=total, completed=min(done(study), total))
        run_worker(config, url, quiet=True, on_trial=lambda s: progress.update(task, completed=min(done(s), total)))


def _run_workers(config, url, workers: list[tuple[dict, str]]) -> int:
    """One `scaling worker` process per (environment, device); waits for all, and passes
    Ctrl+C or SIGTERM on to them."""
    import signal
    import subprocess
    import time

    from ..search import check_signals

    procs = []
    for env, device in workers:
        procs.append(subprocess.Popen([sys.executable, "-m", "scaling.cli", "worker", config.name, "--storage", url,
                                       "--device", device, "-q"], env=dict(os.environ, **env)))
    try:
        while any(p.poll() is None for p in procs):
            check_signals()
            time.sleep(0.2)
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait()
        raise
    codes = [p.returncode for p in procs]
    if all(c == 0 for c in codes):
        return 0
    return 2 if 2 in codes else 1  # 2: a worker stopped for a full disk or a storage it cannot use, and said so


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

    from ..search import install_signal_handlers, load_study, run_worker
    from ..study import StudyConfig, StudyError

    dev = _device(device)
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
        run_worker(config, storage, device=dev, quiet=quiet)
    except KeyboardInterrupt as e:
        raise typer.Exit(getattr(e, "exit_code", 130))
    except StudyError as e:  # a full disk, a read-only or damaged storage
        raise InputError(str(e))


@app.command()
def results(
    name: Annotated[str, typer.Argument(help="The study's name.")],
    storage: Annotated[Optional[str], typer.Option(help="Database URL (default: SQLite in the study folder).")] = None,
    studies_dir: Annotated[Path, typer.Option(help="Where study folders live.")] = Path("studies"),
):
    """Print a study's ranking and write studies/NAME/results.csv.

    Example: scaling results default
    """
    from ..search import load_study, storage_url
    from ..study import StudyConfig, StudyError

    folder = studies_dir / name
    if storage is None and not (folder / "optuna.db").exists():
        raise typer.BadParameter(f"no study {name!r} in {studies_dir}", param_hint="NAME")
    try:
        config = StudyConfig(name=name)
        url = storage_url(config, folder, storage)
        study = load_study(config, url)
    except StudyError as e:
        raise InputError(str(e))
    _summarize(study, config, folder, url)
