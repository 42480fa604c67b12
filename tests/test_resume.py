"""What a run was trained on: resuming finished or foreign runs, class names in weights, batch-norm batches."""

import json

import pytest
import torch
from typer.testing import CliRunner

import scaling.train as t
from scaling.cli import app
from scaling.data import load_data, synthetic
from scaling.model import EfficientNet
from scaling.recipe import Recipe
from scaling.spec import custom_spec, smallest_batch, smallest_feature_size

TINY = custom_spec(0.25, 0.25, 32)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """2 steps of 64 an epoch: continuing a schedule exactly, or resuming, holds at any size."""
    return load_data(None, 32, train_size=128, val_size=100, cache_dir=tmp_path_factory.mktemp("cache"), quiet=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished 1-epoch run (its folder, its command, the environment it ran in); tests leave it as it is."""
    root = tmp_path_factory.mktemp("trained")
    env = {"SCALING_CACHE": str(root / "cache")}
    run = root / "run"
    args = ["train", "--width", "0.25", "--depth", "0.25", "--resolution", "32", "--train-size", "256",
            "--val-size", "100", "--epochs", "1", "--batch-size", "64", "--run-dir", str(run), "--device", "cpu", "-q"]
    r = CliRunner().invoke(app, args, env=env)
    assert r.exit_code == 0, r.output
    return run, args, env


@pytest.fixture
def cli(trained):
    run, args, env = trained
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    yield run, args, env
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing a test ran changed the run


def _one_line_error(r, *words):
    assert r.exit_code == 2, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    for w in words:
        assert w in r.output, r.output


def test_resuming_a_finished_run_changes_nothing(cli):
    run, args, env = cli
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    top1 = json.loads(before["result.json"])["top1"]
    assert top1 is not None and json.loads(before["result.json"])["classes"] == synthetic.class_names(10)
    r = CliRunner().invoke(app, [*args, "--resume"], env=env)
    assert r.exit_code == 0, r.output
    assert "is finished" in r.output and f"top-1 {100 * top1:.2f}%" in r.output
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # result, checkpoint, weights untouched


@pytest.mark.parametrize("change, words", [
    (["--train-size", "200"], ["another run", "data (the same classes"]),
    (["--seed", "1"], ["another run", "seed (0 -> 1)"]),
    (["--width", "0.5"], ["another run", "network (", "width 0.25 -> 0.5"]),
    (["--lr", "0.1"], ["another run", "recipe (lr"]),
    (["--epochs", "2"], ["cosine schedule over 1 epochs", "--fresh"]),
])
def test_resuming_another_run_is_refused_saying_what_differs(change, words, cli):
    run, args, env = cli
    before = (run / "result.json").read_bytes()
    argv = list(args)
    for k in range(0, len(change), 2):
        if change[k] in argv:
            argv[argv.index(change[k]) + 1] = change[k + 1]
        else:
            argv += change[k:k + 2]
    _one_line_error(CliRunner().invoke(app, [*argv, "--resume"], env=env), *words)
    assert (run / "result.json").read_bytes() == before


def test_more_epochs_continue_a_step_schedule_exactly(data, tmp_path):
    rec = Recipe(epochs=2, batch_size=64, lr=0.4, schedule="step", decay_epochs=1.0, decay_rate=0.5)
    whole = t.train(TINY, data, rec, device="cpu", seed=0, quiet=True, deterministic=True)
    first = t.train(TINY, data, rec.replace(epochs=1), device="cpu", seed=0, quiet=True, deterministic=True,
                    checkpoint=tmp_path / "c.pt")
    assert first.epochs_completed == 1
    more = t.train(TINY, data, rec, device="cpu", seed=0, quiet=True, deterministic=True,
                   checkpoint=tmp_path / "c.pt", resume=True)
    assert more.epochs_completed == 2 and len(more.history) == 2
    assert more.top1 == whole.top1 and more.history[1]["loss"] == whole.history[1]["loss"]
    fewer = rec.replace(epochs=1)
    with pytest.raises(ValueError, match="2 epochs done, more than --epochs 1"):
        t.train(TINY, data, fewer, device="cpu", seed=0, quiet=True, checkpoint=tmp_path / "c.pt", resume=True)


def test_a_checkpoint_without_class_names_resumes_with_a_warning(data, tmp_path):
    rec = Recipe(epochs=2, batch_size=64, lr=0.4)

    def stop(epoch, top1):  # killed after the first epoch's checkpoint
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        t.train(TINY, data, rec, device="cpu", seed=0, quiet=True, checkpoint=tmp_path / "c.pt", on_epoch=stop)
    ck = torch.load(tmp_path / "c.pt", weights_only=False)
    for k in ("classes", "data_fingerprint"):
        del ck["result"][k]  # as an older version wrote it
    torch.save(ck, tmp_path / "c.pt")
    with pytest.warns(UserWarning, match="stores no class names"):
        r = t.train(TINY, data, rec, device="cpu", seed=0, quiet=True, checkpoint=tmp_path / "c.pt", resume=True)
    assert r.status == "ok" and r.epochs_completed == 2


def test_evaluate_maps_classes_by_name_and_refuses_others(cli, tmp_path):
    run, _, env = cli
    result = json.loads((run / "result.json").read_text())
    ev = ["evaluate", "custom", "--val-size", "100", "--device", "cpu", "-q", "--weights"]
    saved = torch.load(run / "weights.pt")
    classes = saved["classes"]
    assert classes == result["classes"] and len(classes) == 10
    # The same classes in another order, with the classifier's rows in that order too: the same answers.
    order = list(range(len(classes)))[::-1]
    swapped = dict(saved, classes=[classes[i] for i in order])
    sd = dict(saved["state_dict"])
    sd["classifier.weight"], sd["classifier.bias"] = sd["classifier.weight"][order], sd["classifier.bias"][order]
    swapped["state_dict"] = sd
    torch.save(swapped, tmp_path / "swapped.pt")
    r = CliRunner().invoke(app, [*ev, str(tmp_path / "swapped.pt")], env=env)
    assert r.exit_code == 0, r.output
    assert f"top-1 {100 * result['top1']:.2f}%" in r.output 
    assert "another order" in r.output
    # A class renamed: refused in one line naming it.
    renamed = dict(saved, classes=[*classes[:-1], "zz_" + classes[-1]])
    torch.save(renamed, tmp_path / "renamed.pt")
    _one_line_error(CliRunner().invoke(app, [*ev, str(tmp_path / "renamed.pt")], env=env),
                    "other classes", f"missing zz_{classes[-1]}", f"extra {classes[-1]}")
    # An older file without class names still loads, with a warning.
    old = {k: v for k, v in saved.items() if k != "classes"}
    torch.save(old, tmp_path / "old.pt")
    r = CliRunner().invoke(app, [*ev, str(tmp_path / "old.pt")], env=env)
    assert r.exit_code == 0 and "stores no class names" in r.output
    assert f"top-1 {100 * result['top1']:.2f}%" in r.output


@pytest.mark.parametrize("resolution", [32, 33, 48, 64, 100])
def test_smallest_feature_size_is_what_batch_norm_sees(resolution):
    spec = custom_spec(0.25, 0.25, resolution)
    net = EfficientNet(spec).eval()
    sides = []
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.register_forward_hook(lambda mod, inp, out: sides.append(inp[0].shape[-1] * inp[0].shape[-2]))
    with torch.no_grad():
        net(torch.zeros(1, 3, resolution, resolution))
    assert min(sides) == smallest_feature_size(spec) ** 2
    assert smallest_batch(spec) == (2 if min(sides) == 1 else 1)


@pytest.mark.parametrize("option", ["--batch-size", "--micro-batch"])
def test_a_batch_of_one_value_per_channel_is_refused(option, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["train", "--width", "0.25", "--depth", "0.25", "--resolution", "32", option, "1", "--device", "cpu", "-q"]
    _one_line_error(CliRunner().invoke(app, args), option, "1x1 batch-norm", "smallest batch that works is 2")
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ValueError, match="smallest batch that works is 2"):
        t.train(TINY, load_data(None, 32, train_size=20, val_size=10, cache_dir=tmp_path / "c", quiet=True),
                Recipe(epochs=1, batch_size=1), device="cpu", quiet=True)
