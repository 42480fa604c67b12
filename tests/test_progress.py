"""Progress while a search runs: the snapshot read from a study's storage, its text, the
plain lines a log gets (the summary line of a run of two workers: test_search's end-to-end search)."""

import datetime as dt
import io

import optuna
import pytest
import sqlalchemy.exc
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial
from rich.console import Console

from scaling.progress import (ELSEWHERE, STARTING, Display, RunningTrial, Watcher, render, snapshot, summary,
                              worker_place)
from scaling.study import StudyConfig

START = dt.datetime(2025, 3, 1, 12, 0, 0)  # this run's start
WORKERS = {"gpuhost:101": 0, "gpuhost:102": 1, "gpuhost:103": 0}  # what the parent gave each child


def minutes(m: float) -> dt.datetime:
    return START + dt.timedelta(minutes=m)


def trial(state, k=None, *, start=None, end=None, **attrs):
    t = create_trial(state=state, value=0.5 if state == TrialState.COMPLETE else None, user_attrs=attrs,
                     system_attrs={"fixed_params": {"candidate": k, "seed": 0}} if k is not None else {},
                     params={"candidate": k} if k is not None and state != TrialState.WAITING else {},
                     distributions={"candidate": IntDistribution(0, 20)} if k is not None and state != TrialState.WAITING
                     else {})
    if state != TrialState.WAITING:
        t.datetime_start = start or minutes(-1)
    if state.is_finished():
        t.datetime_complete = end
    return t


@pytest.fixture
def study_url(tmp_path):
    """A grid study of 10 networks on SQLite, part of it done before this run (no training)."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="p", storage=url, direction="maximize")
    study.set_user_attr("enqueued", 10)
    for t in [
        trial(TrialState.COMPLETE, 0, start=minutes(-70), end=minutes(-60)),  # 0: an earlier run's
        trial(TrialState.COMPLETE, 1, end=minutes(10), worker="gpuhost:101", triples="(1.2, 1.1, 1.15)"),  # 1
        trial(TrialState.FAIL, 2, end=minutes(5), worker="gpuhost:102"),  # 2: its worker died; retried by 6
        trial(TrialState.FAIL, 3, end=minutes(12), worker="gpuhost:103", reason="nan: loss became nan"),  # 3
        trial(TrialState.COMPLETE, 4, end=minutes(20), worker="gpuhost:101"),  # 4
        trial(TrialState.RUNNING, 5, start=minutes(21), worker="gpuhost:101", triples="(1.0, 1.2, 1.2)"),  # 5
        trial(TrialState.RUNNING, 2, start=minutes(6), worker="gpuhost:102", triples="(1.1, 1.1, 1.2)"),  # 6
        trial(TrialState.RUNNING, 6, start=minutes(13), worker="gpuhost:103"),  # 7
        trial(TrialState.RUNNING, 7, start=minutes(30), worker="laptop:9"),  # 8: a `scaling worker` elsewhere
        trial(TrialState.RUNNING, 8, start=minutes(35)),  # 9: just popped, no worker recorded yet
        trial(TrialState.WAITING, 9),  # 10
        trial(TrialState.PRUNED, end=minutes(25), skipped=True),  # 11: a worker found the queue empty
    ]:
        study.add_trial(t)
    return url


def test_snapshot_of_a_study_read_from_its_storage(study_url):
    w = Watcher(StudyConfig(name="p"), study_url, WORKERS, clock=iter([START, minutes(36)]).__next__)
    p = w.read()
    assert (p.total, p.done, p.failed, p.pruned, p.waiting, p.remaining) == (10, 3, 1, 0, 1, 6)
    assert p.finished == 3  # 1, 3 and 4 ended in this run; 0 before it; 2 was retried
    assert p.elapsed_s == 36 * 60
    assert p.rate == pytest.approx(5.0)  # 3 trials in 0.6 h
    assert p.eta_s == pytest.approx(72 * 60)  # 6 left at 5 an hour
    assert p.per_gpu() == {0: 2, 1: 1, ELSEWHERE: 1, STARTING: 1}
    assert p.running[:2] == (RunningTrial(5, "gpuhost:101", 0, "(1.0, 1.2, 1.2)", minutes(21)),
                             RunningTrial(6, "gpuhost:102", 1, "(1.1, 1.1, 1.2)", minutes(6)))
    assert render(p) == ("3/10 networks · 5 running (GPU 0: 2, GPU 1: 1, elsewhere: 1, starting: 1) · "
                         "5.00 trials/h · about 72 min left · 1 failed")
    assert render(p, detail=True).splitlines()[1] == (
        "running: trial 5 (1.0, 1.2, 1.2) on GPU 0; trial 6 (1.1, 1.1, 1.2) on GPU 1; trial 7 on GPU 0; "
        "trial 8 on a worker elsewhere; and 1 more")
    assert summary(p, "p") == "study p: 3/10 networks done, 1 failed, 36 min wall, 5.00 trials/h"


def test_each_worker_is_placed_on_the_gpu_its_environment_names():
    # As execute starts them: one per GPU, K per GPU under MPS, N on the CPU.
    assert worker_place({"CUDA_VISIBLE_DEVICES": "3"}, "cuda:0") == 3
    assert worker_place({"CUDA_MPS_PIPE_DIRECTORY": "/tmp/mps", "CUDA_VISIBLE_DEVICES": "1"}, "cuda:0") == 1
    assert worker_place({"OMP_NUM_THREADS": "1"}, "cpu") == "cpu"


def test_a_failed_refresh_keeps_the_last_snapshot(study_url, tmp_path, monkeypatch):
    w = Watcher(StudyConfig(name="p"), study_url, WORKERS)
    first = w.read()
    assert first is not None

    def locked(**kw):
        raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("database is locked"))

    monkeypatch.setattr(w._study, "get_trials", locked)
    assert w.read() is first and w.latest is first
    # A storage not there (yet): no snapshot, no error.
    assert Watcher(StudyConfig(name="p"), f"sqlite:///{tmp_path / 'none.db'}").read() is None


def test_the_watcher_thread_hands_on_snapshots(study_url):
    seen = []
    w = Watcher(StudyConfig(name="p"), study_url, WORKERS, every=0.05, on_snapshot=seen.append).start()
    try:
        for _ in range(200):
            if len(seen) >= 2:
                break
            import time

            time.sleep(0.05)
    finally:
        w.stop()
    assert len(seen) >= 2 and seen[0].done == 3 and seen[0].total == 10


def test_a_resumed_study_has_no_rate_until_this_run_finishes_a_trial():
    old = [trial(TrialState.COMPLETE, k, start=minutes(-50), end=minutes(-40)) for k in range(4)]
    p = snapshot(old + [trial(TrialState.RUNNING, 4, start=minutes(0), worker="h:1"),
                        trial(TrialState.PRUNED, 5, end=minutes(-30))],
                 total=8, started=START, now=minutes(2), workers={"h:1": "cpu"})
    assert (p.done, p.pruned, p.remaining, p.finished, p.rate, p.eta_s) == (4, 1, 3, 0, None, None)
    assert render(p) == "4/8 networks · 1 running (CPU: 1) · no trial finished yet (2 min in) · 1 pruned"
    # tpe and random: a pruned trial does not use up the budget.
    p = snapshot(old + [trial(TrialState.PRUNED, 5, end=minutes(1))], total=8, started=START, now=minutes(2),
                 count_pruned=False)
    assert (p.remaining, p.finished) == (4, 0)
    done = snapshot(old, total=4, started=START, now=minutes(1))
    assert done.eta_s == 0 and render(done) == "4/4 networks · 0 running · nothing left to start"
    assert summary(done) == "4/4 networks done, 0 failed, 60 s wall, no trial finished in this run"


def test_a_log_gets_a_line_per_network_and_otherwise_at_most_one_each_30_s():
    out, clock = io.StringIO(), [0.0]
    display = Display(Console(file=out, force_terminal=False, width=300), plain_every=30, clock=lambda: clock[0])

    def at(t, done, n_running, elapsed=None):
        clock[0] = t
        display.show(snapshot([trial(TrialState.COMPLETE, k, end=minutes(1)) for k in range(done)]
                              + [trial(TrialState.RUNNING, 10 + i, start=START, worker="h:1") for i in range(n_running)],
                              total=5, started=START, now=START + dt.timedelta(seconds=elapsed or t + 60),
                              workers={"h:1": "cpu"}))

    with display:
        at(0, 0, 2)  # the first: printed
        at(2, 0, 2)  # nothing changed
        at(4, 0, 1)  # the running count changed, but within 30 s
        at(20, 0, 2)
        at(35, 0, 2)  # 30 s on, as printed last (only the clock moved): not printed
        at(42, 1, 1)  # a network finished: printed at once
        at(44, 1, 2)
        at(80, 1, 2)  # 30 s on and something else changed: printed
    assert out.getvalue().splitlines() == [
        "0/5 networks · 2 running (CPU: 2) · no trial finished yet (60 s in)",
        "1/5 networks · 1 running (CPU: 1) · 35.3 trials/h · about 7 min left",
        "1/5 networks · 2 running (CPU: 2) · 25.7 trials/h · about 9 min left"]
    quiet = io.StringIO()
    with Display(Console(file=quiet, force_terminal=False), quiet=True) as d:
        d.show(snapshot([], total=5, started=START, now=START))
    assert quiet.getvalue() == ""


# End to end (two CPU workers, their summary line and the last progress line): the end-to-end search of
# test_search, test_small_grid_end_to_end_with_two_workers_and_resume, runs without -q and checks them.


def test_worker_gpus_go_through_the_users_mask():
    from scaling.pool import visible

    assert visible(0, {}) == "0" and visible(3, {}) == "3"
    assert visible(0, {"CUDA_VISIBLE_DEVICES": "2,3"}) == "2"
    assert visible(1, {"CUDA_VISIBLE_DEVICES": " 2, 3 "}) == "3"
    assert visible(0, {"CUDA_VISIBLE_DEVICES": "GPU-0ee5f556"}) == "GPU-0ee5f556"
    assert visible(0, {"CUDA_VISIBLE_DEVICES": ""}) == "0"
