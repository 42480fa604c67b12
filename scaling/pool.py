"""The study's worker pool on this machine: one worker per GPU, several per GPU under MPS,
N on the CPU, or this process; their progress while they run and one line when they end.

The command line (``scaling search``, ``family --train``, ``sweep --train``) and the Python
API (:mod:`scaling.api`) both run a study through :func:`run_pool`; benchmarks can too.
``scaling search`` sets its GPU workers up first (:func:`launched`), so that their start
(imports, CUDA, the compiler's front end) passes while it loads the data and makes the study.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from .units import plural

INTERRUPTED = (130, 143)  # the exit codes run_pool returns for Ctrl+C and SIGTERM


def per_gpu_of(config) -> int:
    """The study's workers per GPU; ``auto`` from its base network's FLOPs an image (scaling.mps.auto_per_gpu)."""
    if config.per_gpu != "auto":
        return config.per_gpu
    from .complexity import count
    from .mps import auto_per_gpu
    from .search import base_spec

    return auto_per_gpu(count(base_spec(config)).flops)


def visible(index: int, environ: dict | None = None) -> str:
    """``CUDA_VISIBLE_DEVICES`` for a worker on GPU ``index`` of this process's view: the
    entry of the user's own mask where one is set (``2,3``: index 0 is physical GPU 2)."""
    mask = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES", "").strip()
    entries = [e.strip() for e in mask.split(",") if e.strip()] if mask else []
    return entries[index] if index < len(entries) else str(index)


@dataclass
class Launch:
    """The study's GPU workers on this machine, as :func:`launched` set them up.

    Args:
        workers: (environment, device) of each worker process, ``per_gpu`` a GPU.
        per_gpu: workers on each GPU.
        started: their processes where they were started ahead (``scaling worker --wait``:
            CUDA started, waiting for the word to begin); None where they start with the pool.
    """

    workers: list[tuple[dict, str]]
    per_gpu: int
    started: list | None
    daemon: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    def end_daemon(self) -> None:
        """Stop the MPS daemon started for the workers, if one was (once they have ended)."""
        self.daemon.close()


@contextlib.contextmanager
def launched(config, url: str, gpu_ids: list[int], console: Console | None = None, start: bool = True):
    """The study's workers on GPUs ``gpu_ids`` set up now, for :func:`run_pool` to run: their
    MPS daemon started where several share a GPU (:func:`scaling.mps.shared_gpu`) and, with
    ``start``, their processes started ahead of the study, so that Python's and torch's
    imports, CUDA's contexts and the compiler's front end (9 s a worker on an H200 machine)
    pass while the caller loads the data and makes the study. They wait for
    :func:`run_pool`'s word; whatever is still waiting when the block ends (a bad input, an
    interruption) is stopped, and the daemon with it. None without GPUs.

    Example:
        with launched(config, url, [0]) as launch:
            study = make the study
            code = run_pool(config, url, study, [0], launch=launch)
    """
    if not gpu_ids:
        yield None
        return
    err = console if console is not None else Console(stderr=True)
    k = per_gpu_of(config)
    launch = Launch([], k, None)
    try:
        env = {}
        if k > 1:
            from . import mps

            runs = _runs_folder(config, url)
            err.print(f"{plural(k, 'worker')} on each of {plural(len(gpu_ids), 'GPU')}", soft_wrap=True)
            env = launch.daemon.enter_context(
                mps.shared_gpu(runs / "mps", say=lambda line: err.print(line, soft_wrap=True, markup=False)))
        launch.workers = [(dict(env, CUDA_VISIBLE_DEVICES=visible(i)), "cuda:0") for i in gpu_ids for _ in range(k)]
        if start:
            launch.started = []  # filled one by one: a spawn that fails leaves the others to stop
            for e, d in launch.workers:
                launch.started.append(_spawn(config, url, e, d, wait=True))
        yield launch
    finally:
        _stop_waiting(launch.started or [])
        launch.end_daemon()


def _spawn(config, url: str, env: dict, device: str, wait: bool = False):
    """One ``scaling worker`` process of the study; with ``wait``, one that starts CUDA and
    waits for :data:`scaling.worker.GO` on its standard input. Such a one ignores Ctrl+C until
    it begins (its signal handlers then take over): Ctrl+C reaches the whole process group,
    and a worker in its imports would print a traceback; the search stops it instead. It is
    forked from this process where that is safe (:func:`scaling.forked.can_fork`): it starts
    with this process's imports (torch's alone took 3-4 s a process on an H200 machine)."""
    import subprocess

    args = ["worker", config.name, "--storage", url, "--device", device, "-q"]
    if wait:
        from . import forked

        if forked.can_fork():
            return forked.Forked(lambda: _forked_worker(args + ["--wait"], device), env, stdin=True,
                                 name=f"worker of {config.name}")
        return subprocess.Popen([sys.executable, "-m", "scaling.cli", *args, "--wait"], env=dict(os.environ, **env),
                                stdin=subprocess.PIPE, text=True, preexec_fn=_ignore_ctrl_c)
    return subprocess.Popen([sys.executable, "-m", "scaling.cli", *args], env=dict(os.environ, **env))


def _forked_worker(args: list[str], device: str) -> int:
    """A worker forked from the search (:func:`_spawn`): ``scaling worker ARGS`` run here; a
    fresh interpreter instead where CUDA or autograd cannot start in this child
    (:func:`scaling.forked.usable_here`)."""
    from . import forked
    from .cli.app import app

    if not forked.usable_here(device):
        forked.exec_instead(["-m", "scaling.cli", *args])
    return app(args=args)


def _ignore_ctrl_c() -> None:  # in the child, before it runs Python
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _go(procs) -> None:
    """Tell workers started ahead to begin (one that died while starting is left to the pool's count)."""
    from .worker import GO

    for p in procs:
        try:
            p.stdin.write(GO + "\n")
            p.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass


def _stop_waiting(procs) -> None:
    """Stop workers started ahead that were never told to begin, or are still running when the
    block ends: told to leave (their input closed), then SIGTERM, then SIGKILL."""
    import subprocess

    live = [p for p in procs if p.poll() is None]
    for p in live:
        if p.stdin is not None and not p.stdin.closed:
            try:
                p.stdin.close()
            except OSError:
                pass
        p.terminate()  # still starting (its imports, CUDA): nothing of it is worth waiting for
    for p in live:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _runs_folder(config, url: str) -> Path:
    """Where the pool keeps what its run writes (the MPS daemon's log, the speed pass's): the
    study's folder for SQLite, else a temporary folder of the study's name."""
    from .faults import sqlite_file

    db = sqlite_file(url)
    return db.parent if db is not None else Path(tempfile.gettempdir()) / f"scaling-{config.name}"


def run_pool(config, url: str, study, gpu_ids: list[int], workers: int = 1, quiet: bool = True,
             console: Console | None = None, compiling=None, launch: Launch | None = None) -> int:
    """Run the study's workers here (``per_gpu`` on each GPU, or N on the CPU, or this
    process) until its queue is empty; the exit code: 0, 1 when a worker failed, 2, 130 or 143.

    Several workers on one GPU join an MPS daemon (:func:`scaling.mps.shared_gpu`: the
    user's, or one started for the search and stopped when it ends) or, without one, take
    turns on it. What it does, its progress (unless ``quiet``) and its last line go to
    ``console`` (default: stderr). ``compiling``: the Triton kernels' compilation, started
    earlier by the caller (:func:`scaling.depthwise.start_compiling`), to wait for before the
    workers start; else the pool compiles them first. ``launch``: the GPU workers the caller
    set up ahead (:func:`launched`), told to begin once the kernels are ready; else the pool
    sets them up now."""
    from .faults import NoSpace, StorageFault
    from .signals import install_signal_handlers
    from .study import StudyError

    err = console if console is not None else Console(stderr=True)

    def say(line: str) -> None:
        err.print(line, soft_wrap=True, markup=False)

    install_signal_handlers()
    try:
        if gpu_ids:
            from . import depthwise

            # the workers' kernels into Triton's disk cache first: compiled once, not once per worker
            try:
                if compiling is not None:
                    compiling.wait(say)
                else:
                    depthwise.compile_ahead(say)
            except ValueError as e:  # SCALING_DEPTHWISE set to something else
                err.print(f"error: {e}", markup=False)
                return 2
            with launched(config, url, gpu_ids, err, start=False) if launch is None else nullcontext(launch) as ready:
                if ready.per_gpu == 1:
                    code = _run_workers(config, url, ready.workers, quiet, err, started=ready.started)
                else:
                    runs = _runs_folder(config, url)
                    # The speed pass makes the networks ready beside the workers, outside their MPS
                    # daemon, and times them once the workers and the daemon have ended.
                    beside = _start_speed_pass(config, url, gpu_ids[0], runs)
                    try:
                        code = _run_workers(config, url, ready.workers, quiet, err, started=ready.started)
                        ready.end_daemon()
                        measured = code != 2 and beside is not None and _finish_speed_pass(beside, err)
                    finally:
                        _end_speed_pass(beside)
                    if measured:
                        return code
            if code != 2:  # 2: the storage cannot be used (a full disk, read-only), the workers said so
                _speed_pass(config, url, gpu_ids[0], err)
            return code
        if config.per_gpu not in (1, "auto"):
            err.print(f"no GPU: --per-gpu {config.per_gpu} does nothing here; --workers N runs N workers on the CPU",
                      soft_wrap=True)
        if workers > 1:  # the cores shared out: more threads than cores makes every worker crawl
            threads = str(max(1, (os.cpu_count() or 1) // workers))
            return _run_workers(config, url, [({"OMP_NUM_THREADS": threads}, "cpu")] * workers, quiet, err)
        _run_local(config, url, quiet, err)
    except KeyboardInterrupt as e:
        err.print("interrupted: the running trial is marked failed and queued again; run the same command to resume",
                  soft_wrap=True)
        return getattr(e, "exit_code", 130)
    except (NoSpace, StorageFault):  # the caller says it in one line, with nothing after it
        raise
    except StudyError as e:  # e.g. a sampler that finds nothing feasible
        err.print(f"error: {e}", markup=False)
        return 2
    return 0


def _speed_pass(config, url: str, gpu: int, err: Console) -> None:
    """Measure the inference speed of the networks the workers trained, alone on GPU ``gpu``
    of this process (:mod:`scaling.speed_pass`), now that no worker shares it. Nothing where
    this process sees no GPU."""
    import optuna
    import torch

    from . import speed_pass
    from .storage import open_storage

    if not torch.cuda.is_available():
        return
    study = optuna.load_study(study_name=config.name, storage=open_storage(url, create=False))
    speed_pass.measure_study(study, f"cuda:{gpu}", say=lambda line: err.print(line, soft_wrap=True, markup=False))


def _start_speed_pass(config, url: str, gpu: int, runs: Path, device: str = "cuda:0"):
    """The speed pass as a process beside the workers (``python -m scaling.speed_pass``) on GPU
    ``gpu``: it makes the study's networks ready to be timed while they train and waits for
    :func:`_finish_speed_pass`; its errors go to ``runs/speed-pass.log``. It is no client of
    an MPS daemon, the search's or the user's (its pipe folder is one where none runs): timed
    as a deployment runs, not through a daemon (as the daemon's only client a network measured
    6% slower at batch 1 and 9-10% at 256 on an H200). Its figures compare with each other;
    made ready beside the workers, they come out 7-10% faster than a fresh process's, with the
    same kernels (docs/BENCHMARKS.md, the pass probe). None where it cannot be started (the
    pass then runs after the workers, here)."""
    import subprocess

    from .speed_pass import LOG

    try:
        runs.mkdir(parents=True, exist_ok=True)
        log = open(runs / LOG, "w")
    except OSError:
        return None
    no_daemon = runs / "no-mps"  # never made: CUDA finds no daemon there and runs without MPS
    try:
        return subprocess.Popen([sys.executable, "-m", "scaling.speed_pass", config.name, url, device],
                                env=dict(os.environ, CUDA_VISIBLE_DEVICES=visible(gpu),
                                         CUDA_MPS_PIPE_DIRECTORY=str(no_daemon)), text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
    except OSError:
        return None
    finally:
        log.close()  # the child has its own copy


def _finish_speed_pass(proc, err: Console) -> bool:
    """Tell the pass beside the workers that they have ended, relay what it says while it
    measures, and wait for it; whether it measured everything (False: it failed, and the
    pass runs here for what it left)."""
    from .speed_pass import GO, LOG

    try:
        proc.stdin.write(GO + "\n")
        proc.stdin.close()
    except (BrokenPipeError, OSError):  # it died while preparing
        pass
    for line in proc.stdout:
        err.print(line.rstrip("\n"), soft_wrap=True, markup=False)
    if proc.wait() == 0:
        return True
    err.print(f"the speed pass beside the workers ended with exit code {proc.returncode} (see {LOG} in the "
              "study's folder); measuring here", soft_wrap=True, markup=False)
    return False


def _end_speed_pass(proc) -> None:
    """Stop the pass beside the workers where it is still running (the workers were interrupted
    or failed): standard input closed, then SIGTERM after a moment."""
    import subprocess

    if proc is None or proc.poll() is not None:
        return
    try:
        proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _run_local(config, url, quiet: bool, err: Console) -> None:
    """This process is the one worker, on the CPU."""
    import socket

    from .progress import Display, Watcher
    from .worker import run_worker

    # Reached without GPUs to use (none there, or --gpus none): the CPU, even where CUDA is there.
    here = {f"{socket.gethostname()}:{os.getpid()}": "cpu"}
    with Display(err, quiet=quiet) as display:
        watcher = Watcher(config, url, here, on_snapshot=display.show)
        if not quiet:
            watcher.start()
        try:
            run_worker(config, url, device="cpu", quiet=True)
        except BaseException:
            watcher.stop(wait=0)
            raise
        watcher.stop()
        if not quiet:  # the line ends at the run's last count, not the last refresh's
            final = watcher.read()
            if final is not None:
                display.show(final)


def _run_workers(config, url, workers: list[tuple[dict, str]], quiet: bool = False, err: Console | None = None,
                 started: list | None = None) -> int:
    """One `scaling worker` process per (environment, device); waits for all, and passes
    Ctrl+C or SIGTERM on to them. ``started``: those processes, started ahead and waiting
    (:func:`launched`), told to begin here instead. Their progress is read from the storage
    every 2 s (on stderr, unless ``quiet``); at the end, one line sums the run up."""
    import signal
    import socket
    import time

    from .progress import Display, Watcher, summary, worker_place
    from .signals import check_signals

    err = err if err is not None else Console(stderr=True)
    watcher = Watcher(config, url)  # the run starts now: its rate counts trials that end from here on
    if started is not None:
        procs = list(started)
        _go(procs)
    else:
        procs = [_spawn(config, url, env, device) for env, device in workers]
    places = {f"{socket.gethostname()}:{p.pid}": worker_place(env, device)  # its trials' "worker"
              for p, (env, device) in zip(procs, workers)}
    watcher.workers = places
    try:
        with Display(err, quiet=quiet) as display:
            watcher.on_snapshot = display.show
            if not quiet:
                watcher.start()
            while any(p.poll() is None for p in procs):
                check_signals()
                time.sleep(0.2)
            watcher.stop()
            final = watcher.read()
            if final is not None:
                display.show(final)  # the line ends at the run's last count, not the last refresh's
    except KeyboardInterrupt:
        watcher.stop(wait=0)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait()
        raise
    if final is not None:
        err.print(summary(final, config.name), markup=False, highlight=False, soft_wrap=True)  # stdout: rows
    codes = [p.returncode for p in procs]
    if all(c == 0 for c in codes):
        return 0
    return 2 if 2 in codes else 1  # 2: a worker stopped for a full disk or a storage it cannot use, and said so


