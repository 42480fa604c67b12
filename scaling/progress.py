"""Progress of a search while it runs: a snapshot read from the study's storage, and its text.

A :class:`StudyProgress` is built from one ``get_trials(deepcopy=False)`` (Optuna's cached
storage reads only the trials that changed) by the pure :func:`snapshot`; :func:`render` and
:func:`summary` turn it into the lines a person reads. A :class:`Watcher` thread takes a
snapshot every few seconds and hands it to a :class:`Display` (a rich Live line on a
terminal, a plain line now and then in a log), so the process that waits on the workers
keeps answering Ctrl+C at once however busy the storage is.

Times are Optuna's: naive local datetimes, as its storage stamps ``datetime_complete``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections import Counter
from typing import Callable, Iterable, Mapping, Optional

from optuna.trial import FrozenTrial, TrialState

# Where a running trial runs: a GPU index, "cpu", or one of these two.
ELSEWHERE = "elsewhere"  # a worker this command did not start (another machine, another `scaling worker`)
STARTING = "starting"  # popped from the queue, its worker not recorded yet


@dataclasses.dataclass(frozen=True)
class RunningTrial:
    number: int
    worker: Optional[str]  # "host:pid", as the trial records it (None until it does)
    gpu: int | str  # the GPU index, "cpu", ELSEWHERE or STARTING
    label: str  # the network's triples or member label ("" until recorded)
    started: Optional[dt.datetime]


@dataclasses.dataclass(frozen=True)
class StudyProgress:
    """A study's progress at one moment of a run.

    ``done``, ``failed`` and ``pruned`` are over the whole study (a resumed one included);
    ``finished`` only counts trials that ended since this run started, so the rate is this
    run's. ``failed`` leaves out a failure whose network is queued or trained again.
    """

    total: int  # networks to train: the queue's length, or the trials budget
    done: int  # COMPLETE
    failed: int  # FAIL, not retried
    pruned: int  # PRUNED networks (not the skipped proposals)
    remaining: int  # of total, not yet settled
    waiting: int  # WAITING (queued, not taken)
    running: tuple[RunningTrial, ...]
    elapsed_s: float  # since this run started
    finished: int  # trials of this run that settled one of ``total``

    @property
    def rate(self) -> Optional[float]:
        """Trials per hour over this run; None until one finished in it."""
        if self.finished == 0 or self.elapsed_s <= 0:
            return None
        return self.finished * 3600.0 / self.elapsed_s

    @property
    def eta_s(self) -> Optional[float]:
        """Seconds left at this run's rate (remaining / rate); None until a first trial finished."""
        rate = self.rate
        if self.remaining == 0:
            return 0.0
        return None if rate is None else self.remaining * 3600.0 / rate

    def per_gpu(self) -> dict[int | str, int]:
        """Running trials by where they run: GPUs in order, then the CPU, elsewhere, starting."""
        n = Counter(r.gpu for r in self.running)
        return {k: n[k] for k in sorted(n, key=_place_order)}


def _place_order(place) -> tuple:
    if isinstance(place, int):
        return (0, place)
    return ({"cpu": 1, ELSEWHERE: 2, STARTING: 3}.get(place, 4), str(place))


def _key(t: FrozenTrial) -> tuple:
    params = t.system_attrs.get("fixed_params") or t.params  # as scaling.storage.trial_key
    return tuple(sorted(params.items()))


def snapshot(trials: Iterable[FrozenTrial], *, total: int, started: dt.datetime, now: dt.datetime,
             workers: Mapping[str, int | str] = {}, count_pruned: bool = True) -> StudyProgress:
    """The progress of a study's ``trials`` at ``now``, of a run that began at ``started``.

    Args:
        total: the networks the study trains (its queue's length, or the trials budget).
        workers: this run's workers, "host:pid" -> the GPU index or "cpu"; a running trial of
            any other worker is ELSEWHERE.
        count_pruned: whether a pruned trial settles one of ``total`` (a queued study: its
            network is not trained again), or not (tpe, random: the sampler proposes another).
    """
    trials = list(trials)
    last = {}
    for t in trials:
        k = _key(t)
        if k:
            last[k] = max(last.get(k, -1), t.number)
    done = failed = pruned = waiting = finished = 0
    running = []
    for t in trials:
        a = t.user_attrs
        if t.state == TrialState.RUNNING:
            w = a.get("worker")
            place = STARTING if w is None else workers.get(w, ELSEWHERE)
            running.append(RunningTrial(t.number, w, place, str(a.get("label") or a.get("triples") or ""),
                                        t.datetime_start))
            continue
        if t.state == TrialState.WAITING:
            waiting += 1
            continue
        if a.get("skipped"):  # a proposal that trained nothing
            continue
        if t.state == TrialState.COMPLETE:
            done += 1
            settles = True
        elif t.state == TrialState.FAIL:
            k = _key(t)
            retried = bool(k) and last[k] > t.number
            failed += not retried
            settles = not retried
        elif t.state == TrialState.PRUNED:
            pruned += 1
            settles = count_pruned
        else:
            continue
        if settles and t.datetime_complete is not None and t.datetime_complete >= started:
            finished += 1
    settled = done + failed + (pruned if count_pruned else 0)
    return StudyProgress(total=total, done=done, failed=failed, pruned=pruned, remaining=max(0, total - settled),
                         waiting=waiting, running=tuple(sorted(running, key=lambda r: r.number)),
                         elapsed_s=max(0.0, (now - started).total_seconds()), finished=finished)


def worker_place(env: Mapping[str, str], device: str) -> int | str:
    """Where a worker started with ``env`` on ``device`` runs: the GPU index that its
    CUDA_VISIBLE_DEVICES names, else "cpu" (or the device as given)."""
    if device.startswith("cuda"):
        gpu = env.get("CUDA_VISIBLE_DEVICES", "")
        return int(gpu) if gpu.isdigit() else (gpu or device)
    return "cpu" if device == "cpu" else device


def study_total(user_attrs: Mapping, config) -> int:
    """The networks a study trains: its queue's length ("enqueued"), else the trials budget."""
    from .search import DEFAULT_TRIALS

    return int(user_attrs.get("enqueued") or config.trials or DEFAULT_TRIALS)


# ---------------------------------------------------------------------------- text


def duration(seconds: float) -> str:
    """'45 s', '18 min', '2.5 h'."""
    if seconds < 90:
        return f"{max(0, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def rate_text(rate: float) -> str:
    """'412 trials/h', '41.3 trials/h', '2.35 trials/h'."""
    return f"{rate:,.0f} trials/h" if rate >= 100 else f"{rate:.1f} trials/h" if rate >= 10 else f"{rate:.2f} trials/h"


def place_text(place: int | str) -> str:
    return f"GPU {place}" if isinstance(place, int) else "CPU" if place == "cpu" else str(place)


def _where(place: int | str) -> str:
    return {STARTING: "starting", ELSEWHERE: "on a worker elsewhere"}.get(place, f"on {place_text(place)}")


def render(p: StudyProgress, detail: bool = False) -> str:
    """One line (two with ``detail``: the running trials), e.g.
    ``12/25 networks · 4 running (GPU 0: 4) · 41.3 trials/h · about 18 min left · 1 failed``."""
    parts = [f"{p.done}/{p.total} networks"]
    where = p.per_gpu()
    parts.append(f"{len(p.running)} running" + (" (" + ", ".join(f"{place_text(k)}: {n}" for k, n in where.items())
                                                + ")" if where else ""))
    if p.remaining == 0:
        parts.append("nothing left to start")
    elif p.rate is None:
        parts.append(f"no trial finished yet ({duration(p.elapsed_s)} in)")
    else:
        parts.append(rate_text(p.rate))
        parts.append(f"about {duration(p.eta_s)} left")
    if p.failed:
        parts.append(f"{p.failed} failed")
    if p.pruned:
        parts.append(f"{p.pruned} pruned")
    line = " · ".join(parts)
    if detail and p.running:
        shown = [f"trial {r.number}" + (f" {r.label}" if r.label else "") + f" {_where(r.gpu)}" for r in p.running[:4]]
        more = len(p.running) - len(shown)
        line += "\nrunning: " + "; ".join(shown) + (f"; and {more} more" if more else "")
    return line


def summary(p: StudyProgress, name: str | None = None) -> str:
    """The run's last line, e.g. ``study cifar10: 25/25 networks done, 1 failed, 36 min wall, 41.3 trials/h``."""
    text = ((f"study {name}: " if name else "") + f"{p.done}/{p.total} networks done, {p.failed} failed"
            + (f", {p.pruned} pruned" if p.pruned else "") + f", {duration(p.elapsed_s)} wall")
    return text + (f", {rate_text(p.rate)}" if p.rate is not None else ", no trial finished in this run")


# ---------------------------------------------------------------------------- live


class Watcher:
    """Reads a study's progress every ``every`` seconds in a daemon thread and hands each
    snapshot to ``on_snapshot``. A read that fails (a busy SQLite file, a storage not created
    yet) keeps the last snapshot; :meth:`read` reads once in the calling thread."""

    def __init__(self, config, url: str, workers: Mapping[str, int | str] = {}, every: float = 2.0,
                 on_snapshot: Callable[[StudyProgress], None] | None = None,
                 clock: Callable[[], dt.datetime] = dt.datetime.now):
        self.config, self.url, self.workers, self.every = config, url, dict(workers), every
        self.on_snapshot, self.clock = on_snapshot, clock
        self.started = clock()
        self.latest: Optional[StudyProgress] = None
        self._study, self._total = None, None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def read(self) -> Optional[StudyProgress]:
        from .search import queued
        from .storage import load_study

        with self._lock:  # the thread and a final read never share the storage's session at once
            try:
                if self._study is None:
                    study = load_study(self.config, self.url)
                    self._total = study_total(study.user_attrs, self.config)
                    self._study = study
                trials = self._study.get_trials(deepcopy=False)
                self.latest = snapshot(trials, total=self._total, started=self.started, now=self.clock(),
                                       workers=self.workers, count_pruned=queued(self.config))
            except Exception:  # noqa: BLE001 - progress is never worth stopping the search for
                pass
            return self.latest

    def _loop(self) -> None:
        while not self._stop.is_set():
            p = self.read()
            if p is not None and self.on_snapshot is not None and not self._stop.is_set():
                try:
                    self.on_snapshot(p)
                except Exception:  # noqa: BLE001
                    pass
            self._stop.wait(self.every)

    def start(self) -> "Watcher":
        self._thread = threading.Thread(target=self._loop, name="scaling-progress", daemon=True)
        self._thread.start()
        return self

    def stop(self, wait: float = 1.0) -> None:
        """Stop the thread; one stuck in a slow read is left to end on its own (it is a daemon)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(wait)


class Display:
    """Where snapshots are shown: a rich Live line on a terminal, else a plain line each time
    the count of settled networks changes and otherwise at most every ``plain_every`` seconds
    (only when something else changed), so that a log stays short; nothing when ``quiet``."""

    def __init__(self, console, quiet: bool = False, plain_every: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.console, self.quiet, self.plain_every, self.clock = console, quiet, plain_every, clock
        self.live = None
        self._last_key = None  # (done, failed, pruned): a plain line on each change
        self._last_line, self._last_t = None, None
        self._closed = False
        self._lock = threading.Lock()

    def __enter__(self) -> "Display":
        if not self.quiet and self.console.is_terminal:
            from rich.live import Live

            self.live = Live(console=self.console, auto_refresh=False, transient=False,
                             redirect_stdout=False, redirect_stderr=False)
            self.live.start()
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._closed = True
            if self.live is not None:
                self.live.stop()

    def show(self, p: StudyProgress) -> None:
        from rich.text import Text

        with self._lock:
            if self._closed or self.quiet:
                return
            if self.live is not None:
                self.live.update(Text(render(p, detail=True)), refresh=True)
                return
            line, key, now = render(p), (p.done, p.failed, p.pruned), self.clock()
            first = self._last_t is None
            if first or key != self._last_key or (now - self._last_t >= self.plain_every
                                                  and _steady(line) != _steady(self._last_line)):
                self.console.print(line, markup=False, highlight=False, soft_wrap=True)
                self._last_key, self._last_line, self._last_t = key, line, now


def _steady(line: str) -> str:
    """A plain line without what changes with the clock alone (the rate, the time left)."""
    return " · ".join(part for part in line.split(" · ")
                      if not part.endswith((" left", "trials/h", " in)")))
