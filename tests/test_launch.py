"""Workers started ahead of their study (scaling.pool.launched, `scaling worker --wait`): they
start while the search loads the data and makes the study, wait for the pool's word, then
train; told nothing (a bad input, an interruption), they leave nothing running and nothing
written.

On the CPU: the workers a GPU search starts run on the CPU here (their device swapped in
``_spawn``), the MPS daemon is the stand-in of tests/test_mps.py, the kernels' compile is
stood in for. Exact: processes, exit codes, trials, what the search does in which order.
"""

from __future__ import annotations

import io
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console
from test_mps import _alive, control  # noqa: F401 - the stand-in daemon, a fixture
from test_search import TOML

from scaling import mps, pool
from scaling.search import create_study
from scaling.study import resolve
from scaling.worker import GO, wait_for_go


@pytest.fixture
def tiny(tmp_path):
    """The tiny grid of tests/test_search.py cut to two networks: its definition and URL, no study yet."""
    (tmp_path / "tiny.toml").write_text(TOML)
    config = resolve(tmp_path / "tiny.toml").replace(trials=2)
    (tmp_path / "studies" / "tiny").mkdir(parents=True)
    return config, f"sqlite:///{tmp_path / 'studies' / 'tiny' / 'optuna.db'}"


@pytest.fixture
def on_cpu(monkeypatch, control):  # noqa: F811
    """A GPU search's pool, its workers on the CPU, its daemon the stand-in; the processes it spawned."""
    spawned = []
    real = pool._spawn

    def spawn(config, url, env, device, wait=False):
        spawned.append(real(config, url, env, "cpu", wait))
        return spawned[-1]

    monkeypatch.setattr(pool, "_spawn", spawn)
    monkeypatch.setattr(mps, "control_binary", lambda environ=None: control)
    monkeypatch.setattr(pool, "_start_speed_pass", lambda *a, **k: None)
    monkeypatch.setattr(pool, "_speed_pass", lambda *a, **k: None)
    return spawned


class Compiled:
    def wait(self, say=None):
        return 0.0


def test_wait_for_go_says_how_long_it_waited_or_that_it_was_never_told():
    assert wait_for_go("cpu", io.StringIO(GO + "\n")) >= 0.0
    assert wait_for_go("cpu", io.StringIO("")) is None  # the search ended first
    assert wait_for_go("cpu", io.StringIO("something else\n")) is None


def test_workers_started_before_the_study_exists_train_it_once_told(tiny, on_cpu, monkeypatch):
    config, url = tiny
    monkeypatch.setattr(pool, "per_gpu_of", lambda config: 2)
    out = io.StringIO()
    with pool.launched(config, url, [0], Console(file=out, width=200)) as launch:
        assert launch.per_gpu == 2 and len(launch.started) == 2 and launch.started == on_cpu
        pipe = launch.workers[0][0]["CUDA_MPS_PIPE_DIRECTORY"]
        assert {env["CUDA_MPS_PIPE_DIRECTORY"] for env, _ in launch.workers} == {pipe}  # one daemon for both
        assert all(p.poll() is None for p in launch.started)  # waiting, with no study to train yet
        study = create_study(config, url, num_classes=10)
        code = pool.run_pool(config, url, study, [0], 1, True, console=Console(file=out, width=200),
                             compiling=Compiled(), launch=launch)
        assert mps.daemon_processes(pipe) == set()  # the pool ended it with the workers
    assert code == 0, out.getvalue()
    assert [p.returncode for p in on_cpu] == [0, 0]
    assert len(on_cpu) == 2  # the pool told those started ahead, and started no others
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 2 and len({t.user_attrs["network"] for t in done}) == 2
    assert {int(t.user_attrs["worker"].rsplit(":", 1)[1]) for t in done} <= {p.pid for p in on_cpu}
    assert all(t.user_attrs.get("worker_start_s") is None or t.user_attrs["worker_start_s"] >= 0 for t in done)
    assert "2 workers on each of 1 GPU" in out.getvalue()


def test_a_forked_worker_that_cannot_use_what_it_inherited_runs_as_a_fresh_interpreter(tiny, on_cpu, monkeypatch):
    import time
    from pathlib import Path

    from scaling.forked import Forked

    config, url = tiny
    monkeypatch.setattr(pool, "per_gpu_of", lambda config: 1)
    monkeypatch.setattr("scaling.forked.usable_here", lambda device="cuda": False)  # as after CUDA started here
    out = io.StringIO()
    with pool.launched(config, url, [0], Console(file=out, width=200)) as launch:
        (p,) = launch.started
        assert isinstance(p, Forked)
        deadline = time.time() + 60
        while "worker" not in Path(f"/proc/{p.pid}/cmdline").read_bytes().decode() and time.time() < deadline:
            time.sleep(0.05)
        # the same process, a fresh program
        assert b"scaling.cli\0worker\0tiny" in Path(f"/proc/{p.pid}/cmdline").read_bytes()
        study = create_study(config, url, num_classes=10)
        code = pool.run_pool(config, url, study, [0], 1, True, console=Console(file=out, width=200),
                             compiling=Compiled(), launch=launch)
    assert code == 0 and p.returncode == 0, out.getvalue()
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 2 and {int(t.user_attrs["worker"].rsplit(":", 1)[1]) for t in done} == {p.pid}


@pytest.mark.parametrize("per_gpu", [1, 2])
def test_workers_never_told_to_begin_leave_nothing_running_or_written(tiny, on_cpu, monkeypatch, per_gpu):
    config, url = tiny
    monkeypatch.setattr(pool, "per_gpu_of", lambda config: per_gpu)
    with pytest.raises(RuntimeError, match="bad data"):
        with pool.launched(config, url, [0], Console(file=io.StringIO())) as launch:
            pids = [p.pid for p in launch.started]
            pipe = launch.workers[0][0].get("CUDA_MPS_PIPE_DIRECTORY")
            assert len(pids) == per_gpu and (pipe is not None) == (per_gpu > 1)
            raise RuntimeError("bad data")  # the search stops before it makes the study
    assert all(p.returncode is not None for p in on_cpu) and not any(_alive(pid) for pid in pids)
    if pipe is not None:
        assert mps.daemon_processes(pipe) == set()
    assert "tiny" not in optuna.get_all_study_names(storage=url)


def test_a_worker_told_nothing_exits_quietly_with_code_0(tiny):
    config, url = tiny
    p = subprocess.Popen([sys.executable, "-m", "scaling.cli", "worker", config.name, "--storage", url, "--device",
                          "cpu", "-q", "--wait"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    out, _ = p.communicate("", timeout=120)
    assert (p.returncode, out) == (0, "")


def test_no_gpus_launch_nothing(tiny):
    config, url = tiny
    with pool.launched(config, url, []) as launch:
        assert launch is None


def test_the_search_starts_its_workers_before_the_data_and_tells_them_after_the_study(tiny, monkeypatch, tmp_path):
    from contextlib import contextmanager

    from typer.testing import CliRunner

    import torch

    from scaling.cli import searching
    from scaling.cli.app import app

    monkeypatch.chdir(tmp_path)
    order = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(searching, "_compiling", contextmanager(lambda ids: (yield None)))

    @contextmanager
    def launched(config, url, gpu_ids, console=None, start=True):
        order.append(("launched", gpu_ids))
        yield "the launch"
        order.append("launch ended")

    real_load = searching._load_data
    monkeypatch.setattr(pool, "launched", launched)
    monkeypatch.setattr(searching, "_load_data", lambda *a, **k: order.append("data") or real_load(*a, **k))
    monkeypatch.setattr(searching, "execute", lambda *a, **k: order.append(("pool", k["launch"])) or 0)
    monkeypatch.setattr(searching, "_summarize", lambda *a, **k: None)
    r = CliRunner().invoke(app, ["search", "--study", str(tmp_path / "tiny.toml"), "--gpus", "0", "-q",
                                 "--no-report", "--studies-dir", str(tmp_path / "studies")])
    assert r.exit_code == 0, r.output
    assert order == [("launched", [0]), "data", ("pool", "the launch"), "launch ended"]


def test_ctrl_c_before_the_word_is_the_searchs_to_say_not_the_waiting_workers(tiny):
    import signal

    config, url = tiny
    proc = pool._spawn(config, url, {}, "cpu", wait=True)
    import time

    proc.send_signal(signal.SIGINT)  # as the terminal sends it to the whole group, during the worker's start
    time.sleep(0.5)
    assert proc.poll() is None  # still starting, or waiting for the word
    pool._stop_waiting([proc])  # what the search does on its way out
    # stopped by the search (its input closed: it leaves with 0; still starting: SIGTERM), not
    # ended by its own KeyboardInterrupt (130)
    assert proc.returncode in (0, -signal.SIGTERM)
