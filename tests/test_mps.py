"""The MPS daemon's start and stop logic, against a stand-in for nvidia-cuda-mps-control."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from scaling import mps

# Behaves as the real control program does for what scaling uses: `-d` starts a daemon
# (here a sleeping process in its own session, which takes a moment to quit) and makes the
# control pipe; without `-d` it reads one command from stdin and fails when no daemon's
# pipe is there; `quit` ends the daemon and leaves its pipe behind.
DAEMON = ("import signal, sys, time\\nsignal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.3), sys.exit(0)))\\n"
          "while True: time.sleep(1)")
STAND_IN = """#!{python}
import os, signal, subprocess, sys
pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")
if os.environ.get("STAND_IN_FAIL"):
    print("An instance of this daemon is already running", file=sys.stderr)
    sys.exit(1)
if sys.argv[1:] == ["-d"]:
    p = subprocess.Popen([sys.executable, "-c", "{daemon}"], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(pipe, "pid"), "w") as f:
        f.write(str(p.pid))
    os.mkfifo(os.path.join(pipe, "control"))
    with open(os.path.join(os.environ["CUDA_MPS_LOG_DIRECTORY"], "control.log"), "a") as f:
        f.write("started\\n")
    sys.exit(0)
control = os.path.join(pipe, "control")
if not os.path.exists(control) or os.environ.get("STAND_IN_DEAD"):
    print("Cannot find MPS control daemon process", file=sys.stderr)
    sys.exit(1)
command = sys.stdin.read().strip()
if command == "quit":
    os.kill(int(open(os.path.join(pipe, "pid")).read()), signal.SIGTERM)
"""


@pytest.fixture
def control(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "bin" / mps.CONTROL
    path.parent.mkdir()
    path.write_text(STAND_IN.format(python=sys.executable, daemon=DAEMON))
    path.chmod(0o755)
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    monkeypatch.delenv("CUDA_MPS_LOG_DIRECTORY", raising=False)
    monkeypatch.setattr(mps, "DEFAULT_PIPE_DIR", tmp_path / "default-pipe")  # never the machine's real one
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return path


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state  # a zombie has ended


def _pid(pipe_dir: Path) -> int:
    return int((pipe_dir / "pid").read_text())


def test_a_daemon_started_for_the_search_is_stopped_when_it_ends(control, tmp_path):
    said = []
    with mps.shared_gpu(tmp_path / "log", control=control, say=said.append) as env:
        pipe_dir = Path(env["CUDA_MPS_PIPE_DIRECTORY"])
        assert env["CUDA_MPS_LOG_DIRECTORY"] == str(tmp_path / "log")
        assert pipe_dir.parent == tmp_path / "tmp" and len(str(pipe_dir)) < 100
        pid = _pid(pipe_dir)
        assert _alive(pid)
        assert (tmp_path / "log" / "control.log").read_text() == "started\n"
    assert said == []
    assert not _alive(pid)  # waited for: the daemon had ended when the block did
    assert not pipe_dir.exists()


def test_stopping_waits_for_the_daemon_not_for_the_pipe_it_leaves(control, tmp_path, monkeypatch):
    monkeypatch.setattr(mps, "STOP_SECONDS", 120.0)  # waiting for the pipe would wait all of this
    daemon = mps.start(control, tmp_path / "log")
    pid = _pid(daemon.pipe_dir)
    assert mps.daemon_processes(daemon.pipe_dir) == {pid}
    t0 = time.monotonic()
    mps.stop(control, daemon)
    assert time.monotonic() - t0 < 60  # the daemon's 0.3 s, not the 120 s limit
    assert not _alive(pid) and not daemon.pipe_dir.exists()
    assert mps.daemon_processes(daemon.pipe_dir) == set()


def test_daemon_processes_are_read_from_each_process_environment(tmp_path):
    proc = tmp_path / "proc"
    for pid, env in (("11", b"A=1\0CUDA_MPS_PIPE_DIRECTORY=/tmp/p1\0"), ("12", b"CUDA_MPS_PIPE_DIRECTORY=/tmp/p10\0"),
                     ("13", b"CUDA_MPS_PIPE_DIRECTORY=/tmp/p1\0B=2\0"), ("self", b"CUDA_MPS_PIPE_DIRECTORY=/tmp/p1\0")):
        (proc / pid).mkdir(parents=True)
        (proc / pid / "environ").write_bytes(env)
    (proc / "14").mkdir()  # gone, or another user's: nothing to read
    assert mps.daemon_processes(Path("/tmp/p1"), proc=proc) == {11, 13}
    assert mps.daemon_processes(Path("/tmp/p1"), proc=tmp_path / "none") == set()


def test_the_daemon_is_stopped_when_the_search_fails(control, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with mps.shared_gpu(tmp_path / "log", control=control, say=lambda s: None) as env:
            pipe_dir = Path(env["CUDA_MPS_PIPE_DIRECTORY"])
            pid = _pid(pipe_dir)
            raise KeyboardInterrupt
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid) and not pipe_dir.exists()


def test_a_daemon_the_user_started_is_joined_and_left_running(control, tmp_path, monkeypatch):
    user_pipe = tmp_path / "user-pipe"
    user_pipe.mkdir()
    env = dict(os.environ, CUDA_MPS_PIPE_DIRECTORY=str(user_pipe), CUDA_MPS_LOG_DIRECTORY=str(tmp_path))
    subprocess.run([str(control), "-d"], env=env, check=True)
    pid = _pid(user_pipe)
    try:
        monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(user_pipe))
        said = []
        with mps.shared_gpu(tmp_path / "log", control=control, say=said.append) as joined:
            assert joined == {"CUDA_MPS_PIPE_DIRECTORY": str(user_pipe)}
        assert said == [f"joining the MPS daemon already running at {user_pipe}"]
        assert _alive(pid) and (user_pipe / "control").exists()
        assert not (tmp_path / "log").exists()  # nothing of ours was started
    finally:
        os.kill(pid, signal.SIGTERM)


def test_a_pipe_left_by_a_dead_daemon_is_not_joined(control, tmp_path, monkeypatch):
    monkeypatch.setattr(mps, "DEFAULT_PIPE_DIR", tmp_path / "stale")
    (tmp_path / "stale").mkdir()
    os.mkfifo(tmp_path / "stale" / "control")
    monkeypatch.setenv("STAND_IN_DEAD", "1")
    assert mps.running_daemon(control) is None


def test_no_control_program_means_time_sliced_workers_said_once(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(mps, "KNOWN_PLACES", ())
    said = []
    with mps.shared_gpu(tmp_path / "log", say=said.append) as env:
        assert env == {}
    assert said == [f"no {mps.CONTROL} here: the workers on each GPU take turns (time-sliced), without MPS"]


def test_control_binary_is_found_on_the_path(control):
    assert mps.control_binary({"PATH": str(control.parent)}) == control


def test_a_daemon_that_does_not_start_is_one_line_and_leaves_nothing(control, tmp_path, monkeypatch):
    monkeypatch.setenv("STAND_IN_FAIL", "1")
    said = []
    with mps.shared_gpu(tmp_path / "log", control=control, say=said.append) as env:
        assert env == {}
    assert len(said) == 1
    assert said[0].startswith("MPS did not start (") and "exited with 1: An instance of this daemon" in said[0]
    assert "time-sliced" in said[0]
    assert list((tmp_path / "tmp").iterdir()) == []  # its pipe folder removed
    assert (tmp_path / "log" / "start.log").read_text().startswith("An instance of this daemon")


# ---------------------------------------------------------------------------- --per-gpu


def test_workers_per_gpu_join_one_daemon_that_is_stopped_after(control, tmp_path, monkeypatch):
    from scaling import pool
    from scaling.study import StudyConfig

    monkeypatch.setattr(mps, "control_binary", lambda environ=None: control)
    seen = {}

    def run_workers(config, url, workers, quiet=False, err=None, started=None):
        seen["workers"] = workers
        pipe = Path(workers[0][0]["CUDA_MPS_PIPE_DIRECTORY"])
        seen["pid"] = _pid(pipe)
        seen["alive"] = _alive(seen["pid"]) and (pipe / "control").exists()
        return 0

    monkeypatch.setattr(pool, "_run_workers", run_workers)
    monkeypatch.setattr(pool, "_start_speed_pass", lambda *a, **k: None)  # tests/test_speed_beside.py has it
    config = StudyConfig(name="k", per_gpu=2)
    url = f"sqlite:///{tmp_path / 'studies' / 'k' / 'optuna.db'}"
    assert pool.run_pool(config, url, None, [0, 1], 1, True) == 0
    workers = seen["workers"]
    assert [(env["CUDA_VISIBLE_DEVICES"], device) for env, device in workers] == [
        ("0", "cuda:0"), ("0", "cuda:0"), ("1", "cuda:0"), ("1", "cuda:0")]
    assert len({env["CUDA_MPS_PIPE_DIRECTORY"] for env, _ in workers}) == 1  # one daemon for all
    assert {env["CUDA_MPS_LOG_DIRECTORY"] for env, _ in workers} == {str(tmp_path / "studies" / "k" / "mps")}
    assert seen["alive"]
    deadline = time.monotonic() + 10
    while _alive(seen["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(seen["pid"])


def test_one_worker_per_gpu_starts_no_daemon(control, tmp_path, monkeypatch):
    from scaling import pool
    from scaling.study import StudyConfig

    monkeypatch.setattr(mps, "control_binary", lambda environ=None: control)
    seen = {}
    monkeypatch.setattr(pool, "_run_workers",
                        lambda config, url, workers, quiet=False, err=None, started=None: seen.setdefault("w", workers) and 0)
    assert pool.run_pool(StudyConfig(name="k"), f"sqlite:///{tmp_path / 'optuna.db'}", None, [0], 1, True) == 0
    assert seen["w"] == [({"CUDA_VISIBLE_DEVICES": "0"}, "cuda:0")]
    assert list((tmp_path / "tmp").iterdir()) == [] and not (tmp_path / "mps").exists()


@pytest.mark.parametrize("resolution, k", [(64, 4), (128, 2), (224, 1)])
def test_auto_per_gpu_from_the_base_networks_flops(resolution, k):
    from scaling.pool import per_gpu_of
    from scaling.complexity import count
    from scaling.spec import spec_for
    from scaling.study import StudyConfig

    flops = count(spec_for("efficientnet-b0", resolution=resolution)).flops
    assert mps.auto_per_gpu(flops) == k
    assert per_gpu_of(StudyConfig(name="a", base_resolution=resolution, per_gpu="auto")) == k


@pytest.mark.parametrize("value", ["0", "17", "two", "-1"])
def test_bad_per_gpu_is_one_line_exit_2(value, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from scaling.cli import app

    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["search", "--per-gpu", value, "--phi", "1"])
    assert r.exit_code == 2, r.output
    assert "--per-gpu" in r.output and "1..16 or auto" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "studies").exists()


def test_per_gpu_in_a_study_file_is_checked_and_may_change_on_resume(tmp_path):
    from scaling.study import StudyError, check_or_save, resolve

    bad = tmp_path / "bad.toml"
    bad.write_text('name = "s"\n[search]\nper_gpu = 0\n')
    with pytest.raises(StudyError, match=r'per_gpu = 0: must be a whole number in 1..16 or "auto"'):
        resolve(bad)
    good = tmp_path / "good.toml"
    good.write_text('name = "s"\n[search]\nper_gpu = "auto"\n')
    config = resolve(good)
    assert config.per_gpu == "auto"
    check_or_save(config, tmp_path / "s")
    check_or_save(config.replace(per_gpu=3), tmp_path / "s")  # how it runs, not what it is: no refusal
    with pytest.raises(StudyError, match="other settings"):
        check_or_save(config.replace(seeds=2), tmp_path / "s")


def test_a_process_counts_as_running_until_it_has_ended(tmp_path):
    assert mps._running(os.getpid())
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 60
    while Path(f"/proc/{p.pid}/status").exists() and "\nState:\tZ" not in Path(f"/proc/{p.pid}/status").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not mps._running(p.pid)  # ended, not reaped yet: a zombie
    p.wait()
    assert not mps._running(p.pid)  # reaped: gone
    (tmp_path / "9").mkdir()
    (tmp_path / "9" / "status").write_text("Name:\tx\nState:\tX (dead)\n")
    assert not mps._running(9, proc=tmp_path)
