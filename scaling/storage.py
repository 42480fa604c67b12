"""Where a study lives: Optuna's RDB storage (SQLite under studies/NAME/ by default, or any
database URL for workers on many machines; RDB rather than the journal file because only
RDB storage has heartbeats), opened with heartbeats so that the trial of a worker that died
goes stale after a grace period and is queued again, once; and the trial-state writes the
search makes beside Optuna's own. The one module that calls into Optuna's private API.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from .faults import sqlite_file, storage_fault, told
from .study import StudyConfig, StudyError

# Heartbeats and fail_stale_trials are Optuna's documented way to survive dead workers,
# still labelled experimental.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


HEARTBEAT_S = int(os.environ.get("SCALING_HEARTBEAT", "10"))
GRACE_S = int(os.environ.get("SCALING_GRACE", "30"))


def storage_url(config: StudyConfig, folder: Path, url: str | None) -> str:
    return url or f"sqlite:///{(folder / 'optuna.db').resolve()}"


class Storage(RDBStorage):
    """Optuna's RDB storage, where a running trial that never recorded a heartbeat (its
    worker died between creating the trial and its first beat) also goes stale after the
    grace period; Optuna alone would wait for it forever."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        import datetime

        stale = super()._get_stale_trial_ids(study_id)
        grace = self.grace_period if self.grace_period is not None else 2 * self.heartbeat_interval
        now = datetime.datetime.now()  # Optuna stamps datetime_start with the local time
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            if t._trial_id in stale or t.datetime_start is None:
                continue
            if (now - t.datetime_start).total_seconds() > grace and not self._has_heartbeat(t._trial_id):
                stale.append(t._trial_id)
        return stale

    def set_trial_state_values(self, trial_id: int, state: TrialState, values=None) -> bool:
        """Popping a queued trial (WAITING -> RUNNING) is one conditional UPDATE, so two workers
        can never take the same trial. Optuna's read-then-write lets both take it on SQLite,
        which has no SELECT ... FOR UPDATE; then one network is trained twice and the slower
        worker dies telling a finished trial."""
        if state != TrialState.RUNNING or values is not None:
            return super().set_trial_state_values(trial_id, state, values)
        import datetime

        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(self.scoped_session) as session:
            taken = session.query(models.TrialModel).filter(
                models.TrialModel.trial_id == trial_id, models.TrialModel.state == TrialState.WAITING
            ).update({models.TrialModel.state: TrialState.RUNNING}, synchronize_session=False)
            if taken == 1:  # same transaction: the row is ours
                trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
                trial.datetime_start = datetime.datetime.now()  # the model's setter stores it as Optuna does
        return taken == 1

    def record_heartbeat(self, trial_id: int) -> None:
        """A beat that cannot be written (a full or read-only disk) is dropped, not a traceback
        from the heartbeat thread: the trial goes stale, and the worker's next write says why."""
        try:
            super().record_heartbeat(trial_id)
        except Exception:  # noqa: BLE001
            pass

    def _has_heartbeat(self, trial_id: int) -> bool:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(self.scoped_session) as session:
            return session.query(models.TrialHeartbeatModel).filter(
                models.TrialHeartbeatModel.trial_id == trial_id).first() is not None


@contextlib.contextmanager
def creation_lock(url: str):
    """Held while a storage's tables and a study are created: two commands creating the same
    fresh SQLite study at once would both stamp its schema version and one would die of
    ``UNIQUE constraint failed: alembic_version.version_num``. A file lock beside the SQLite
    file; other databases retry instead (:func:`open_storage`)."""
    db = sqlite_file(url)
    held = _held.__dict__.setdefault("paths", set())
    if db is None or not db.parent.is_dir() or db in held:  # held by this thread already: re-entered
        yield
        return
    import filelock

    with filelock.FileLock(str(db.with_name(f".{db.name}.lock")), timeout=120):
        held.add(db)
        try:
            yield
        finally:
            held.discard(db)


_held = threading.local()


def open_storage(url: str, create: bool = True) -> RDBStorage:
    """Optuna RDB storage with heartbeats and one retry per stale trial.

    Args:
        url: the database URL.
        create: where False, a SQLite file that does not exist is an error rather than a
            new, empty storage.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = sqlite_file(url)
    if not create and db is not None and not db.exists():
        raise StudyError(f"no study storage at {db}")
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(5):
        try:
            with creation_lock(url) if create else contextlib.nullcontext():  # an existing file: read as it is
                return Storage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                               heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
        except sqlalchemy.exc.IntegrityError:  # another process created the tables just now (PostgreSQL)
            time.sleep(0.2 * (attempt + 1))
        except Exception as e:  # malformed URL, unknown driver, unreachable server, a damaged file
            fault = storage_fault(e, url)
            if fault is not None:
                raise fault from None
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StudyError(f"cannot open storage {url!r}: {first}") from None
    raise StudyError(f"cannot open storage {url!r}: its tables were being created by another process; try again")


def load_study(config: StudyConfig, url: str) -> optuna.Study:
    """An existing study; a SQLite file that does not exist is refused, not created empty."""
    try:
        storage = open_storage(url, create=False)
    except StudyError as e:
        if str(e).startswith("no study storage"):
            raise StudyError(f"no study {config.name!r}: {e}; start it with `scaling search`") from None
        raise
    try:
        with told(url, config.name):
            study = optuna.load_study(study_name=config.name, storage=storage)
    except KeyError:
        raise StudyError(f"no study {config.name!r} in {url}; start it with `scaling search`") from None
    return study


def trial_key(t) -> tuple:
    """What a trial trains: its fixed (queued) or suggested parameters."""
    params = t.system_attrs.get("fixed_params") or t.params
    return tuple(sorted(params.items()))


def fixed_params(trial: optuna.Trial) -> dict | None:
    """The parameters a queued trial was enqueued with (None for a sampled one), read from
    the storage, where Optuna keeps them as one of the trial's system attributes."""
    return trial.study._storage.get_trial_system_attrs(trial._trial_id).get("fixed_params")


def settle(study: optuna.Study, trial: optuna.Trial | None) -> None:
    """Mark FAIL a trial a fault left RUNNING, where the storage still takes the write; where
    it does not, the trial's heartbeat stops and the next run fails it and queues it again."""
    if trial is None:
        return
    with contextlib.suppress(Exception):
        if study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def requeue_interrupted(study: optuna.Study, trial: optuna.Trial | None) -> None:
    """Enqueue again the network of a queued trial (grid, family, official, sweep) that a
    signal interrupted (Optuna marked it FAIL), so that any worker of the study trains it
    again, not only the next run; a sampled trial (tpe, random) is not queued again."""
    if trial is None:
        return
    frozen = study._storage.get_trial(trial._trial_id)
    if frozen.state == TrialState.RUNNING:
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        frozen = study._storage.get_trial(trial._trial_id)
    if frozen.state == TrialState.FAIL and frozen.system_attrs.get("fixed_params"):
        study.enqueue_trial(dict(trial_key(frozen)), skip_if_exists=False)


def prefer_queued(study: optuna.Study, rank) -> None:
    """Make ``study`` take, of its queued (WAITING) trials, the first of the lowest
    ``rank(fixed_params)`` (queue order among equals) instead of the first queued: what the
    worker uses to take first a network whose shapes it has built already. Optuna pops the
    queue in ``Study._pop_waiting_trial_id``; this replaces it on this one study object, with
    the same claim (a trial another worker took in between is passed over)."""

    def pop() -> int | None:
        waiting = study._storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,))
        ordered = sorted(enumerate(waiting), key=lambda it: (rank(it[1].system_attrs.get("fixed_params") or {}), it[0]))
        for _, trial in ordered:
            try:
                if not study._storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            return trial._trial_id
        return None

    study._pop_waiting_trial_id = pop
