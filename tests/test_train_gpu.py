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
    return load_data(None, 64, train_size=2048, val_size=512, cache_dir=tmp_path_factory.mktemp("cache"), quiet=True)


def test_batches_resident_bf16_channels_last(small):
    b = Batches(small.train, 256, train=True, device="cuda", seed=0, dtype=torch.bfloat16)
    x, y = next(iter(b))
    assert x.is_cuda and x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)
    assert b.images.is_cuda and b.images.dtype == torch.uint8  # resident as uint8


def test_gpu_training_learns_and_reports(small):
    spec = custom_spec(0.5, 0.5, 64)
    r = train(spec, small, Recipe(epochs=4, batch_size=128, lr=0.4), device="cuda", seed=0, quiet=True)
    assert r.status == "ok"
    assert r.top1 > 0.2  # chance is 0.1
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
