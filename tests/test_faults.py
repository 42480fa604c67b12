"""Faults a study must survive, injected where the write happens: a full disk, a read-only or
damaged storage, two commands creating one study at once, a worker of a study that does not exist."""

import errno
import sqlite3
import threading
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from scaling.cli import app
from scaling.results import failures_frame
from scaling.search import create_study
from scaling.storage import Storage
from scaling.study import check_or_save, resolve
from scaling.worker import counts

from test_search import TOML, study_file  # noqa: F401  (the fixture)

# Three networks of the tiny grid, one epoch each on 100 images.
FAST = TOML.replace('sampler = "grid"', 'sampler = "grid"\ntrials = 3')


@pytest.fixture
def fast(study_file):
    study_file.write_text(FAST)
    return study_file


def _study(tmp_path):
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'studies' / 'tiny' / 'optuna.db'}")


def _trained(study):
    return sorted(t.user_attrs["network"] for t in study.trials if t.state == TrialState.COMPLETE)


def _last_line_only_error(r, *words):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and "Should not reach" not in r.output, r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("error: "), r.output
    for w in words:
        assert w in last, r.output
    return last


def search(study_file, *extra):
    return CliRunner().invoke(app, ["search", "--study", str(study_file), "-q", "--no-report", *extra])


def test_a_full_disk_while_a_trial_loads_its_data_stops_and_the_next_run_trains_it(fast, tmp_path, monkeypatch):
    import scaling.data as d

    real, cache = d.load_data, tmp_path / "cache"
    calls = {"n": 0}

    def full(source, resolution, **kw):  # the trials' data: the second one finds the disk full
        calls["n"] += 1
        if calls["n"] == 3:  # 1: the command's own check of the data, 2: the first trial
            raise OSError(errno.ENOSPC, "No space left on device", str(cache / "entry.tmp-1"))
        return real(source, resolution, **kw)

    monkeypatch.setattr(d, "load_data", full)
    r = search(fast)
    _last_line_only_error(r, f"no space left on {cache}:", "queued again")
    study = _study(tmp_path)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.RUNNING) == 0 and states.count(TrialState.FAIL) == 1
    failed = next(t for t in study.trials if t.state == TrialState.FAIL)
    assert failed.user_attrs["triples"] and failed.user_attrs["reason"] == f"no space left on {cache}"
    fails = failures_frame(study)  # listed though it failed before its data, so before its network's key
    assert list(fails["trial"]) == [failed.number] and not fails["recovered"].any()
    monkeypatch.setattr(d, "load_data", real)  # space freed
    r = search(fast)
    assert r.exit_code == 0, r.output
    study = _study(tmp_path)
    assert len(_trained(study)) == len(set(_trained(study))) == 3  # the failed one trained, nothing twice
    assert "1 trial recovered" in r.output and "failed trial" not in r.output
    assert failures_frame(study)["recovered"].tolist() == [True]


def _disk_full():
    try:
        raise sqlite3.OperationalError("database or disk is full")
    except sqlite3.OperationalError as e:
        raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from e


def test_a_full_studies_folder_when_a_trial_ends_leaves_nothing_running(fast, tmp_path, monkeypatch):
    real = Storage.set_trial_state_values
    calls = {"n": 0}

    def full(self, trial_id, state, values=None):  # the first trial's COMPLETE cannot be written
        if state == TrialState.COMPLETE:
            calls["n"] += 1
            if calls["n"] == 1:
                _disk_full()
        return real(self, trial_id, state, values)

    monkeypatch.setattr(Storage, "set_trial_state_values", full)
    r = search(fast)
    folder = tmp_path / "studies" / "tiny"
    _last_line_only_error(r, f"no space left on {folder.resolve()}:")
    study = _study(tmp_path)
    assert [t.state for t in study.trials].count(TrialState.RUNNING) == 0
    assert [t.state for t in study.trials].count(TrialState.FAIL) == 1
    r = search(fast)
    assert r.exit_code == 0, r.output
    assert len(set(_trained(_study(tmp_path)))) == 3 and "1 trial recovered" in r.output


def test_the_data_caches_full_disk_says_its_folder_and_the_space_needed(fast, tmp_path, monkeypatch):
    import scaling.data as d
    from scaling.data.cache import NoSpace as CacheFull

    real, cache = d.load_data, tmp_path / "cache"
    calls = {"n": 0}

    def full(source, resolution, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # the first trial's data: the cache cannot be written
            raise CacheFull(cache, 5_000_000)
        return real(source, resolution, **kw)

    monkeypatch.setattr(d, "load_data", full)
    _last_line_only_error(search(fast), f"no space left on {cache}: 5.0 MB needed;", "queued again")
    assert [t.state for t in _study(tmp_path).trials].count(TrialState.RUNNING) == 0


def test_a_full_disk_in_a_storage_write_inside_a_trial(fast, tmp_path, monkeypatch):
    real = Storage.set_trial_user_attr

    def full(self, trial_id, key, value):
        if key == "curve":  # written after training
            _disk_full()
        return real(self, trial_id, key, value)

    monkeypatch.setattr(Storage, "set_trial_user_attr", full)
    _last_line_only_error(search(fast), "no space left on")
    assert [t.state for t in _study(tmp_path).trials].count(TrialState.RUNNING) == 0


def test_a_read_only_studies_folder(fast, tmp_path, monkeypatch):
    config = resolve(fast)
    folder = tmp_path / "studies" / "tiny"
    check_or_save(config, folder)
    create_study(config, f"sqlite:///{folder / 'optuna.db'}")
    read_only = f"sqlite:///file:{folder / 'optuna.db'}?mode=ro&uri=true"
    _last_line_only_error(search(fast, "--storage", read_only), "read-only", str(folder / "optuna.db"))
    assert [t.state for t in _study(tmp_path).trials].count(TrialState.RUNNING) == 0
    import tempfile

    def refused(*a, **kw):
        raise OSError(errno.EROFS, "Read-only file system", str(folder / ".results.csv.x.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    r = CliRunner().invoke(app, ["results", "tiny"])
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert f"cannot write in {folder}: Read-only file system" in r.output


def test_two_commands_creating_one_fresh_study_at_once(fast, tmp_path, monkeypatch):
    """Each thread opens its own storage; every one checks that the schema is not stamped yet
    before any stamps it (the window the race needs), unless the creation lock keeps them apart."""
    from optuna.storages._rdb.storage import _VersionManager

    config = resolve(fast)
    folder = tmp_path / "studies" / "tiny"
    check_or_save(config, folder)
    url = f"sqlite:///{folder / 'optuna.db'}"
    n = 4
    window = threading.Barrier(n, timeout=1.0)
    real = _VersionManager._set_alembic_revision

    def stamp(self, revision):
        try:
            window.wait()
        except threading.BrokenBarrierError:  # the others are kept out: nothing to wait for
            pass
        return real(self, revision)

    monkeypatch.setattr(_VersionManager, "_set_alembic_revision", stamp)
    errors, start = [], threading.Barrier(n)

    def create():
        start.wait()
        try:
            create_study(config, url)
        except Exception as e:  # noqa: BLE001 - collected and shown
            errors.append(repr(e))

    threads = [threading.Thread(target=create) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    study = _study(tmp_path)
    assert counts(study)["WAITING"] == 3  # created and queued once


def test_a_worker_of_a_study_that_does_not_exist_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["worker", "nosuch", "--storage", f"sqlite:///{tmp_path / 'fresh.db'}"])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "no study 'nosuch'" in r.output, r.output
    assert not (tmp_path / "fresh.db").exists()


def test_a_damaged_storage_is_told_in_one_line_and_repaired(fast, tmp_path):
    import json

    assert search(fast).exit_code == 0
    folder = tmp_path / "studies" / "tiny"
    db = folder / "optuna.db"
    before = _trained(_study(tmp_path))
    snap = json.loads((folder / "trials.json").read_text())
    assert [len(x["trials"]) for x in snap["studies"]] == [3]
    # Forget one network in the snapshot (as if it finished after the last snapshot), then damage the file.
    snap["studies"][0]["trials"] = snap["studies"][0]["trials"][1:]
    (folder / "trials.json").write_text(json.dumps(snap))
    db.write_bytes(db.read_bytes()[:4096] + b"\0" * 4096)
    for cmd in (["search", "--study", str(fast), "-q", "--no-report"],
                ["family", "--train", "--study", str(fast), "--phi", "0", "--no-official", "-q", "--no-report"]):
        r = CliRunner().invoke(app, cmd)
        _last_line_only_error(r, str(db), "is damaged", "`scaling study repair tiny`")
    r = CliRunner().invoke(app, ["study", "repair", "tiny"])
    assert r.exit_code == 0, r.output
    assert "2 finished trial(s) kept, 1 network(s) queued again" in r.output and "trials.json" in r.output
    assert len(list(folder.glob("optuna.db.damaged-*"))) == 1
    r = search(fast)
    assert r.exit_code == 0, r.output
    after = _trained(_study(tmp_path))
    assert len(after) == 3 and set(after) == set(before)  # two kept, the forgotten one trained again
    r = CliRunner().invoke(app, ["study", "repair", "tiny"])
    assert r.exit_code == 2 and "nothing to repair" in r.output


def test_a_killed_report_writer_leaves_a_temporary_file_the_next_write_removes(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from scaling.files import atomic_path as atomic  # every file the tool writes whole, reports included

    path = tmp_path / "report.pdf"
    code = ("import sys, time\nfrom pathlib import Path\nfrom scaling.files import atomic_path as atomic\n"
            f"with atomic(Path({str(path)!r})) as tmp:\n    tmp.write_text('half')\n    print(tmp, flush=True)\n"
            "    time.sleep(120)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    left = Path(p.stdout.readline().strip())
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert left.exists() and left.name.startswith(".report.pdf.")
    older = tmp_path / ".report.pdf.abc123.tmp"  # an older version's name, without a process id
    older.write_text("half")
    mine = tmp_path / f".report.pdf.{os.getpid()}.live.tmp"  # a writer still at work
    mine.write_text("half")
    aged = tmp_path / f".report.pdf.{os.getpid()}.aged.tmp"
    aged.write_text("half")
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(aged, (day_ago, day_ago))
    with atomic(path) as tmp:
        tmp.write_text("whole")
    assert path.read_text() == "whole"
    assert sorted(x.name for x in tmp_path.iterdir()) == sorted(["report.pdf", mine.name])
