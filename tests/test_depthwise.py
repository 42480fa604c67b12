"""The Triton depthwise kernels (scaling.depthwise): equal to torch's convolution in outputs
and both gradients, odd sizes, strides and TensorFlow "same" padding included, run here by
Triton's interpreter on the CPU (in a child process: the interpreter is chosen when the
kernels are made); which layers are swapped; the switch; the GPU runs at the end."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from scaling import depthwise as D
from scaling.model import SameConv2d
from scaling.spec import custom_spec

triton = pytest.importorskip("triton", reason="Triton is not installed (it comes with torch on Linux)")

CHILD = textwrap.dedent("""
    import copy, json
    import torch
    import torch.nn.functional as F
    from scaling import depthwise as D
    from scaling.model import EfficientNet
    from scaling.spec import custom_spec

    torch.manual_seed(0)
    # Wide blocks: the interpreter's time goes by programs and loop steps, not by their size;
    # partial blocks (channels and pixels) stay, so the masks are exercised. The GPU tests below
    # run the default blocks.
    D.FORWARD = D.INPUT_GRAD = D.WEIGHT_GRAD = D.Blocks(64, 128, 1)
    out = {"available": D.available("cpu"), "layers": []}
    # (N, C, H, W, K, S, pads): odd sizes, 40 channels (not a multiple of a 32-channel block),
    # TensorFlow "same" padding at stride 2 (one more pixel at the bottom and right)
    for n, c, h, w, k, s, pads in [(2, 16, 7, 7, 3, 1, (1, 1, 1, 1)), (1, 40, 8, 9, 5, 2, (1, 2, 1, 2)),
                                   (1, 24, 9, 6, 3, 2, (0, 1, 0, 1))]:
        x = torch.randn(n, c, h, w).to(memory_format=torch.channels_last).requires_grad_(True)
        wt = torch.randn(c, 1, k, k, requires_grad=True)
        y = D.depthwise_conv2d(x, wt, s, pads)
        g = torch.randn_like(y)
        dx, dw = torch.autograd.grad(y, (x, wt), g)
        dw2 = D._weight_grad(g, x.detach(), D._Geometry(x, k, s, pads)).reshape(dw.shape)
        ref = D.reference(x, wt, s, pads)
        rdx, rdw = torch.autograd.grad(ref, (x, wt), g)
        out["layers"].append({"shape": list(y.shape), "ref_shape": list(ref.shape),
                              "y": (y - ref).abs().max().item(), "dx": (dx - rdx).abs().max().item(),
                              "dw": (dw - rdw).abs().max().item(), "same_twice": bool(torch.equal(dw, dw2)),
                              "channels_last": y.is_contiguous(memory_format=torch.channels_last)})
    # a whole network: the swapped copy computes what the original does, gradients included
    net = EfficientNet(custom_spec(0.1, 0.25, 16, num_classes=10)).eval()
    fast = copy.deepcopy(net)
    out["swapped"] = D.use_triton_depthwise(fast)
    out["blocks"] = sum(type(m).__name__ == "MBConv" for m in net.modules())
    x = torch.randn(1, 3, 16, 16).to(memory_format=torch.channels_last)
    a, b = net(x), fast(x)
    a.square().sum().backward()
    b.square().sum().backward()
    grads = [(p.grad - q.grad).abs().max().item() / (p.grad.abs().max().item() or 1.0)
             for p, q in zip(net.parameters(), fast.parameters())]
    out["logits"] = (a - b).abs().max().item()
    out["grads"] = max(grads)
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def interpreted():
    env = dict(os.environ, TRITON_INTERPRET="1")
    run = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    (line,) = [x for x in run.stdout.splitlines() if x.startswith("RESULT ")]
    return json.loads(line[7:])


def test_each_layer_equals_torchs_convolution(interpreted):
    assert interpreted["available"]
    assert [r["shape"] for r in interpreted["layers"]] == [[2, 16, 7, 7], [1, 40, 4, 4], [1, 24, 4, 3]]
    for r in interpreted["layers"]:
        assert r["shape"] == r["ref_shape"] and r["channels_last"]
        assert r["y"] < 1e-4 and r["dx"] < 1e-4 and r["dw"] < 1e-4, r


def test_the_weight_gradient_is_the_same_every_run(interpreted):
    assert all(r["same_twice"] for r in interpreted["layers"])  # summed in a fixed order, no atomics


def test_a_swapped_network_computes_what_the_original_does(interpreted):
    assert interpreted["swapped"] == interpreted["blocks"] == 7  # depth 0.25: one block a stage, one depthwise layer each
    assert interpreted["logits"] < 1e-4
    assert interpreted["grads"] < 1e-4


def test_which_layers_are_replaceable():
    assert D.replaceable(nn.Conv2d(16, 16, 3, groups=16, padding=1))
    assert D.replaceable(SameConv2d(16, 16, 5, stride=2, groups=16))
    assert not D.replaceable(nn.Conv2d(16, 32, 3, padding=1))  # not depthwise
    assert not D.replaceable(nn.Conv2d(12, 12, 3, groups=12))  # 12 channels: not rows of 8
    assert not D.replaceable(nn.Conv2d(16, 16, 3, groups=16, dilation=2))
    assert not D.replaceable(nn.Conv2d(16, 16, 3, groups=16, padding="same"))
    assert not D.replaceable(nn.Conv2d(16, 16, (3, 5), groups=16))


def test_swapping_keeps_the_parameters_and_their_names():
    from scaling.model import EfficientNet

    net = EfficientNet(custom_spec(0.25, 1.0, 32, num_classes=10))  # B0's 16 blocks
    before = net.state_dict()
    params = {id(p) for p in net.parameters()}
    assert D.use_triton_depthwise(net) == 16
    after = net.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert {id(p) for p in net.parameters()} == params
    assert sum(isinstance(m, D.TritonDepthwise) for m in net.modules()) == 16


def test_bad_layers_are_refused_before_any_kernel():
    with pytest.raises(ValueError, match="multiples of 8"):
        D.depthwise_conv2d(torch.zeros(1, 12, 4, 4), torch.zeros(12, 1, 3, 3), 1, (1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"\(16, 1, K, K\)"):
        D.depthwise_conv2d(torch.zeros(1, 16, 4, 4), torch.zeros(16, 2, 3, 3), 1, (1, 1, 1, 1))


@pytest.mark.parametrize("value, expected", [("", None), ("auto", None), ("triton", True), ("Torch", False)])
def test_the_switch(monkeypatch, value, expected):
    monkeypatch.setenv(D.ENV, value)
    assert D.chosen() is expected


def test_a_bad_switch_stops_a_gpu_search_with_code_2(monkeypatch, tmp_path, capsys):
    from scaling import pool
    from scaling.study import StudyConfig

    monkeypatch.setenv(D.ENV, "cudnn")
    started = []
    monkeypatch.setattr(pool, "_run_workers", lambda *a, **k: started.append(a) or 0)
    assert pool.run_pool(StudyConfig(name="k"), f"sqlite:///{tmp_path / 'optuna.db'}", None, [0], 1, True) == 2
    assert started == []
    assert "SCALING_DEPTHWISE is 'triton', 'torch' or unset, got 'cudnn'" in capsys.readouterr().err


def test_the_cpu_keeps_torchs_convolutions(monkeypatch):
    from scaling.train import _depthwise_kernels

    monkeypatch.delenv(D.ENV, raising=False)
    net = nn.Sequential(nn.Conv2d(16, 16, 3, groups=16, padding=1))
    assert _depthwise_kernels(net, torch.device("cpu"), None) == "torch"
    assert type(net[0]) is nn.Conv2d
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="need a CUDA device"):
            _depthwise_kernels(net, torch.device("cpu"), True)
        assert D.compile_ahead() == 0.0  # nothing to compile for, nothing started


# ---------------------------------------------------------------------------- on a GPU



@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; run on the GPU machine")
@pytest.mark.parametrize("n, c, h, k, s", [(8, 96, 28, 3, 2), (4, 240, 7, 5, 1), (3, 40, 17, 5, 2)])
def test_gpu_bf16_as_close_to_fp32_as_cudnn(n, c, h, k, s):
    from scaling.model import same_padding

    top, bottom = same_padding(h, k, s)
    pads = (top, bottom, top, bottom)
    x = torch.randn(n, c, h, h, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    w = (torch.randn(c, 1, k, k, device="cuda", dtype=torch.bfloat16) / k)
    errors = {}
    xr, wr = x.float().cpu().requires_grad_(True), w.float().cpu().requires_grad_(True)
    ref = D.reference(xr, wr, s, pads)
    g = torch.randn_like(ref)
    truth = (ref.detach(), *torch.autograd.grad(ref, (xr, wr), g))
    for name, fn in (("triton", D.depthwise_conv2d), ("cudnn", D.reference)):
        xi, wi = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        y = fn(xi, wi, s, pads)
        got = (y.detach(), *torch.autograd.grad(y, (xi, wi), g.to("cuda", torch.bfloat16)))
        errors[name] = [(a.float().cpu() - t).abs().max().item() / t.abs().max().item() for a, t in zip(got, truth)]
    for ours, theirs in zip(errors["triton"], errors["cudnn"]):
        assert ours <= 2 * theirs + 1e-3, errors


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; run on the GPU machine")
def test_gpu_training_uses_the_kernels_by_default_and_learns(tmp_path):
    from scaling.data import load_data
    from scaling.recipe import Recipe
    from scaling.train import train

    small = load_data(None, 48, train_size=5000, val_size=500, cache_dir=tmp_path, quiet=True)
    r = train(custom_spec(0.25, 0.25, 48), small, Recipe(epochs=4, batch_size=64, lr=0.4), device="cuda", seed=0,
              quiet=True)
    assert r.status == "ok" and r.depthwise == "triton"
    assert r.top1 > 0.3  # chance is 0.1; the same bar as torch's convolutions in test_train_gpu
    off = train(custom_spec(0.25, 0.25, 48), small, Recipe(epochs=1, batch_size=64), device="cuda", seed=0,
                quiet=True, triton_depthwise=False)
    assert off.depthwise == "torch"


# ---------------------------------------------------------------------------- the default


@pytest.mark.parametrize("env, steps, expected", [("", 3600, "triton"), ("", 3601, "torch"),
                                                  ("torch", 10, "torch"), ("triton", 10**6, "triton")])
def test_on_a_gpu_short_runs_take_the_kernels_long_ones_keep_cudnn(monkeypatch, env, steps, expected):
    from scaling.train import _depthwise_kernels

    monkeypatch.setenv(D.ENV, env)
    monkeypatch.setattr(D, "available", lambda device=None: True)  # as on a GPU with Triton
    net = nn.Sequential(nn.Conv2d(16, 16, 3, groups=16, padding=1))
    assert _depthwise_kernels(net, torch.device("cuda"), None, steps) == expected
    assert isinstance(net[0], D.TritonDepthwise) == (expected == "triton")


def test_scaling_train_refuses_bad_depthwise_choices(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from scaling.cli import app

    monkeypatch.setenv("SCALING_CACHE", str(tmp_path))
    args = ["train", "--width", "0.25", "--depth", "0.25", "--resolution", "32", "--epochs", "1", "--device", "cpu",
            "--run-dir", str(tmp_path / "run")]
    r = CliRunner().invoke(app, args + ["--depthwise", "cudnn"])
    assert r.exit_code == 2 and "auto, triton or torch, got 'cudnn'" in r.output
    r = CliRunner().invoke(app, args + ["--depthwise", "triton"])
    assert r.exit_code == 2 and "--depthwise triton needs a CUDA GPU" in r.output
    monkeypatch.setenv(D.ENV, "fast")
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "SCALING_DEPTHWISE is 'triton', 'torch' or unset, got 'fast'" in r.output
    assert not (tmp_path / "run").exists()  # refused before anything was written


class _FakeProc:
    def __init__(self, rc: int):
        self.returncode, self.err = rc, "Traceback ...\nRuntimeError: ptxas failed\n" if rc else ""

    def communicate(self):
        return "", self.err


@pytest.mark.parametrize("rc", [0, 1])
def test_compiling_ahead_once_per_cache(monkeypatch, tmp_path, rc):
    monkeypatch.setattr("scaling.forked.can_fork", lambda: False)  # this process has started CUDA
    monkeypatch.delenv(D.ENV, raising=False)
    monkeypatch.setattr(D, "available", lambda device=None: True)
    mark = tmp_path / "cache" / "scaling-depthwise-x.ready"
    monkeypatch.setattr(D, "_ready_mark", lambda: mark)
    started, said = [], []
    monkeypatch.setattr(D.subprocess, "Popen", lambda cmd, **kw: started.append(cmd[-2:]) or _FakeProc(rc))
    D.compile_ahead(say=said.append)
    assert started == [["3", "1"], ["3", "2"], ["5", "1"], ["5", "2"]]  # one process per (kernel size, stride)
    if rc == 0:
        assert mark.exists() and said[0].startswith("compiled the Triton depthwise kernels in ")
        D.compile_ahead(say=said.append)
        assert len(started) == 4 and len(said) == 1  # compiled already: nothing started, nothing said
    else:  # the workers compile what is missing themselves; the next search tries again
        assert not mark.exists()
        assert said == ["compiling the Triton depthwise kernels failed (RuntimeError: ptxas failed); the workers "
                        "compile them"]


def test_a_gpu_worker_loads_the_kernels_before_its_first_trial(monkeypatch):
    from scaling import worker

    monkeypatch.delenv(D.ENV, raising=False)
    loaded, made = [], []
    monkeypatch.setattr(D, "load_kernels", lambda dev: loaded.append(str(dev)))
    monkeypatch.setattr(D, "available", lambda device=None: True)
    monkeypatch.setattr(torch, "zeros", lambda *a, **k: made.append(str(k.get("device"))))
    monkeypatch.setattr("scaling.train.resolve_device", torch.device)  # as where GPU 0 exists
    worker.start_device("cpu")
    assert loaded == [] and made == []  # nothing on the CPU
    worker.start_device("cuda:0")
    assert made == ["cuda:0"] and loaded == ["cuda:0"]  # CUDA's context, then the kernels
    monkeypatch.setenv(D.ENV, "torch")
    worker.start_device("cuda:0")
    assert loaded == ["cuda:0"]  # cuDNN's convolutions asked for: no kernels to load


def test_compiling_started_early_is_waited_for_once(monkeypatch, tmp_path):
    monkeypatch.setattr("scaling.forked.can_fork", lambda: False)  # this process has started CUDA
    monkeypatch.delenv(D.ENV, raising=False)
    monkeypatch.setattr(D, "available", lambda device=None: True)
    mark = tmp_path / "cache" / "scaling-depthwise-x.ready"
    monkeypatch.setattr(D, "_ready_mark", lambda: mark)
    started, said = [], []
    monkeypatch.setattr(D.subprocess, "Popen", lambda cmd, **kw: started.append(cmd[-2:]) or _FakeProc(0))
    compiling = D.start_compiling()
    assert isinstance(compiling, D.Compiling) and len(started) == 4 and not mark.exists()
    compiling.wait(say=said.append)
    assert mark.exists() and len(said) == 1
    compiling.cancel()  # waited already: nothing to stop
    assert D.start_compiling() is None and len(started) == 4  # compiled: nothing started again


def test_cancelling_stops_the_compiles_still_running(monkeypatch, tmp_path):
    import subprocess
    import sys

    real = subprocess.Popen
    monkeypatch.setattr(D.subprocess, "Popen", lambda cmd, **kw: real(
        [sys.executable, "-c", "import time; time.sleep(60)"], **kw))
    with D.Compiling(tmp_path / "mark") as compiling:
        procs = compiling.procs
        assert len(procs) == 4 and all(p.poll() is None for p in procs)
    assert all(p.returncode is not None for p in procs)  # leaving the block stopped them
    assert not (tmp_path / "mark").exists()


def test_the_pool_waits_for_the_compile_its_caller_started(monkeypatch, tmp_path):
    from scaling import pool
    from scaling.study import StudyConfig

    monkeypatch.delenv(D.ENV, raising=False)
    order = []

    class Started:
        def wait(self, say=None):
            order.append("waited")
            say("compiled the Triton depthwise kernels in 1.0 s (once per machine: they are cached)")
            return 1.0

    monkeypatch.setattr(D, "compile_ahead", lambda say=None: order.append("compiled here"))
    monkeypatch.setattr(pool, "_run_workers", lambda *a, **k: order.append("workers") or 0)
    monkeypatch.setattr(pool, "_speed_pass", lambda *a, **k: None)
    assert pool.run_pool(StudyConfig(name="k"), f"sqlite:///{tmp_path / 'optuna.db'}", None, [0], 1, True,
                         compiling=Started()) == 0
    assert order == ["waited", "workers"]


def test_a_search_stops_the_compile_it_started_when_it_ends_early(monkeypatch):
    from scaling.cli import searching

    stopped = []

    class Started:
        def cancel(self):
            stopped.append(True)

    monkeypatch.setattr(D, "start_compiling", lambda: Started())
    with searching._compiling([]) as none:
        assert none is None  # no GPU: nothing compiles
    with pytest.raises(RuntimeError, match="bad data"):
        with searching._compiling([0]) as compiling:
            assert isinstance(compiling, Started)
            raise RuntimeError("bad data")
    assert stopped == [True]
    monkeypatch.setattr(D, "start_compiling", lambda: (_ for _ in ()).throw(ValueError("SCALING_DEPTHWISE")))
    with searching._compiling([0]) as compiling:
        assert compiling is None  # the pool says what is wrong with the switch, with code 2


@pytest.fixture
def forked_compiles(monkeypatch, tmp_path):
    """The kernels' compile forked from this process, as a search that has not started CUDA
    does: the GPU and the compiler stood in for (the children inherit the stand-ins); the
    shapes each child compiled, as files."""
    monkeypatch.delenv(D.ENV, raising=False)
    monkeypatch.setattr("scaling.forked.can_fork", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "init", lambda: None)
    monkeypatch.setattr(D, "_kernels", lambda: ("forward", "input_grad", "weight_grad"))
    mark = tmp_path / "cache" / "scaling-depthwise-x.ready"
    monkeypatch.setattr(D, "_ready_mark", lambda: mark)
    done = tmp_path / "compiled"
    done.mkdir()
    monkeypatch.setattr(D, "_compile_part", lambda k, s, part: (done / f"{k}-{s}-{part}").touch())
    return mark, done


def test_forked_compiles_look_for_the_mark_themselves(forked_compiles):
    from scaling.forked import Forked

    mark, done = forked_compiles
    said = []
    compiling = D.start_compiling()
    assert compiling.mark is None and len(compiling.procs) == 12  # one a kernel
    assert all(isinstance(p, Forked) for p in compiling.procs)  # no second interpreter, no second torch import
    assert compiling.wait(say=said.append) > 0
    assert sorted(f.name for f in done.iterdir()) == sorted(f"{k}-{s}-{part}" for k, s in D.KERNEL_SHAPES
                                                            for part in ("forward", "input_grad", "weight_grad"))
    assert mark.exists() and len(said) == 1 and said[0].startswith("compiled the Triton depthwise kernels in ")
    for f in done.iterdir():
        f.unlink()
    compiling = D.start_compiling()  # forked again: finding the mark costs this process no CUDA
    assert compiling.wait(say=said.append) == 0.0
    assert [p.returncode for p in compiling.procs] == [D.CACHED] * 12
    assert list(done.iterdir()) == [] and len(said) == 1  # nothing compiled, nothing said


def test_a_forked_compile_that_fails_is_said_and_leaves_no_mark(forked_compiles, monkeypatch):
    mark, _ = forked_compiles

    def fails(k, s, part):
        raise RuntimeError("ptxas failed")

    monkeypatch.setattr(D, "_compile_part", fails)
    said = []
    D.compile_ahead(say=said.append)
    assert said == ["compiling the Triton depthwise kernels failed (RuntimeError: ptxas failed); the workers "
                    "compile them"]
    assert not mark.exists()


def test_a_forked_compile_without_cuda_runs_in_a_fresh_interpreter(forked_compiles, monkeypatch):
    def poisoned():  # what CUDA says in a child of a process that had started it
        raise RuntimeError("CUDA error: initialization error")

    monkeypatch.setattr(torch.cuda, "init", poisoned)
    said = []
    D.compile_ahead(say=said.append)
    # python -m scaling.depthwise K S PART ran in each child's place, with none of the stand-ins: on the
    # CPU it finds no GPU to compile for; on a GPU it compiles
    assert len(said) == 1
    if torch.cuda.is_available():
        assert said[0].startswith("compiled the Triton depthwise kernels in ") and forked_compiles[0].exists()
    else:
        assert said[0].startswith("compiling the Triton depthwise kernels failed (RuntimeError: Found no NVIDIA driver")
        assert not forked_compiles[0].exists()


def test_cancelling_stops_forked_compiles(forked_compiles, monkeypatch):
    import time

    monkeypatch.setattr(D, "_compile_part", lambda k, s, part: time.sleep(60))
    with D.start_compiling() as compiling:
        procs = compiling.procs
        assert all(p.poll() is None for p in procs)
    assert all(p.returncode is not None for p in procs)
    assert not forked_compiles[0].exists()
