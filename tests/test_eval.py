"""Held-out evaluation: every eval_every-th epoch and the last; on GPUs padded to the
training batch and replayed from a CUDA graph, with the same counts as an eager pass."""

import pytest
import torch

import scaling.train as t
from scaling.data import Batches, load_data
from scaling.model import EfficientNet
from scaling.recipe import Recipe
from scaling.spec import custom_spec

TINY = custom_spec(0.25, 0.25, 32)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_data(None, 32, train_size=256, val_size=100, cache_dir=tmp_path_factory.mktemp("cache"), quiet=True)


def test_eval_every_evaluates_those_epochs_and_the_last(data):
    seen = []
    r = t.train(TINY, data, Recipe(epochs=5, batch_size=64, lr=0.4, eval_every=2), device="cpu", seed=0,
                quiet=True, on_epoch=lambda e, top1: seen.append(e))
    assert r.status == "ok" and r.epochs_completed == 5
    assert seen == [1, 3, 4]  # 0-based: epochs 2, 4 and the last, 5
    assert [h["top1"] is not None for h in r.history] == [False, True, False, True, True]
    assert [h["epoch"] for h in r.history] == [1, 2, 3, 4, 5]
    assert r.top1 == r.history[-1]["top1"] and all(h["loss"] > 0 for h in r.history)
    with pytest.raises(ValueError, match="eval_every must be at least 1"):
        Recipe(eval_every=0)


def test_eval_every_one_is_every_epoch_and_top1_unchanged(data):
    every = t.train(TINY, data, Recipe(epochs=3, batch_size=64, lr=0.4), device="cpu", seed=0, quiet=True,
                    deterministic=True)
    last = t.train(TINY, data, Recipe(epochs=3, batch_size=64, lr=0.4, eval_every=3), device="cpu", seed=0,
                   quiet=True, deterministic=True)
    assert all(h["top1"] is not None for h in every.history)
    assert last.top1 == every.top1 and last.history[-1]["loss"] == every.history[-1]["loss"]


def test_evaluate_counts_match_by_hand(data):
    torch.manual_seed(0)
    net = EfficientNet(t.run_spec(TINY, data, Recipe())).eval()
    b = Batches(data.val, 64, train=False, device="cpu")  # 100 = 64 + 36: a short last batch
    top1, top5, loss = t.evaluate(net, b, amp=False)
    logits = torch.cat([net(x) for x, _ in b])
    labels = torch.cat([y for _, y in b])
    assert logits.shape[0] == 100
    assert top1 == (logits.argmax(1) == labels).sum().item() / 100
    assert top5 == (logits.topk(5, 1).indices == labels[:, None]).any(1).sum().item() / 100
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-6)


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; run on the GPU machine")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("graph", [False, True])
def test_gpu_padded_and_graph_eval_equal_an_eager_unpadded_pass(data, graph):
    torch.manual_seed(0)
    net = EfficientNet(t.run_spec(TINY, data, Recipe())).cuda().to(memory_format=torch.channels_last).eval()
    b = Batches(data.val, 64, train=False, device="cuda", dtype=torch.bfloat16)  # last batch: 36 of 64
    state = {}
    first = t.evaluate(net, b, amp=True, graph=graph, state=state)
    again = t.evaluate(net, b, amp=True, graph=graph, state=state)
    assert first == again
    assert ("graph" in state) == graph
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):  # each batch alone, unpadded
        logits = torch.cat([net(x).float() for x, _ in b])
    labels = torch.cat([y for _, y in b])
    # bf16 convolutions may pick other algorithms at other batch sizes: top-1 within 2 of 100
    assert abs(first[0] - (logits.argmax(1) == labels).float().mean().item()) <= 0.02
    assert first[2] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=0.02)
    if graph:
        state["graph"].release()
