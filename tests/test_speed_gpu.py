"""Inference speed on a GPU: timed from a captured CUDA graph, and nothing kept afterwards."""

import warnings

import pytest
import torch

from scaling.bases import build
from scaling.spec import custom_spec
from scaling.speed import _captured, _deployed, _forward, _warm, inference_speed

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; run on the GPU machine"),
]


def test_a_network_is_captured_and_its_replay_computes_the_forward_pass():
    dev = torch.device("cuda:0")
    torch.manual_seed(0)
    spec = custom_spec(0.5, 0.5, 64).replace(num_classes=10)
    with _deployed(build(spec), dev) as net:
        step = _forward(net, 3, 64, 4, dev)
        step()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a fallback to eager warns: here it must not
            graph = _captured(step, dev)
        assert isinstance(graph, torch.cuda.CUDAGraph)
        graph.replay()
        torch.cuda.synchronize(dev)
        del graph, step


def test_speed_from_a_graph_keeps_no_memory_and_names_its_batch():
    dev = torch.device("cuda:0")
    spec = custom_spec(0.5, 0.5, 64).replace(num_classes=10)
    torch.cuda.synchronize(dev)
    before = torch.cuda.memory_allocated(dev)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = inference_speed(spec, dev, batch=64, repeats=6)
    assert set(s) == {"latency_ms", "throughput", "inference_batch"}
    assert s["inference_batch"] == 64
    assert s["latency_ms"] > 0 and s["throughput"] > 0
    torch.cuda.synchronize(dev)
    assert torch.cuda.memory_allocated(dev) == before


def test_a_network_made_ready_ahead_is_timed_later_and_let_go():
    from scaling.speed import ready

    dev = torch.device("cuda:0")
    specs = [custom_spec(0.5, 0.5, 64).replace(num_classes=10), custom_spec(0.5, 0.75, 80).replace(num_classes=10)]
    torch.cuda.synchronize(dev)
    before = torch.cuda.memory_allocated(dev)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # captured, not timed eager
        held = [ready(s, dev, batch=64) for s in specs]  # both held at once, as the speed pass holds them
        assert torch.cuda.memory_allocated(dev) > before
        speeds = [t.time(repeats=6) for t in held]
        assert held[0].time(repeats=3, warmup_s=0.0)["inference_batch"] == 64  # 3 warm-up runs, no more
        assert _warm(lambda: None, dev, 0.0) == 3 and _warm(lambda: None, dev, 0.05) > 3
    for s in speeds:
        assert set(s) == {"latency_ms", "throughput", "inference_batch"} and s["inference_batch"] == 64
        assert s["latency_ms"] > 0 and s["throughput"] > 0
    for t in held:
        t.close()
        t.close()  # a second close does nothing
    torch.cuda.synchronize(dev)
    assert torch.cuda.memory_allocated(dev) == before
