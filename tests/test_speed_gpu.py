"""Inference speed on a GPU: timed from a captured CUDA graph, and nothing kept afterwards."""

import warnings

import pytest
import torch

from scaling.bases import build
from scaling.spec import custom_spec
from scaling.speed import _captured, _deployed, _forward, inference_speed

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
