"""The search on the CPU: a small grid end to end, resume, faults by injection, many workers, bad input."""

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from typer.testing import CliRunner

from scaling.cli import app
from scaling.compound import PAPER
from scaling.search import spread_order, study_candidates
from scaling.study import StudyConfig, StudyError, check_or_save, read_toml, resolve
from scaling.worker import counts

# A grid of a few tiny networks on a few embedded images: seconds per trial on 2 cores.
TOML = """
name = "tiny"
[data]
source = "default"
base_resolution = 32
train_size = 100
val_size = 50
[grid]
phi = 1
alpha = [1.0, 1.2]
beta = [1.0, 1.2]
gamma = [1.0, 1.2]
step = 0.1
tolerance = 0.2
base_width = 0.25
base_depth = 0.25
# At 32 px and width 0.25 one resolution step moves FLOPs by ~50%: 10% would hold none of these
# 8 networks, 50% holds them all.
flops_tolerance = 0.5
[search]
sampler = "grid"
[recipe]
name = "proxy"
epochs = 1
batch_size = 50
"""

ENV = {"SCALING_HEARTBEAT": "1", "SCALING_GRACE": "3"}
# Trials of a few seconds, so that a signal surely lands in one.
# Two of the grid's networks, one for each of two processes that run at once, so that a re-run that
# trains them all stays short on a loaded machine.
SLOW = (TOML.replace("train_size = 100", "train_size = 600").replace("epochs = 1", "epochs = 3")
        .replace('sampler = "grid"', 'sampler = "grid"\ntrials = 2'))


def n_queued(config: StudyConfig) -> int:
    """The networks a grid study trains: its first ``trials`` in spread order, or all."""
    return min(config.trials or 10**9, len(study_candidates(config)))


@pytest.fixture
def study_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "tiny.toml"
    f.write_text(TOML)
    return f


def trials_by_network(folder: Path, name="tiny"):
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'optuna.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and not t.user_attrs.get("duplicate_of")]
    return study, [t.user_attrs["network"] for t in done]


def test_study_file_and_definition(study_file, tmp_path):
    c = resolve(study_file, phi=None, trials=2)
    assert (c.name, c.base_resolution, c.step, c.trials, c.base_width) == ("tiny", 32, 0.1, 2, 0.25)
    assert c.training_recipe().epochs == 1
    n = len(study_candidates(c))
    assert n >= 3
    bad = tmp_path / "bad.toml"
    bad.write_text(TOML.replace("step = 0.1", "stride = 0.1"))
    with pytest.raises(StudyError, match="unknown key 'stride' in \\[grid\\]"):
        read_toml(bad)
    check_or_save(c, tmp_path / "s")
    check_or_save(c, tmp_path / "s")  # same definition: fine
    with pytest.raises(StudyError, match="other settings"):
        check_or_save(c.replace(trials=3), tmp_path / "s")


def test_spread_order_starts_at_the_paper():
    cands = study_candidates(StudyConfig())
    order = spread_order(cands)
    assert sorted(order) == list(range(len(cands))) == list(range(25))  # held to their FLOPs at 224 px
    assert PAPER in cands[order[0]].triples


def test_small_grid_end_to_end_with_two_workers_and_resume(study_file, tmp_path, monkeypatch):
    # Two worker processes share the study (with the short heartbeat); this command waits for them, then
    # ranks the networks and writes the report. (Two prove the sharing as four did: each of the 8
    # networks trained exactly once; each more worker only costs its start-up on 2 cores.)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    r = CliRunner().invoke(app, ["search", "--study", str(study_file), "--workers", "2"])
    assert r.exit_code == 0, r.output
    folder = tmp_path / "studies" / "tiny"
    n = len(study_candidates(resolve(study_file)))
    # Not quiet: the workers' progress ends with a summary line, and the log's plain progress lines
    # with one saying all are done (what test_progress checked on a run of its own, two networks).
    lines = r.output.splitlines()
    done = [x for x in lines if x.startswith("study tiny: ")]
    assert len(done) == 1 and done[0].startswith(f"study tiny: {n}/{n} networks done, 0 failed, "), r.output
    assert done[0].endswith(" trials/h"), r.output
    progress = [x for x in lines if " networks · " in x]
    assert progress and progress[-1] == f"{n}/{n} networks · 0 running · nothing left to start", r.output
    study, nets = trials_by_network(folder)
    assert sorted(nets) == sorted(set(nets)) and len(nets) == n  # every network once
    df = pd.read_csv(folder / "results.csv")
    assert len(df) == n and list(df["rank"]) == list(range(1, n + 1))
    assert (df["top1"].between(0, 1)).all() and df["top1"].is_monotonic_decreasing
    assert {"alpha", "beta", "gamma", "flops", "params", "resolution"} <= set(df.columns)
    t = study.trials[0]
    for key in ("alpha", "d", "w", "r", "params", "flops", "curve", "images_per_second", "seed", "device",
                "code_version", "wall_s"):
        assert key in t.user_attrs, key
    assert "best by top-1: (alpha, beta, gamma)" in r.output
    # Running it again trains nothing more.
    before = len(study.trials)
    r = CliRunner().invoke(app, ["search", "--study", str(study_file), "-q", "--no-report"])
    assert r.exit_code == 0 and len(trials_by_network(folder)[0].trials) == before
    # A changed definition under the same name is refused.
    r = CliRunner().invoke(app, ["search", "--study", str(study_file), "--trials", "1", "-q", "--no-report"])
    assert r.exit_code == 2 and "other settings" in r.output
    # The results command reads it back.
    r = CliRunner().invoke(app, ["results", "tiny"])
    assert r.exit_code == 0 and "networks trained" in r.output
    # The first run wrote the report (the later ones were told not to).
    assert (tmp_path / "reports" / "tiny" / "index.html").stat().st_size > 0
    assert (tmp_path / "reports" / "tiny" / "report.pdf").read_bytes()[:5] == b"%PDF-"
    # optuna-dashboard reads the storage: the study and its trials through its JSON API.
    studies = _dashboard(folder / "optuna.db", "/api/studies")["study_summaries"]
    assert [s["study_name"] for s in studies] == ["tiny"]
    detail = _dashboard(folder / "optuna.db", f"/api/studies/{studies[0]['study_id']}")
    assert len(detail["trials"]) == before
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'optuna.db'}")
    assert {t["number"]: t["state"] for t in detail["trials"]} == {t.number: t.state.name.capitalize()
                                                                  for t in study.trials}
    # Every network's trial complete; any other is a worker's that found the queue empty (skipped, pruned).
    assert sum(t["state"] == "Complete" for t in detail["trials"]) == n
    assert all(t.state == optuna.trial.TrialState.PRUNED and t.user_attrs.get("skipped")
               for t in study.trials if t.state != optuna.trial.TrialState.COMPLETE)


def _dashboard(db: Path, path: str) -> dict:
    import io
    import json
    from wsgiref.util import setup_testing_defaults

    pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is a test extra")
    from optuna_dashboard import wsgi

    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(wsgi(f"sqlite:///{db}")(environ, lambda s, h, exc=None: status.append(s)))
    assert status[0].startswith("200"), (status, body[:300])
    return json.loads(body)


def _spawn(args, tmp_path, sharing=1):
    """``python -m scaling.cli ARGS`` in ``tmp_path``. ``sharing``: how many such processes train at
    once; each gets its share of the cores, as the search's own workers do (more threads than cores
    makes every process crawl)."""
    env = dict(os.environ, **ENV, SCALING_CACHE=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    if sharing > 1:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // sharing))
    return subprocess.Popen([sys.executable, "-m", "scaling.cli", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def slow_study_file(study_file):
    study_file.write_text(SLOW)
    return study_file


def _running(db: Path, name="tiny") -> list[tuple[int, str]]:
    """(number, worker) of the study's trials in training with no epoch reported yet: its network
    recorded, no intermediate value. Read from the SQLite file itself, which costs a millisecond
    where ``optuna.load_study`` costs a tenth of a second of the CPU the command being waited for needs."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
        rows = con.execute(
            "SELECT t.number, a.value_json FROM trials t JOIN studies s ON s.study_id = t.study_id "
            "JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'worker' "
            "WHERE s.study_name = ? AND t.state = 'RUNNING' AND NOT EXISTS "
            "(SELECT 1 FROM trial_intermediate_values v WHERE v.trial_id = t.trial_id)", (name,)).fetchall()
    return [(number, json.loads(worker)) for number, worker in rows]


def _wait_running(folder: Path, proc=None, timeout=300) -> int | None:
    """Until a trial of ``proc`` (of any process without one) is in training: its network recorded,
    no epoch reported yet. Returns its number. Polls: a loaded machine may take long to start.
    ``timeout=0``: one look, None where no such trial runs yet."""
    t0 = time.time()
    while True:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the command ended ({proc.returncode}) before a trial ran: {proc.stdout.read()}")
        if (folder / "optuna.db").exists():
            try:
                for number, worker in _running(folder / "optuna.db"):
                    # a killed process's trial stays RUNNING until it goes stale: not the one asked for
                    if proc is None or worker.endswith(f":{proc.pid}"):
                        return number
            except sqlite3.OperationalError:  # not created yet, being created, or locked by a writer
                pass
        if timeout == 0:
            return None
        if time.time() - t0 > timeout:
            raise AssertionError("no trial started")
        time.sleep(0.05)


def _signal_each_once_running(folder: Path, procs: dict) -> dict:
    """Send each process of ``procs`` (name -> (process, signal)) its signal as soon as its own trial is
    in training; the trials' numbers, by name. The processes start together: their start-ups overlap."""
    numbers, t0 = {}, time.time()
    while len(numbers) < len(procs):
        assert time.time() - t0 < 300, f"no trial started by {sorted(set(procs) - set(numbers))}"
        for name, (proc, signum) in procs.items():
            if name not in numbers:
                number = _wait_running(folder, proc, timeout=0)
                if number is not None:
                    proc.send_signal(signum)
                    numbers[name] = number
        time.sleep(0.05)
    return numbers


def test_ctrl_c_sigterm_sigkill_of_a_worker_and_of_the_command_then_resume(slow_study_file, tmp_path):
    """One study through each way a run stops, each stage starting where the last one left it (one
    study's start-up and re-run for all four): Ctrl+C and SIGTERM to a search end it in one line,
    its trial marked failed and queued again; SIGKILL of a `scaling worker` and of the whole search
    command leave their trials RUNNING, to go stale; a search re-run waits them out and trains every
    network exactly once. The two processes of each stage start together (their start-ups overlap)."""
    from scaling.results import failures_frame

    study_file = slow_study_file
    config = resolve(study_file)
    folder = tmp_path / "studies" / "tiny"
    url = f"sqlite:///{folder / 'optuna.db'}"
    search = ["search", "--study", str(study_file), "-q", "--no-report"]
    said = "interrupted: the running trial is marked failed and queued again; run the same command to resume"

    # 1. Ctrl+C to one search, SIGTERM to another: each ends in one line, the last, its trial marked failed
    # and queued again; no summary table after it; Optuna's warning with the trial's traceback is silenced.
    procs = {signum: (_spawn(search, tmp_path, sharing=2), signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    interrupted = _signal_each_once_running(folder, procs)
    for signum, (p, _) in procs.items():
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 128 + signum, out
        lines = out.strip().splitlines()
        assert lines[-1] == said and sum("interrupted:" in line for line in lines) == 1, out
        assert "Study tiny" not in out and "aborted" not in out, out
        assert "Traceback" not in out and "failed with" not in out, out
    study = optuna.load_study(study_name="tiny", storage=url)
    assert counts(study)["RUNNING"] == 0 and counts(study)["FAIL"] == 2
    for number in interrupted.values():
        assert study.trials[number].state == optuna.trial.TrialState.FAIL
        assert study.trials[number].user_attrs.get("reason") == "interrupted"
    assert (folder / "results.csv").exists()  # the ranking so far

    # 2. SIGKILL of a worker of the study and of the whole search command, each in its trial.
    worker = ["worker", "tiny", "--storage", url, "--device", "cpu", "-q"]
    procs = {"worker": (_spawn(worker, tmp_path, sharing=2), signal.SIGKILL),
             "command": (_spawn(search, tmp_path, sharing=2), signal.SIGKILL)}
    lost = _signal_each_once_running(folder, procs)
    for p, _ in procs.values():
        p.wait(timeout=60)
    lost_worker, lost_command = lost["worker"], lost["command"]
    assert len({*interrupted.values(), lost_worker, lost_command}) == 4

    # 3. The re-run waits out the stale heartbeats and trains every network exactly once.
    p = _spawn(search, tmp_path)
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out
    study, nets = trials_by_network(folder)
    assert len(nets) == len(set(nets)) == n_queued(config)
    c = counts(study)
    assert c["RUNNING"] == 0 and c["WAITING"] == 0
    assert c["FAIL"] == 4  # the two interrupted, and the two killed ones, each failed once by its stale heartbeat
    fails = failures_frame(study)  # each listed as recovered, with what happened to it
    assert dict(zip(fails["trial"], fails["reason"])) == {
        **dict.fromkeys(interrupted.values(), "interrupted"), lost_worker: "worker lost, retried",
        lost_command: "worker lost, retried"}
    assert fails["recovered"].tolist() == [True] * 4
    assert len(pd.read_csv(folder / "results.csv")) == len(nets)


@pytest.mark.parametrize("args, names", [
    (["--phi", "11"], "--phi"),
    (["--sampler", "bogus"], "sampler"),
    (["--storage", "nosuchdb://x/y"], "storage"),
    (["--storage", "postgresql://nobody@127.0.0.1:1/none"], "storage"),
    (["--data", "/no/such/data"], "--data"),
    (["--gpus", "5"], "--gpus"),
    (["--trials", "0"], "--trials"),
])
def test_bad_input(args, names, study_file, tmp_path):
    r = CliRunner().invoke(app, ["search", "--study", str(study_file), *args])
    assert r.exit_code == 2, r.output
    assert len(r.output.strip().splitlines()) == 1 and names in r.output, r.output
    assert not (tmp_path / "studies").exists()


def test_bad_study_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "x.toml"
    f.write_text("colour = 'red'\n" + TOML)
    r = CliRunner().invoke(app, ["search", "--study", str(f)])
    assert r.exit_code == 2 and "unknown key 'colour'" in r.output
    assert not (tmp_path / "studies").exists()


@pytest.mark.parametrize("name", ["default", "proxy", "imagenet-paper"])
def test_shipped_study_files_resolve(name):
    f = Path(__file__).parent.parent / "studies" / f"{name}.toml"
    c = resolve(f)
    assert c.name == name and c.sampler == "grid" and len(study_candidates(c)) > 10


def _postgres_url():
    url = os.environ.get("SCALING_TEST_POSTGRES")
    if not url:
        return None, "SCALING_TEST_POSTGRES is not set (.ci/run starts a PostgreSQL server and sets it)"
    try:
        import sqlalchemy

        sqlalchemy.create_engine(url).connect().close()
    except Exception as e:  # no driver, no server
        return None, f"PostgreSQL at {url} is not reachable: {str(e).splitlines()[0]}"
    return url, ""


def test_four_workers_on_postgresql(study_file, tmp_path):
    url, why = _postgres_url()
    if url is None:
        pytest.skip(why)
    name = f"tiny-{os.getpid()}-{int(time.time() * 1000)}"
    p = _spawn(["search", "--study", str(study_file), "--name", name, "--storage", url, "--workers", "4", "-q", "--no-report"],
               tmp_path)
    out, _ = p.communicate(timeout=400)
    assert p.returncode == 0, out
    study = optuna.load_study(study_name=name, storage=url)
    done = [t.user_attrs["network"] for t in study.trials
            if t.state == optuna.trial.TrialState.COMPLETE and not t.user_attrs.get("duplicate_of")]
    assert len(done) == len(set(done)) == len(study_candidates(resolve(study_file)))
    assert counts(study)["RUNNING"] == 0 and counts(study)["WAITING"] == 0


def test_failures_are_recorded_and_the_study_goes_on(study_file, tmp_path, monkeypatch):
    import scaling.train as t

    real, calls = t.compute_loss, {"n": 0}

    def poisoned(logits, labels, smoothing):  # the first trial diverges
        calls["n"] += 1
        loss = real(logits, labels, smoothing)
        return loss * float("nan") if calls["n"] == 1 else loss

    monkeypatch.setattr(t, "compute_loss", poisoned)
    study_file.write_text(TOML.replace('sampler = "grid"', 'sampler = "grid"\ntrials = 3'))  # 3 of the 8 are enough
    r = CliRunner().invoke(app, ["search", "--study", str(study_file), "-q", "--no-report"])
    assert r.exit_code == 0, r.output
    folder = tmp_path / "studies" / "tiny"
    study, nets = trials_by_network(folder)
    fails = [x for x in study.trials if x.state == optuna.trial.TrialState.FAIL]
    assert len(fails) == 1 and fails[0].user_attrs["reason"].startswith("nan: loss became nan")
    assert "1 failed trial:" in r.output and "nan: loss became nan" in r.output
    n = n_queued(resolve(study_file))
    assert n == 3 and len(nets) == n - 1 and len(pd.read_csv(folder / "results.csv")) == n - 1


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_samplers_over_the_constraint_surface(sampler, study_file, tmp_path):
    study_file.write_text(TOML.replace('alpha = [1.0, 1.2]', 'alpha = [1.0, 2.0]')
                          .replace('gamma = [1.0, 1.2]', 'gamma = [1.0, 1.5]')
                          .replace('sampler = "grid"', f'sampler = "{sampler}"'))
    r = CliRunner().invoke(app, ["search", "--study", str(study_file), "--trials", "4", "-q", "--no-report"])
    assert r.exit_code == 0, r.output
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'studies' / 'tiny' / 'optuna.db'}")
    real = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(real) == 4
    for t in real:  # gamma comes from the constraint: the product is the target
        assert t.user_attrs["product"] == pytest.approx(2.0, abs=2e-3)
    trained = [t.user_attrs["network"] for t in real if t.user_attrs.get("duplicate_of") is None]
    assert len(trained) == len(set(trained))  # a network proposed twice is not trained twice
    df = pd.read_csv(tmp_path / "studies" / "tiny" / "results.csv")
    assert len(df) == len(set(trained))


def test_a_trial_that_never_beat_goes_stale(tmp_path, monkeypatch):
    from optuna.storages import fail_stale_trials

    import scaling.storage as s

    monkeypatch.setattr(s, "HEARTBEAT_S", 1)
    monkeypatch.setattr(s, "GRACE_S", 1)
    storage = s.open_storage(f"sqlite:///{tmp_path / 'o.db'}")
    study = optuna.create_study(study_name="x", storage=storage)
    study.enqueue_trial({"candidate": 0, "seed": 0})
    study.ask()  # RUNNING, and no heartbeat is ever recorded: its worker "died" here
    fail_stale_trials(study)
    assert counts(study)["RUNNING"] == 1  # not before the grace period
    time.sleep(1.5)
    fail_stale_trials(study)
    c = counts(study)
    assert c["RUNNING"] == 0 and c["FAIL"] == 1 and c["WAITING"] == 1  # failed, and queued again once


def test_a_queued_trial_is_taken_by_one_worker_only(tmp_path):
    """Many processes' storages pop the same WAITING trials at once: each goes to exactly one."""
    import threading

    from scaling.storage import open_storage

    url = f"sqlite:///{tmp_path / 'race.db'}"
    study = optuna.create_study(study_name="race", storage=open_storage(url))
    for k in range(10):
        study.enqueue_trial({"x": k})
    ids = [t._trial_id for t in study.get_trials(deepcopy=False)]
    storages = [open_storage(url) for _ in range(4)]
    wins = {i: 0 for i in ids}
    lock = threading.Lock()

    def take(storage, barrier):
        for trial_id in ids:
            barrier.wait()
            if storage.set_trial_state_values(trial_id, optuna.trial.TrialState.RUNNING):
                with lock:
                    wins[trial_id] += 1

    barrier = threading.Barrier(len(storages))
    threads = [threading.Thread(target=take, args=(s, barrier)) for s in storages]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins == {i: 1 for i in ids}
    assert counts(optuna.load_study(study_name="race", storage=url))["RUNNING"] == 10


def test_candidates_are_held_to_their_flops_as_trained():
    import json

    from scaling.complexity import count
    from scaling.search import base_spec

    cpu = StudyConfig(base_resolution=40, base_width=0.25, base_depth=0.25)  # the CPU budget of `make run`
    held = study_candidates(cpu)  # the embedded data's 10 classes
    base = base_spec(cpu).replace(num_classes=10)
    assert len(held) == 20 and all(c.spec.num_classes == 10 for c in held)
    assert all(0.9 <= count(c.spec).flops / count(base).flops / 2 <= 1.1 for c in held)
    assert [c.spec for c in study_candidates(cpu, 1000)] != [c.spec for c in held]  # the classifier counts
    # A definition saved before the hold reopens with its own (unheld) candidates, in the same order.
    old = StudyConfig.from_json(json.dumps({k: v for k, v in cpu.to_dict().items() if k != "flops_tolerance"}))
    assert old.flops_tolerance is None and len(study_candidates(old)) > len(held)
    with pytest.raises(StudyError, match="flops_tolerance"):
        StudyConfig(flops_tolerance=0)


def test_a_study_grid_too_large_is_refused_in_one_line(study_file, tmp_path):
    study_file.write_text(TOML.replace("step = 0.1", "step = 0.00001"))
    r = CliRunner().invoke(app, ["search", "--study", str(study_file), "-q"])
    assert r.exit_code == 2, r.output
    size = resolve(study_file).grid().size
    assert size == 20001**3 and r.stderr.strip().count("\n") == 0 and f"the grid has {size:,} points" in r.stderr
    assert not (tmp_path / "studies" / "tiny" / "optuna.db").exists()


def test_largest_resolution_bounds_every_trial_of_the_study():
    from scaling.plans import Plan
    from scaling.search import largest_resolution, study_candidates
    from scaling.study import StudyConfig

    grid = StudyConfig(name="g", base_resolution=64, gamma=(1.0, 1.5), phi=1)
    assert largest_resolution(grid) == 96
    assert max(c.spec.resolution for c in study_candidates(grid)) <= 96
    family = StudyConfig(name="f", base_resolution=64,
                         plan=Plan("family", phis=[0, 1, 2, 3], alpha=1.2, beta=1.1, gamma=1.15).to_dict())
    assert largest_resolution(family) == 96  # 64 * 1.15^3 = 97.3, to a multiple of 8


def test_a_signal_inside_a_finalizer_stays_pending_and_is_not_printed():
    import gc
    import signal as sig
    import sys

    from scaling import signals

    old_int, old_term, old_hook = sig.getsignal(sig.SIGINT), sig.getsignal(sig.SIGTERM), sys.unraisablehook
    printed = []  # what Python's own hook would print as "Exception ignored in ..."
    sys.unraisablehook = lambda info: printed.append(type(info.exc_value).__name__)
    try:
        signals.install_signal_handlers()

        class Finalized:
            def __init__(self, fault):
                self.fault = fault

            def __del__(self):  # the signal arrives while a finalizer runs (a weakref callback, say)
                if self.fault == "signal":
                    signals._signals["window"] = True
                    try:
                        sig.raise_signal(sig.SIGTERM)
                    finally:
                        signals._signals["window"] = False
                else:
                    raise ValueError("another fault")

        Finalized("signal")
        gc.collect()
        assert printed == [] and signals._signals["pending"] == sig.SIGTERM
        with pytest.raises(signals.Interrupted) as e:  # the next safe point raises it
            signals.check_signals()
        assert e.value.exit_code == 143
        signals._signals["pending"] = None
        Finalized("other")
        gc.collect()
        assert printed == ["ValueError"]  # other faults in finalizers are printed as before
    finally:
        signals._signals["pending"] = None
        sig.signal(sig.SIGINT, old_int)
        sig.signal(sig.SIGTERM, old_term)
        sys.unraisablehook = old_hook
