"""The speed pass beside the workers (scaling.speed_pass.main, scaling.pool): under MPS it
prepares the study's networks while they train, measures on the pool's word once they have
ended, and is ended with them when they are interrupted; where it fails, the pool measures.

Run on the CPU: the pass's process measures networks recorded as trained on the CPU, and the
MPS daemon is the stand-in of tests/test_mps.py. Exact: which networks, what is written, what
is said, exit codes, and that nothing is left running.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console
from test_mps import control  # noqa: F401 - the stand-in daemon, a fixture
from test_search import TOML
from test_speed_pass import _trial

from scaling import pool, speed_pass
from scaling.search import create_study, study_members
from scaling.spec import custom_spec
from scaling.speed_pass import GO, PREFIX, expected, study_speeds
from scaling.study import StudyConfig, resolve


@pytest.fixture
def grid(tmp_path):
    """The tiny grid of tests/test_search.py, queued and not trained."""
    (tmp_path / "tiny.toml").write_text(TOML)
    config = resolve(tmp_path / "tiny.toml")
    url = f"sqlite:///{tmp_path / 'studies' / 'tiny' / 'optuna.db'}"
    (tmp_path / "studies" / "tiny").mkdir(parents=True)
    return config, url, create_study(config, url, num_classes=10)


def test_expected_is_the_queue_in_order_less_what_has_a_speed(grid):
    config, url, study = grid
    members = {m.key: m for m in study_members(config, 10)}
    queue = [members[t.system_attrs["fixed_params"]["member"]].spec for t in study.trials]
    keys = list(dict.fromkeys(s.architecture_key() for s in queue))
    assert len(keys) == len(study.trials) == 8
    assert [k for k, _ in expected(study, config, "cpu")] == keys
    assert [s for _, s in expected(study, config, "cpu")] == list({s.architecture_key(): s for s in queue}.values())
    study.set_user_attr(PREFIX + keys[0], {"latency_ms": 1.0})  # measured already
    assert [k for k, _ in expected(study, config, "cpu")] == keys[1:]
    # a network trained already and not measured comes first; one trained elsewhere is not this GPU's to measure
    other = custom_spec(0.1, 0.1, 40, num_classes=10)
    _trial(study, other, "cpu")
    _trial(study, custom_spec(0.1, 0.2, 40, num_classes=10), "cuda:0 (NVIDIA H200)")
    assert [k for k, _ in expected(study, config, "cpu")] == [other.architecture_key()] + keys[1:]


def test_a_sampled_study_expects_only_what_it_has_trained(tmp_path):
    config = StudyConfig(name="s", sampler="tpe")
    study = optuna.create_study()
    a = custom_spec(0.1, 0.1, 32, num_classes=10)
    _trial(study, a, "cpu")
    assert [k for k, _ in expected(study, config, "cpu")] == [a.architecture_key()]


def _trained(tmp_path, n: int = 2):
    """A study of ``n`` networks recorded as trained on the CPU, with a definition, in SQLite."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="k", storage=url, direction="maximize")
    study.set_user_attr("definition", json.dumps(StudyConfig(name="k", sampler="tpe").to_dict()))
    specs = [custom_spec(0.1, 0.1, 32 + 8 * i, num_classes=10) for i in range(n)]
    for s in specs:
        _trial(study, s, "cpu")
    return url, study, specs


def _pass(url: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "scaling.speed_pass", "k", url, "cpu"], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_the_process_measures_on_the_word_and_says_it(tmp_path):
    url, study, specs = _trained(tmp_path)
    proc = _pass(url)
    out, err = proc.communicate(GO + "\n", timeout=120)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == "measuring inference speed alone on cpu: 2 networks"
    assert lines[-1].startswith("inference speed measured: 2 in ") and len(lines) == 2
    assert set(study_speeds(study)) == {s.architecture_key() for s in specs}


def test_the_process_closed_without_the_word_measures_nothing(tmp_path):
    url, study, _ = _trained(tmp_path)
    proc = _pass(url)
    out, err = proc.communicate("", timeout=120)
    assert (proc.returncode, out) == (0, ""), err
    assert study_speeds(study) == {}


def test_prepare_goes_through_the_expected_networks_until_told_to_stop(grid):
    config, url, study = grid
    asked = []

    def stop():
        asked.append(1)
        return len(asked) > 3

    assert speed_pass.prepare_study(study, config, "cpu", stop) == 3  # asked before each network
    assert speed_pass.prepare_study(study, config, "cpu", lambda: False) == 8
    assert study_speeds(study) == {}  # preparing measures and writes nothing


@pytest.fixture
def beside(monkeypatch):
    """The pool's pass beside the workers, run on the CPU; the processes it started."""
    started = []
    real = pool._start_speed_pass

    def start(*a, **k):
        started.append(real(*a, **k, device="cpu"))
        return started[-1]

    monkeypatch.setattr(pool, "_start_speed_pass", start)
    return started


@pytest.fixture
def here(monkeypatch):
    """The pass the pool runs in its own process after the workers, stood in for."""
    calls = []
    monkeypatch.setattr(pool, "_speed_pass", lambda config, url, gpu, err: calls.append(gpu))
    return calls


def _pool(config, url, monkeypatch, control, run_workers) -> tuple[int, str]:
    from scaling import mps

    monkeypatch.setattr(mps, "control_binary", lambda environ=None: control)
    monkeypatch.setattr(pool, "_run_workers", run_workers)
    out = io.StringIO()
    code = pool.run_pool(config, url, None, [0], 1, True, console=Console(file=out, width=300))
    return code, out.getvalue()


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode().split("=", 1) for e in raw if b"=" in e)


def test_under_mps_the_pass_is_ready_beside_the_workers_outside_their_daemon_and_measures_after_it(
        control, tmp_path, monkeypatch, beside, here):  # noqa: F811
    from scaling import mps

    url, study, specs = _trained(tmp_path)
    during, told = {}, {}

    def run_workers(config, url, workers, quiet=False, err=None, started=None):
        proc, = beside
        pipe = Path(workers[0][0]["CUDA_MPS_PIPE_DIRECTORY"])
        during.update(alive=proc.poll() is None, speeds=dict(study_speeds(study)),
                      pass_pipe=_environ(proc.pid).get("CUDA_MPS_PIPE_DIRECTORY"),
                      daemon_alive=bool(mps.daemon_processes(pipe)))
        told["pipe"] = pipe
        return 0

    finish = pool._finish_speed_pass

    def finish_after_the_daemon(proc, err):
        told["daemon_at_go"] = mps.daemon_processes(told["pipe"])
        return finish(proc, err)

    monkeypatch.setattr(pool, "_finish_speed_pass", finish_after_the_daemon)
    code, said = _pool(StudyConfig(name="k", per_gpu=2), url, monkeypatch, control, run_workers)
    assert code == 0, said
    # waiting for the word while they train, no client of any daemon (its pipe folder has none)
    assert during == {"alive": True, "speeds": {}, "pass_pipe": str(tmp_path / "no-mps"), "daemon_alive": True}
    assert not (tmp_path / "no-mps").exists()
    assert told["daemon_at_go"] == set()  # told to measure once the daemon had ended
    proc, = beside
    assert proc.returncode == 0
    assert "measuring inference speed alone on cpu: 2 networks" in said
    assert "inference speed measured: 2 in " in said
    assert set(study_speeds(study)) == {s.architecture_key() for s in specs}
    assert here == []  # measured beside: nothing left for the pool
    assert (tmp_path / speed_pass.LOG).read_text() == ""


def test_networks_held_ready_are_timed_as_they_are_and_all_let_go(grid, monkeypatch):
    from scaling import speed

    config, url, study = grid
    made, closed = [], []
    real_ready, real_close = speed.ready, speed.Timing.close

    def ready(spec, device, batch=256):
        made.append(spec.architecture_key())
        return real_ready(spec, device, batch=batch)

    def close(self):
        if self._deployed is not None:
            closed.append(self)
        real_close(self)

    monkeypatch.setattr(speed, "ready", ready)
    monkeypatch.setattr(speed.Timing, "close", close)
    monkeypatch.setattr(speed_pass, "hold_budget", lambda device: 3)  # three networks' worth of "bytes"
    monkeypatch.setattr(speed_pass, "held_bytes", lambda device: len(made))
    held = {}
    keys = [k for k, _ in expected(study, config, "cpu")]
    assert speed_pass.prepare_study(study, config, "cpu", lambda: False, held) == 8
    assert list(held) == made == keys[:3]  # kept while under the budget, the rest only prepared
    members = {m.spec.architecture_key(): m.spec for m in study_members(config, 10)}
    for key in keys[1:5]:  # trained since: one held ready is not among them
        _trial(study, members[key], "cpu")
    timed, was_held = [], dict(held)
    monkeypatch.setattr(speed.Timing, "time", lambda self, repeats=None: timed.append(self) or {"latency_ms": 1.0})
    assert speed_pass.measure_study(study, "cpu", held=held) == 4
    assert timed[:2] == [was_held[keys[1]], was_held[keys[2]]] and held == {}  # timed as they were held
    assert made[3:] == keys[3:5] and len(timed) == 4  # the two not held built to be measured
    assert len(closed) == 3 + 2 and was_held[keys[0]] in closed  # one held never trained: let go all the same
    assert set(study_speeds(study)) == set(keys[1:5])


def test_a_pass_that_fails_beside_leaves_the_measuring_to_the_pool(control, tmp_path, monkeypatch, here):  # noqa: F811
    url, _, _ = _trained(tmp_path)
    monkeypatch.setattr(pool, "_start_speed_pass", lambda *a, **k: subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.exit(3)"], text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE))
    code, said = _pool(StudyConfig(name="k", per_gpu=2), url, monkeypatch, control,
                       lambda config, url, workers, quiet=False, err=None, started=None: 0)
    assert code == 0
    assert "the speed pass beside the workers ended with exit code 3" in said
    assert here == [0]


@pytest.mark.parametrize("workers_end", ["interrupted", "storage"])
def test_the_pass_beside_ends_with_workers_that_cannot_go_on(control, tmp_path, monkeypatch, beside, here,  # noqa: F811
                                                           workers_end):
    url, study, _ = _trained(tmp_path)

    def run_workers(config, url, workers, quiet=False, err=None, started=None):
        if workers_end == "interrupted":
            raise KeyboardInterrupt
        return 2  # a full disk or a storage that cannot be used: the workers said so

    code, said = _pool(StudyConfig(name="k", per_gpu=2), url, monkeypatch, control, run_workers)
    assert code == (130 if workers_end == "interrupted" else 2)
    proc, = beside
    assert proc.returncode == 0  # told by its closed input, it ended without measuring
    assert study_speeds(study) == {} and here == []
    assert "measuring" not in said
