"""The training step (scaling.step) on the CPU: eager micro-batches, and the out-of-memory halving of
HalvingStep, the CUDA graph's giving way included (a stand-in graph that runs out of memory)."""

import pytest
import torch
import torch.nn.functional as F

import scaling.step as s
import scaling.train as t
from scaling.model import EfficientNet
from scaling.recipe import Recipe
from scaling.spec import custom_spec

SPEC = custom_spec(0.25, 0.25, 32, num_classes=10, dropout=0.0, drop_connect=0.0)


def _net_opt(lr=None):
    torch.manual_seed(0)
    net = EfficientNet(SPEC).train()
    return net, t.make_optimizer(net, Recipe(), lr)


def _batch(n=64):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def _loss_fn(limit=None, seen=None):
    def loss_fn(logits, labels):
        if seen is not None:
            seen.append(logits.shape[0])
        if limit is not None and logits.shape[0] > limit:
            raise torch.OutOfMemoryError("injected")
        return F.cross_entropy(logits.float(), labels)
    return loss_fn


def test_eager_step_accumulates_micro_batches_and_sets_the_learning_rate():
    import copy

    net, opt = _net_opt()
    before = copy.deepcopy(net)
    x, y = _batch()
    seen = []
    loss = s.EagerStep(net, opt, _loss_fn(seen=seen), micro=16, amp=False)(x, y, 0.25)
    assert seen == [16, 16, 16, 16] and all(g["lr"] == 0.25 for g in opt.param_groups)
    # The batch's mean loss: each micro-batch's (batch norm over its own images) weighted by its share.
    with torch.no_grad():
        parts = [F.cross_entropy(before(xs), ys) * 0.25 for xs, ys in zip(x.split(16), y.split(16))]
    torch.testing.assert_close(loss, torch.stack(parts).sum())
    assert any(not torch.equal(p, q) for p, q in zip(net.parameters(), before.parameters()))  # it stepped
    lr = torch.tensor(0.5)
    net2, opt2 = _net_opt()
    s.EagerStep(net2, opt2, _loss_fn(), micro=64, amp=False, lr=lr)(x, y, 0.125)
    assert lr.item() == 0.125 and all(g["lr"] != 0.125 for g in opt2.param_groups)  # the tensor, not the groups


def test_halving_step_halves_on_out_of_memory_down_to_the_floor():
    net, opt = _net_opt()
    x, y = _batch()
    step = s.HalvingStep(s.EagerStep(net, opt, _loss_fn(limit=16), micro=64, amp=False), batch=64, floor=8)
    assert torch.isfinite(step(x, y, 0.1)) and step.micro == 16  # 64 -> 32 -> 16, the same batch again
    step = s.HalvingStep(s.EagerStep(net, opt, _loss_fn(limit=0), micro=64, amp=False), batch=64, floor=8)
    with pytest.raises(s.OutOfMemory) as e:
        step(x, y, 0.1)
    assert step.micro == 8 and e.value.reason("epoch 2, step 3") == \
        "out of memory at micro-batch 8 (floor 8), epoch 2, step 3"
    assert all(p.grad is None for p in net.parameters())  # the failed attempts' gradients freed


def test_under_ddp_out_of_memory_stops_at_once():
    net, opt = _net_opt()
    x, y = _batch(32)
    step = s.HalvingStep(s.EagerStep(net, opt, _loss_fn(limit=0), micro=32, amp=False), batch=32, floor=8, rank=1,
                         processes=2)
    with pytest.raises(s.OutOfMemory) as e:
        step(x, y, 0.1)
    assert step.micro == 32
    assert e.value.reason("epoch 1, step 4") == (
        "out of memory at micro-batch 32 on process 1 of 2, epoch 1, step 4; out-of-memory halving is off under "
        "DDP: pass a smaller micro-batch (--micro-batch)")


class _GraphOutOfMemory:
    """Stands in for GraphStep on the CPU: its capture runs out of memory."""

    made = 0

    def __init__(self, *args):
        type(self).made += 1
        raise torch.OutOfMemoryError("injected at capture")


def test_the_graph_gives_way_to_eager_micro_batches_of_half_the_batch(monkeypatch):
    monkeypatch.setattr(s, "GraphStep", _GraphOutOfMemory)
    lr = torch.tensor(0.1)
    net, opt = _net_opt()
    x, y = _batch()
    seen = []
    step = s.HalvingStep(s.EagerStep(net, opt, _loss_fn(seen=seen), micro=64, amp=False, lr=lr), batch=64, floor=8,
                         graphs=True)
    with pytest.raises(s.GraphLost):
        step(x, y, 0.2)
    assert step.micro == 32 and step.graph is None and seen == []
    assert torch.isfinite(step(x, y, 0.2)) and seen == [32, 32] and lr.item() == pytest.approx(0.2)
    step(x, y, 0.3)
    assert _GraphOutOfMemory.made == 1  # never captured again
    with pytest.raises(ValueError, match="device tensor"):
        s.HalvingStep(s.EagerStep(net, opt, _loss_fn(), micro=64, amp=False), batch=64, floor=8, graphs=True)


def test_the_loop_notes_the_graph_given_up_and_retries_the_batch(monkeypatch):
    monkeypatch.setattr(s, "GraphStep", _GraphOutOfMemory)
    net, opt = _net_opt(lr=None)
    x, y = _batch()
    step = s.HalvingStep(s.EagerStep(net, opt, _loss_fn(), micro=64, amp=False, lr=torch.tensor(0.1)), batch=64,
                         floor=8, graphs=True)
    notes = []
    loss = t._take_step(step, x, y, 0.1, 2, 0, notes)
    assert torch.isfinite(loss) and step.micro == 32
    assert notes == ["out of memory capturing the CUDA graph; eager from epoch 3"]
    floor = s.HalvingStep(s.EagerStep(net, opt, _loss_fn(limit=0), micro=8, amp=False), batch=64, floor=8)
    with pytest.raises(t._Stop) as e:
        t._take_step(floor, x, y, 0.1, 1, 2, notes)
    assert (e.value.status, e.value.where) == ("oom", {"epoch": 2, "step": 3})
    assert e.value.reason == "out of memory at micro-batch 8 (floor 8), epoch 2, step 3"
