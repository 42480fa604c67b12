"""Training checkpoints and weights files (scaling.checkpoint): the formats, and files in them that
earlier versions wrote, written here literally as those versions did, still load."""

import pytest
import torch

import scaling.train as t
from scaling.checkpoint import (TRAIN_FORMAT, WEIGHTS_FORMAT, read_saved_result, read_weights, save_checkpoint,
                                save_weights)
from scaling.data import load_data
from scaling.model import EfficientNet
from scaling.recipe import Recipe
from scaling.spec import custom_spec

TINY = custom_spec(0.25, 0.25, 32)

# The keys of each format, in the order the files hold them (written by train.py's _Loop.save
# and the final-weights save, and by EfficientNet.save, before scaling.checkpoint wrote them).
TRAIN_KEYS = ["format", "epoch", "step", "micro", "model", "optimizer", "ema", "rng", "result", "images_timed"]
WEIGHTS_KEYS = ["format", "spec", "state_dict", "classes"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """2 steps of 64 an epoch."""
    return load_data(None, 32, train_size=128, val_size=100, cache_dir=tmp_path_factory.mktemp("cache"), quiet=True)


def test_the_formats_are_those_files_were_written_in(tmp_path):
    assert (TRAIN_FORMAT, WEIGHTS_FORMAT) == ("scaling-train/1", "scaling/1")
    net = EfficientNet(TINY.replace(num_classes=3))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    save_checkpoint(tmp_path / "c.pt", epoch=0, step=2, micro=64, model=net, optimizer=opt, ema=None,
                    result={"status": "ok"}, images_timed=128)
    ck = torch.load(tmp_path / "c.pt", weights_only=False)
    assert list(ck) == TRAIN_KEYS and ck["format"] == "scaling-train/1" and ck["ema"] is None
    assert (ck["epoch"], ck["step"], ck["micro"], ck["images_timed"]) == (0, 2, 64, 128)
    assert torch.equal(ck["rng"], torch.get_rng_state())
    save_weights(tmp_path / "w.pt", net.spec, net.state_dict(), classes=("a", "b", "c"))
    w = torch.load(tmp_path / "w.pt", weights_only=True)
    assert list(w) == WEIGHTS_KEYS and w["classes"] == ["a", "b", "c"] and w["spec"] == net.spec.to_dict()
    net.save(tmp_path / "saved.pt")  # EfficientNet.save: no class names
    assert list(torch.load(tmp_path / "saved.pt", weights_only=True)) == WEIGHTS_KEYS[:3]
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left beside


def test_a_checkpoint_written_literally_in_the_old_layout_resumes_exactly(data, tmp_path):
    rec = Recipe(epochs=2, batch_size=64, lr=0.4)
    whole = t.train(TINY, data, rec, device="cpu", seed=5, quiet=True, deterministic=True,
                    save_weights=tmp_path / "whole.pt")

    def stop(epoch, top1):  # killed after the first epoch's checkpoint
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        t.train(TINY, data, rec, device="cpu", seed=5, quiet=True, deterministic=True, checkpoint=tmp_path / "c.pt",
                on_epoch=stop)
    ck = torch.load(tmp_path / "c.pt", weights_only=False)
    assert list(ck) == TRAIN_KEYS
    # The dict as train.py's _Loop.save wrote it, key by key, through a plain torch.save.
    old = {
        "format": "scaling-train/1", "epoch": ck["epoch"], "step": ck["step"], "micro": ck["micro"],
        "model": ck["model"], "optimizer": ck["optimizer"], "ema": ck["ema"],
        "rng": ck["rng"], "result": ck["result"], "images_timed": ck["images_timed"],
    }
    (tmp_path / "c.pt").unlink()
    torch.save(old, tmp_path / "old.pt")
    assert read_saved_result(tmp_path / "old.pt")["epochs_completed"] == 1
    resumed = t.train(TINY, data, rec, device="cpu", seed=5, quiet=True, deterministic=True,
                      checkpoint=tmp_path / "old.pt", resume=True, save_weights=tmp_path / "resumed.pt")
    assert resumed.status == "ok" and resumed.epochs_completed == 2 and len(resumed.history) == 2
    assert resumed.top1 == whole.top1 and resumed.history[1]["loss"] == whole.history[1]["loss"]
    a, b = (torch.load(tmp_path / f, weights_only=True)["state_dict"] for f in ("whole.pt", "resumed.pt"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_weights_written_literally_in_the_old_layouts_load(tmp_path):
    torch.manual_seed(0)
    net = EfficientNet(TINY.replace(num_classes=3)).eval()
    x = torch.randn(2, 3, 32, 32)
    # As train() wrote weights.pt, and as EfficientNet.save wrote its file (no class names).
    torch.save({"format": "scaling/1", "spec": net.spec.to_dict(), "state_dict": net.state_dict(),
                "classes": ["cat", "dog", "eel"]}, tmp_path / "trained.pt")
    torch.save({"format": "scaling/1", "spec": net.spec.to_dict(), "state_dict": net.state_dict()},
               tmp_path / "saved.pt")
    for name, classes in (("trained.pt", ["cat", "dog", "eel"]), ("saved.pt", None)):
        ours = read_weights(tmp_path / name)
        assert ours is not None and ours.classes == classes and ours.spec["resolution"] == 32
        back = EfficientNet.from_pretrained("custom", weights_path=tmp_path / name, num_classes=3).eval()
        with torch.no_grad():
            assert torch.equal(back(x), net(x))
    torch.save(net.state_dict(), tmp_path / "bare.pt")  # another layout: not a weights file of ours
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    assert read_weights(tmp_path / "bare.pt") is None and read_weights(tmp_path / "junk.pt") is None
