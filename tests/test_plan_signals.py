"""A signal during `family --train` or `sweep --train`: the interrupted member is trained again
on the next run, and every member completes exactly once (as the grid's signal tests check)."""

import contextlib
import signal
import sqlite3
import time
from pathlib import Path

import optuna
import pytest

from test_search import SLOW, _spawn

FAMILY = ["family", "--train", "--study", "tiny.toml", "--phi", "0,1", "--gpus", "none", "-q", "--no-report"]
SWEEP = ["sweep", "--dimension", "width", "--values", "1.2,1.4", "--train", "--study", "tiny.toml", "--gpus", "none",
         "-q", "--no-report"]


def _load(db: Path, name: str):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


RUNNING_MEMBER = """SELECT t.trial_id FROM trials t JOIN studies s ON s.study_id = t.study_id
WHERE s.study_name = ? AND t.state = 'RUNNING'
AND EXISTS (SELECT 1 FROM trial_user_attributes a WHERE a.trial_id = t.trial_id AND a.key = 'worker')
AND NOT EXISTS (SELECT 1 FROM trial_intermediate_values v WHERE v.trial_id = t.trial_id)"""


def _wait_member_running(db: Path, name: str, proc, timeout=120):
    """Until a member of study ``name`` is in training (its network recorded, no epoch reported
    yet); its parameters. Read with sqlite3, read-only: an Optuna storage opened on the file
    while the command creates its tables would race it to create them."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"the command ended ({proc.returncode}) before a member ran: {proc.stdout.read()}")
        if db.exists():
            try:
                with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
                    row = con.execute(RUNNING_MEMBER, (name,)).fetchone()
            except sqlite3.Error:  # its tables not created yet, or being written
                row = None
            if row is not None:
                trial = next(t for t in _load(db, name).trials if t._trial_id == row[0])
                return dict(trial.params)
        time.sleep(0.05)
    raise AssertionError("no member started")


@pytest.mark.parametrize("args, name, keys", [
    (FAMILY, "tiny.family-1.2-1.1-1.15", [0.0, 1.0]),  # phi
    (SWEEP, "tiny.sweep-width", [1.2, 1.4]),  # multiplier
])
def test_sigterm_during_a_plan_then_rerun_trains_the_member_again(args, name, keys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.toml").write_text(SLOW)
    db = tmp_path / "studies" / "tiny" / "optuna.db"
    p = _spawn(args, tmp_path)
    victim = _wait_member_running(db, name, p)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 143, out
    assert "Traceback" not in out and "interrupted: the running trial is marked failed and queued again" in out, out
    study = _load(db, name)
    states = {s: [t for t in study.trials if t.state == s] for s in optuna.trial.TrialState}
    assert not states[optuna.trial.TrialState.RUNNING]
    interrupted = [t for t in states[optuna.trial.TrialState.FAIL] if t.user_attrs.get("reason") == "interrupted"]
    assert [t.params for t in interrupted] == [victim]
    # As the grid: queued again at once, so that any worker of the study trains it, not only the next run.
    waiting = [t.system_attrs["fixed_params"] for t in states[optuna.trial.TrialState.WAITING]]
    assert victim in waiting, waiting
    p = _spawn(args, tmp_path)
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out
    study = _load(db, name)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.params["member"] for t in done) == keys  # every member once, the interrupted one included
    assert sorted(t.user_attrs["network"] for t in done) == sorted({t.user_attrs["network"] for t in done})
    again = [t for t in done if t.params == victim]
    assert len(again) == 1 and again[0].number > interrupted[0].number  # trained again after the signal
    c = {s.name: n for s, n in ((s, len([t for t in study.trials if t.state == s])) for s in optuna.trial.TrialState)}
    assert c["RUNNING"] == 0 and c["WAITING"] == 0 and c["FAIL"] == 1
