"""Children forked from this process (scaling.forked.Forked): what they run, their exit codes,
their input and error streams, their signals and clock, and when forking is allowed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import scaling
from scaling import forked
from scaling.forked import Forked


def test_exit_codes_follow_what_the_child_returns_raises_or_exits_with():
    assert Forked(lambda: 7).wait(timeout=30) == 7
    assert Forked(lambda: None).wait(timeout=30) == 0
    assert Forked(lambda: sys.exit(2)).wait(timeout=30) == 2
    assert Forked(lambda: sys.exit()).wait(timeout=30) == 0

    def fails():
        raise ValueError("bad thing")

    p = Forked(fails, stderr=True)
    _, err = p.communicate()
    assert p.returncode == 1
    assert err.startswith("Traceback (most recent call last):") and err.strip().endswith("ValueError: bad thing")


def test_the_child_reads_its_input_and_sees_its_environment(tmp_path):
    out = tmp_path / "said"

    def child():
        out.write_text(f"{os.environ['SCALING_TEST_VALUE']} {sys.stdin.readline().strip()} {sys.stdin.readline()!r}")
        return 0

    p = Forked(child, {"SCALING_TEST_VALUE": "blue"}, stdin=True)
    p.stdin.write("go\n")
    p.stdin.close()
    assert p.wait(timeout=30) == 0
    assert out.read_text() == "blue go ''"  # its input ended when ours was closed
    assert "SCALING_TEST_VALUE" not in os.environ


def test_a_childs_input_ends_with_ours_though_a_later_child_holds_a_copy(tmp_path):
    first = Forked(lambda: 0 if sys.stdin.readline() == "" else 3, stdin=True)
    second = Forked(lambda: 0 if sys.stdin.readline() == "" else 3, stdin=True)  # forked while first's pipe was open
    first.stdin.close()
    assert first.wait(timeout=30) == 0  # no copy of our end of first's input lives in second
    assert second.poll() is None
    second.stdin.close()
    assert second.wait(timeout=30) == 0


def test_ctrl_c_is_ignored_and_sigterm_ends_the_child():
    p = Forked(lambda: time.sleep(60))
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)  # as the terminal sends it to the whole group
    time.sleep(0.2)
    assert p.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        p.wait(timeout=0.1)
    p.terminate()
    assert p.wait(timeout=30) == -signal.SIGTERM
    p.kill()  # ended already: nothing to do
    assert p.returncode == -signal.SIGTERM


def test_the_childs_clock_starts_at_the_fork_and_torch_has_one_thread(tmp_path):
    out = tmp_path / "said"
    before = time.time()
    p = Forked(lambda: out.write_text(f"{scaling.STARTED} {torch.get_num_threads()}") and 0)
    assert p.wait(timeout=30) == 0
    started, threads = out.read_text().split()
    assert float(started) >= before > scaling.STARTED and int(threads) == 1


def test_forking_is_refused_once_cuda_has_started_here(monkeypatch):
    monkeypatch.setattr(torch.cuda, "_is_compiled", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert forked.can_fork() is False
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "_device_count_nvml", lambda: 2)  # counted without CUDA
    assert forked.can_fork() is True
    monkeypatch.setattr(torch.cuda, "_is_compiled", lambda: False)  # a torch without CUDA
    assert forked.can_fork() is True


START = """
import sys
from pathlib import Path

import torch

from scaling import forked
from scaling.cli.searching import _compiling, prepare_study

config, gpu_ids, folder, url = prepare_study(None, Path(sys.argv[1]), None, None, name="fork-check", source="default")
assert gpu_ids and forked.can_fork(), "the search's start started CUDA"
with _compiling(gpu_ids) as compiling:
    assert compiling is not None and len(compiling.procs) == 12
    assert all(isinstance(p, forked.Forked) for p in compiling.procs)
    assert forked.can_fork(), "starting the kernels' compile started CUDA"

    def child():
        x = torch.ones(4, device="cuda") * 2
        return 0 if float(x.sum()) == 8.0 else 3

    p = forked.Forked(child, stderr=True)
    _, err = p.communicate()
    assert p.returncode == 0, err
    compiling.wait(print)
    assert [c.returncode for c in compiling.procs] in ([0] * 12, [3] * 12)  # compiled, or found compiled
print("forked with CUDA usable")
"""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; run on the GPU machine")
def test_a_gpu_searchs_start_leaves_cuda_unstarted_so_its_forked_children_use_it(tmp_path):
    r = subprocess.run([sys.executable, "-c", START, str(tmp_path / "studies")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("forked with CUDA usable")
