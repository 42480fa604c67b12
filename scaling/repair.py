"""Rebuilding a study's SQLite storage after it was damaged (a truncated or overwritten optuna.db).

Every command that summarises a study (search, results, family and sweep with --train)
keeps a snapshot of its finished trials beside the storage, studies/NAME/trials.json,
written atomically. :func:`repair` moves the damaged file aside, builds a fresh storage
from the readable part of the damaged one (where Optuna can still read all of it) or else
from the snapshot, and queues again the networks neither holds; the next `scaling search`
(or `family --train`) trains them.

Chosen over an explicit export before a risky change and import after it: damage is
found after the fact, so the rebuild has to work from what the folder already keeps,
with the one command the error line names.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.trial import TrialState

from .study import StudyConfig, StudyError
from .files import write_text_atomic

SNAPSHOT = "trials.json"
_FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


@dataclass(frozen=True)
class Repaired:
    """What :func:`repair` did."""

    kept: Path  # the damaged file, moved aside
    source: str  # "storage" (read from the damaged file) or "snapshot"
    trials: int  # finished trials restored
    queued: int  # networks queued again


def _trial_json(t: optuna.trial.FrozenTrial) -> dict:
    return {"state": t.state.name, "value": t.value, "params": t.params,
            "distributions": {k: distribution_to_json(d) for k, d in t.distributions.items()},
            "user_attrs": t.user_attrs,
            "system_attrs": {k: v for k, v in t.system_attrs.items() if k in ("fixed_params", "failed_trial")},
            "intermediate_values": {str(k): v for k, v in t.intermediate_values.items()},
            "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
            "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None}


def _studies_json(storage, name: str) -> list[dict]:
    """The search ``name`` and its family, official and sweep studies, with their finished trials."""
    out = []
    for study_name in sorted(n for n in optuna.get_all_study_names(storage) if n == name or n.startswith(f"{name}.")):
        study = optuna.load_study(study_name=study_name, storage=storage)
        out.append({"name": study_name, "direction": study.direction.name, "user_attrs": study.user_attrs,
                    "trials": [_trial_json(t) for t in study.get_trials(deepcopy=False, states=_FINISHED)]})
    return out


def write_snapshot(url: str, name: str, folder: Path) -> None:
    """Keep studies/NAME/trials.json up to date (atomically) from a readable SQLite storage."""
    from .storage import open_storage

    if not url.startswith("sqlite:///"):
        return  # a database server keeps its own backups
    data = {"format": "scaling-trials/1", "name": name, "studies": _studies_json(open_storage(url), name)}
    write_text_atomic(folder / SNAPSHOT, json.dumps(data))


def _read_damaged(url: str, name: str) -> list[dict] | None:
    """Everything of the study in the damaged file, where Optuna can still read all of it."""
    from .storage import Storage

    try:
        return _studies_json(Storage(url, skip_compatibility_check=True, skip_table_creation=True), name)
    except Exception:  # noqa: BLE001 - damaged beyond reading: the snapshot it is
        return None


def _restore(storage, studies: list[dict]) -> int:
    n = 0
    for s in studies:
        study = optuna.create_study(study_name=s["name"], storage=storage, direction=s["direction"].lower(),
                                    load_if_exists=True)
        for k, v in s["user_attrs"].items():
            if k != "enqueued":  # recounted when the queue is rebuilt
                study.set_user_attr(k, v)
        for t in s["trials"]:
            when = {k: datetime.datetime.fromisoformat(t[k]) if t.get(k) else None
                    for k in ("datetime_start", "datetime_complete")}
            trial = optuna.trial.create_trial(
                state=TrialState[t["state"]], value=t["value"], params=t["params"],
                distributions={k: json_to_distribution(d) for k, d in t["distributions"].items()},
                user_attrs=t["user_attrs"], system_attrs=t["system_attrs"],
                intermediate_values={int(k): v for k, v in t["intermediate_values"].items()})
            trial.datetime_start, trial.datetime_complete = when["datetime_start"], when["datetime_complete"]
            study.add_trial(trial)
            n += 1
    return n


def repair(name: str, studies_dir: Path) -> Repaired:
    """Rebuild studies/NAME/optuna.db from what can be read (see the module's docstring).

    Raises:
        StudyError: no such study, nothing to rebuild it from, or a storage that is not damaged.
    """
    from .search import create_study
    from .storage import open_storage

    folder = Path(studies_dir) / name
    db = folder / "optuna.db"
    if not (folder / "study.json").exists():
        raise StudyError(f"no study {name!r} in {studies_dir} (no {folder / 'study.json'})")
    url = f"sqlite:///{db.resolve()}"
    config = StudyConfig.from_json((folder / "study.json").read_text())
    studies = _read_damaged(url, name) if db.exists() else None
    if studies is not None and _intact(db):
        raise StudyError(f"{db} reads without error: nothing to repair")
    source = "storage"
    if studies is None:
        snap = folder / SNAPSHOT
        studies, source = (json.loads(snap.read_text())["studies"], "snapshot") if snap.exists() else ([], "nothing")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    kept = db.with_name(f"optuna.db.damaged-{stamp}")
    if db.exists():
        os.replace(db, kept)
    for extra in ("-journal", "-wal", "-shm"):  # SQLite's side files belong to the damaged file
        side = db.with_name(db.name + extra)
        if side.exists():
            os.replace(side, kept.with_name(kept.name + extra))
    trials = _restore(open_storage(url), studies)
    queued = 0
    configs = {config.name: config}
    for s in studies:
        if "definition" in s["user_attrs"] and s["name"] != config.name:
            configs[s["name"]] = StudyConfig.from_json(s["user_attrs"]["definition"])
    for c in configs.values():
        before = _waiting(url, c.name)
        queued += _waiting(url, create_study(c, url).study_name) - before
    return Repaired(kept=kept, source=source, trials=trials, queued=queued)


def _intact(db: Path) -> bool:
    """SQLite's own check of every page of the file."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            return con.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    except sqlite3.Error:
        return False


def _waiting(url: str, study_name: str) -> int:
    from .storage import open_storage

    storage = open_storage(url)
    if study_name not in optuna.get_all_study_names(storage):
        return 0
    return len(optuna.load_study(study_name=study_name, storage=storage).get_trials(
        deepcopy=False, states=(TrialState.WAITING,)))
