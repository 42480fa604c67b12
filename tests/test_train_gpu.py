"""Training on a GPU: bf16, channels_last, resident data, memory released between runs."""

import pytest
import torch

from scaling.data import Batches, load_data
from scaling.recipe import Recipe
from scaling.spec import custom_spec
from scaling.train import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; run on the GPU machine"),
]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return load_data(None, 48, train_size=5000, val_size=500, cache_dir=tmp_path_factory.mktemp("cache"), quiet=True)


def test_batches_resident_bf16_channels_last(small):
    b = Batches(small.train, 256, train=True, device="cuda", seed=0, dtype=torch.bfloat16)
    x, y = next(iter(b))
    assert x.is_cuda and x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)
    assert b.images.is_cuda and b.images.dtype == torch.uint8  # resident as uint8


def test_gpu_training_learns_and_reports(small):
    spec = custom_spec(0.25, 0.25, 48)  # 88% after these 4 epochs on the CPU
    r = train(spec, small, Recipe(epochs=4, batch_size=64, lr=0.4), device="cuda", seed=0, quiet=True)
    assert r.status == "ok"
    assert r.top1 > 0.3  # chance is 0.1
    assert r.peak_memory_mb and r.peak_memory_mb > 0
    assert r.images_per_second and r.images_per_second > 0
    assert r.device.startswith("cuda:0")


def test_memory_released_between_runs(small):
    spec = custom_spec(0.5, 0.5, 64)
    train(spec, small, Recipe(epochs=1, batch_size=128), device="cuda", quiet=True)
    base = torch.cuda.memory_allocated()
    for seed in range(3):
        train(spec, small, Recipe(epochs=1, batch_size=128), device="cuda", seed=seed, quiet=True)
    assert torch.cuda.memory_allocated() <= base


def test_oom_halves_then_fails(small, monkeypatch):
    import scaling.train as t

    real = t.compute_loss

    def tight(logits, labels, smoothing):
        if logits.shape[0] > 32:
            raise torch.OutOfMemoryError("injected")
        return real(logits, labels, smoothing)

    monkeypatch.setattr(t, "compute_loss", tight)
    r = train(custom_spec(0.5, 0.5, 64), small, Recipe(epochs=1, batch_size=128), device="cuda", quiet=True)
    assert r.status == "ok" and r.micro_batch == 32


def test_graph_step_equals_eager_step():
    import copy

    import torch.nn.functional as F

    from scaling import EfficientNet
    from scaling.step import GraphStep
    from scaling.train import make_optimizer

    torch.manual_seed(0)
    spec = custom_spec(0.5, 0.5, 64, dropout=0.0, drop_connect=0.0, num_classes=10)
    a = EfficientNet(spec).cuda().to(memory_format=torch.channels_last).train()
    b = copy.deepcopy(a)
    recipe = Recipe(batch_size=64, weight_decay=5e-5)
    lr_t = torch.tensor(0.1, device="cuda")
    opt_a, opt_b = make_optimizer(a, recipe), make_optimizer(b, recipe, lr_t)

    def loss_fn(logits, y):
        return F.cross_entropy(logits.float(), y, label_smoothing=0.1)

    x = torch.randn(64, 3, 64, 64, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,), device="cuda")
    step = GraphStep(b, opt_b, lr_t, loss_fn, x, y, amp=True)
    # The warm-up steps before capture are undone: b is a again.
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    for k in range(3):
        xk, yk = torch.randn_like(x), torch.randint(0, 10, (64,), device="cuda")
        lr = 0.05 * (k + 1)
        for g in opt_a.param_groups:
            g["lr"] = lr
        opt_a.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = a(xk)
        la = loss_fn(out, yk)
        la.backward()
        opt_a.step()
        lb = step(xk, yk, lr)
        assert torch.allclose(la.detach(), lb, rtol=1e-3, atol=1e-4)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(p.float(), q.float(), rtol=1e-3, atol=1e-4), name


def test_training_with_and_without_graphs(small):
    spec = custom_spec(0.5, 0.5, 64)
    rec = Recipe(epochs=2, batch_size=128, lr=0.4)
    g = train(spec, small, rec, device="cuda", seed=0, quiet=True, cuda_graphs=True)
    e = train(spec, small, rec, device="cuda", seed=0, quiet=True, cuda_graphs=False)
    assert g.status == e.status == "ok" and not g.notes
    assert abs(g.history[0]["loss"] - e.history[0]["loss"]) < 0.1
