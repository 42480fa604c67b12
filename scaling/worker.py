"""A worker of a study: trains its queued networks (grid, family, official, sweep) or its
sampler's proposals (tpe, random) one trial at a time, until none is left or the budget is
spent. On the way it fails other workers' stale trials (Optuna queues each again, once).
Of the queued networks it takes first one whose layer shapes it has built already (the
same widths and resolution: its cuDNN plans exist, so its first steps are not a warm-up),
else the first queued. On a GPU it starts CUDA and loads the Triton depthwise kernels once,
before its first trial (a process's start, not that network's). A signal stops it with its trial failed (and queued again, where it
was queued); a fault of the storage, with its trial failed where the storage still takes
the write.
"""

from __future__ import annotations

import time

import optuna
import sqlalchemy.exc
from optuna.storages import fail_stale_trials
from optuna.trial import TrialState

from .faults import sqlite_file, storage_fault, told
from .objective import Objective, TrialFailed
from .search import DEFAULT_TRIALS, queued
from .signals import check_signals
from .storage import load_study, prefer_queued, requeue_interrupted, settle, trial_key
from .study import StudyConfig, StudyError

MAX_ATTEMPTS = 20  # proposals per wanted trial before giving up on an infeasible space
# How often a worker with nothing queued looks again while others still train. It stays for
# their trials' sake (one that goes stale is queued again, and it trains it), and leaves
# within this of the last one's end: a search's pool waits for every worker (5 s, until
# 2026-12-02, was most of the GPU's idle time between a grid's last trial and its speed pass).
IDLE_POLL_S = 1.0


def counts(study: optuna.Study) -> dict[str, int]:
    out = {s.name: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] += 1
    return out


def start_device(device, kernels: bool = True) -> None:
    """A GPU worker's start, once: CUDA's context, torch's compiler front end and, where the
    trainer will use them (and ``kernels``), the Triton depthwise kernels loaded from Triton's
    disk cache (a fresh process's first launch took 2.9 s on an H200, docs/BENCHMARKS.md). The
    front end (``torch._dynamo``) is what a process's first optimizer imports, since torch's
    optimizers keep their methods out of compilation: 5-6 s on the H200 machine, which a
    worker's first trial paid inside its training until 2026-12-02. Called again, it does only
    what is left. Nothing on the CPU."""
    import torch

    from . import depthwise
    from .train import resolve_device

    dev = resolve_device(device)
    if dev.type != "cuda":
        return
    torch.zeros(1, device=dev)
    import torch._dynamo  # noqa: F401
    if kernels and depthwise.chosen() is not False and depthwise.available(dev):
        depthwise.load_kernels(dev)


GO = "go"  # the line a worker started ahead (`scaling worker --wait`) reads on standard input to begin


def wait_for_go(device, stream=None) -> float | None:
    """A worker started ahead of its study (``scaling worker --wait``, :func:`scaling.pool.launched`):
    CUDA's context and the compiler's front end made now (:func:`start_device` without the
    kernels, which may still be compiling), then the line :data:`GO` waited for on ``stream``
    (standard input). The seconds it waited, or None where the stream ended without it (the
    search stopped before its study was made: the worker has nothing to do)."""
    import sys

    start_device(device, kernels=False)
    t0 = time.time()
    line = (stream or sys.stdin).readline()
    return round(time.time() - t0, 2) if line.strip() == GO else None


def run_worker(config: StudyConfig, url: str, device=None, quiet: bool = True, on_trial=None,
               waited_s: float = 0.0) -> None:
    """Train queued networks until none is left (grid) or ``trials`` are done (tpe, random).

    Waits for other workers' running trials to finish or go stale, so that a re-run
    after a crash retrains what the crash lost. ``waited_s``: the seconds a worker started
    ahead waited for its study (:func:`wait_for_go`), left out of its ``worker_start_s``.
    """
    study = load_study(config, url)
    db = sqlite_file(url)
    objective = Objective(config, device=device, quiet=quiet, num_classes=study.user_attrs.get("num_classes"),
                          folder=db.parent if db is not None else None)
    if queued(config):  # a network whose shapes this worker has built first: its first steps build no new plans
        prefer_queued(study, objective.queued_rank)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start_device(device)
    from . import STARTED  # read now: a worker forked from its search starts its clock at the fork

    objective.worker_start_s = round(time.time() - STARTED - waited_s, 2)  # written on its first trial
    with told(url, config.name):
        while True:
            check_signals()
            try:
                fail_stale_trials(study)
                c = counts(study)
            except (sqlalchemy.exc.OperationalError, optuna.exceptions.StorageInternalError) as e:
                if storage_fault(e, url, config.name) is not None:
                    raise
                time.sleep(1.0)  # a busy SQLite file: try again shortly
                continue
            if queued(config):
                if c["WAITING"] == 0:
                    if c["RUNNING"] == 0:
                        return
                    time.sleep(IDLE_POLL_S)  # another worker's trial: wait for it to end, or to go stale
                    continue
            else:
                finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL,
                                                                     TrialState.PRUNED))
                real = [t for t in finished if not t.user_attrs.get("skipped") and t.state != TrialState.PRUNED
                        and not _retried(t, study)]
                budget = config.trials or DEFAULT_TRIALS
                if len(real) >= budget and c["WAITING"] == 0:
                    return
                if len(finished) >= MAX_ATTEMPTS * budget:  # the sampler keeps proposing infeasible triples
                    raise StudyError(f"{len(finished)} proposals gave {len(real)} feasible networks; "
                                     "widen the gamma range or use the grid sampler")
            try:
                study.optimize(objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=True)
            except KeyboardInterrupt:
                requeue_interrupted(study, objective.current)
                raise
            except Exception as e:
                fault = storage_fault(e, url, config.name)
                if fault is not None:  # a full disk, a read-only or damaged storage: stop, leave nothing RUNNING
                    settle(study, objective.current)
                    raise fault from None
                if isinstance(e, (sqlalchemy.exc.OperationalError, optuna.exceptions.StorageInternalError)):
                    # SQLite under several writers can refuse a write ("database is locked") even
                    # with a timeout; a trial left RUNNING goes stale and is queued again.
                    time.sleep(1.0)
                    continue
                raise
            if on_trial is not None:
                on_trial(study)
            check_signals()


def _retried(t, study: optuna.Study) -> bool:
    """A failed trial whose network a later trial trains again (it does not count against the budget)."""
    if t.state != TrialState.FAIL:
        return False
    key = trial_key(t)
    return bool(key) and any(o.number > t.number and trial_key(o) == key for o in study.get_trials(deepcopy=False))
