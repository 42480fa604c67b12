"""Training on the CPU: learning, recipes, NaN and OOM by injection, exact resume, the CLI."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

import scaling.train as t
from scaling.cli import app
from scaling.data import load_data
from scaling.recipe import RECIPES, Recipe, get_recipe
from scaling.spec import custom_spec

TINY = custom_spec(0.25, 0.25, 32)  # about 0.2 M parameters


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_data(None, 32, train_size=640, val_size=200, cache_dir=tmp_path_factory.mktemp("cache"), quiet=True)


@pytest.fixture(scope="module")
def data_192(tmp_path_factory):
    """3 steps of 64 per epoch: what tests of the micro-batch and of resuming need (they hold at any size)."""
    return load_data(None, 32, train_size=192, val_size=200, cache_dir=tmp_path_factory.mktemp("cache"), quiet=True)


@pytest.fixture(scope="module")
def data_2000(tmp_path_factory):
    return load_data(None, 32, train_size=2000, val_size=200, cache_dir=tmp_path_factory.mktemp("cache"), quiet=True)


def small(**kw):
    base = dict(epochs=2, batch_size=64, lr=0.4)
    base.update(kw)
    return Recipe(**base)


def test_recipes():
    r = Recipe(epochs=10, batch_size=512, lr=0.2, warmup_epochs=1)
    assert r.peak_lr() == pytest.approx(0.4)
    assert r.lr_at(0, 100) == pytest.approx(0.4 / 100)
    assert r.lr_at(99, 100) == pytest.approx(0.4)
    assert r.lr_at(100, 100) == pytest.approx(0.4)
    assert r.lr_at(550, 100) == pytest.approx(0.2)  # half-way through the cosine
    assert r.lr_at(999, 100) == pytest.approx(0.4 * 0.5 * (1 + math.cos(math.pi * 899 / 900)))
    p = get_recipe("paper")
    assert (p.optimizer, p.weight_decay, p.ema, p.decay_rate, p.decay_epochs) == ("rmsprop", 1e-5, 0.9999, 0.97, 2.4)
    assert p.replace(batch_size=4096).peak_lr() == pytest.approx(0.256)
    assert p.lr_at(10 * 100, 100) == pytest.approx(0.016 * 0.97**4)  # epoch 10: 4 decays of 2.4 epochs
    with pytest.raises(ValueError, match="unknown recipe"):
        get_recipe("fast")
    assert Recipe.from_dict(RECIPES["proxy"].to_dict()) == RECIPES["proxy"]


def test_short_cpu_training_learns(data_2000):
    # Margin by design: 375 steps of 32 images (not 125 of 64, which gave 0.235 to 0.345 with
    # one or two threads), measured at 0.485 with 1 thread and 0.530 with 2: 0.23 above the bar.
    r = t.train(TINY, data_2000, small(epochs=6, batch_size=32), device="cpu", seed=0, quiet=True)
    assert r.status == "ok" and r.epochs_completed == 6
    assert r.top1 > 0.25, r.history  # chance: 0.1
    assert r.history[-1]["loss"] < r.history[0]["loss"]
    assert set(r.times) == {"data", "setup", "warmup", "train", "eval", "other", "total"}
    parts = sum(r.times[k] for k in ("data", "setup", "warmup", "train", "eval", "other"))
    assert parts == pytest.approx(r.times["total"], abs=1e-9)  # every second named once
    assert r.times["setup"] > 0 and r.times["other"] >= 0
    assert r.images_per_second > 0 and r.peak_memory_mb is None and r.device == "cpu"
    assert json.loads(json.dumps(r.to_dict()))["spec"]["num_classes"] == 10


def test_nan_stops_within_one_step(data, monkeypatch):
    calls = {"n": 0}
    real = t.compute_loss

    def poisoned(logits, labels, smoothing):
        calls["n"] += 1
        loss = real(logits, labels, smoothing)
        return loss * float("nan") if calls["n"] == 13 else loss

    monkeypatch.setattr(t, "compute_loss", poisoned)
    r = t.train(TINY, data, small(), device="cpu", quiet=True)
    assert r.status == "nan"
    assert r.failed_at == {"epoch": 2, "step": 3}  # 10 steps per epoch
    assert calls["n"] == 13  # stopped at once
    assert "epoch 2, step 3" in r.reason
    assert all(math.isfinite(h["loss"]) and math.isfinite(h["top1"]) for h in r.history)
    assert r.epochs_completed == 1 and math.isfinite(r.top1)


def test_oom_halves_micro_batch_then_fails(data_192, monkeypatch):
    data = data_192
    real = t.compute_loss

    def tight(logits, labels, smoothing):
        if logits.shape[0] > 16:
            raise torch.OutOfMemoryError("injected")
        return real(logits, labels, smoothing)

    monkeypatch.setattr(t, "compute_loss", tight)
    r = t.train(TINY, data, small(epochs=1), device="cpu", quiet=True)
    assert r.status == "ok" and r.micro_batch == 16  # 64 -> 32 -> 16, same effective batch

    def never(logits, labels, smoothing):
        raise torch.OutOfMemoryError("injected")

    monkeypatch.setattr(t, "compute_loss", never)
    r = t.train(TINY, data, small(epochs=1, min_micro_batch=8), device="cpu", quiet=True)
    assert r.status == "oom" and "micro-batch 8" in r.reason and r.top1 is None


def test_resume_is_exact(data_192, tmp_path):
    data = data_192
    rec = small(epochs=3)
    whole = t.train(TINY, data, rec, device="cpu", seed=3, quiet=True, deterministic=True,
                    checkpoint=tmp_path / "a.pt", save_weights=tmp_path / "a-final.pt")

    def killed(epoch, top1):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        t.train(TINY, data, rec, device="cpu", seed=3, quiet=True, deterministic=True,
                checkpoint=tmp_path / "b.pt", on_epoch=killed)
    resumed = t.train(TINY, data, rec, device="cpu", seed=3, quiet=True, deterministic=True,
                      checkpoint=tmp_path / "b.pt", resume=True, save_weights=tmp_path / "b-final.pt")
    a = torch.load(tmp_path / "a-final.pt")["state_dict"]
    b = torch.load(tmp_path / "b-final.pt")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.top1 == whole.top1 and len(resumed.history) == 3
    with pytest.raises(ValueError, match="another run"):
        t.train(TINY, data, rec, device="cpu", seed=4, quiet=True, checkpoint=tmp_path / "b.pt", resume=True)


def test_cli_train_and_evaluate(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    args = ["train", "--width", "0.25", "--depth", "0.25", "--resolution", "32", "--train-size", "256",
            "--val-size", "100", "--epochs", "1", "--batch-size", "64", "--run-dir", str(run), "-q"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "ok" and result["epochs_completed"] == 1
    assert "top-1" in r.output and "after 1 epoch on cpu" in r.output
    again = CliRunner().invoke(app, args)  # a checkpoint is there: refuse to overwrite it silently
    assert again.exit_code == 2 and "--resume" in again.output
    r = CliRunner().invoke(app, ["evaluate", "custom", "--weights", str(run / "weights.pt"), "--val-size", "100",
                                 "--device", "cpu", "-q"])
    assert r.exit_code == 0, r.output
    assert f"top-1 {100 * result['top1']:.2f}%" in r.output  # the same weights on the same images
    r = CliRunner().invoke(app, ["evaluate", "efficientnet-b0", "--weights", str(run / "weights.pt"), "-q"])
    assert r.exit_code == 2  # the checkpoint is not a B0: one line naming the weights
    assert "--weights" in r.output and len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("args, names", [
    (["--data", "/no/such/folder"], "--data"),
    (["--batch-size", "0"], "--batch-size"),
    (["--recipe", "fast"], "--recipe"),
    (["--device", "cuda:7"], "--device"),
    (["--device", "tpu"], "--device"),
    (["--epochs", "0"], "--epochs"),
])
def test_cli_train_bad_input(args, names, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["train", "efficientnet-b0", "--resolution", "32", *args])
    assert r.exit_code == 2, r.output
    assert len(r.output.strip().splitlines()) == 1 and names in r.output
    assert not (tmp_path / "runs").exists()


def test_cli_unreadable_archive(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "data.tar.gz"
    bad.write_bytes(b"not a tar file")
    r = CliRunner().invoke(app, ["train", "efficientnet-b0", "--resolution", "32", "--data", str(bad)])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "data.tar.gz" in r.output


def test_cli_wrong_data_path_is_named_before_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"x")  # a run folder that holds a checkpoint
    r = CliRunner().invoke(app, ["train", "--width", "0.25", "--depth", "0.25", "--resolution", "32",
                                 "--data", "/no/such/cifar.tar.gz", "--run-dir", str(run)])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "--data" in lines[0] and "/no/such/cifar.tar.gz" in lines[0], r.output
    assert "checkpoint" not in r.output
