"""The base network as a choice of the study (issue 15): ``--base`` in the commands and
``base = "..."`` in study files; a user's network from ``module:function`` (tests/user_net.py)
through candidates, train and search on the CPU, counted by a traced fvcore count cached on
disk; ResNet-50 and MobileNetV2 counted exactly; the objectives beyond accuracy
(ACC x (X / T)^w); old studies read as efficientnet-b0's; bad input exits 2 in one line."""

from __future__ import annotations

import json
import warnings

import optuna
import pytest
import torch
from typer.testing import CliRunner

from scaling.bases import (DEFAULT, MobileNetV2Spec, ResNetSpec, UserSpec, base_name, build, counting, get_base,
                           spec_from_dict)
from scaling.cli import app
from scaling.complexity import count
from scaling.records import TrialRecord
from scaling.study import StudyConfig, StudyError, check_or_save, read_toml

USER = "tests.user_net:tiny"
RESNET50_PARAMS, RESNET50_FLOPS = 25_557_032, 4_089_184_256  # torchvision's resnet50 at 224 px (test_bases)
MOBILENET_V2_PARAMS, MOBILENET_V2_FLOPS = 3_504_872, 300_774_272


def _fvcore(model: torch.nn.Module, resolution: int) -> tuple[int, int, int]:
    """Plain fvcore, directly: conv and linear multiply-adds, parameters, activations."""
    from fvcore.nn import ActivationCountAnalysis, FlopCountAnalysis, parameter_count

    model = model.eval()
    x = torch.zeros(1, 3, resolution, resolution)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = FlopCountAnalysis(model, x)
        f.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        by_op = f.by_operator()
        a = ActivationCountAnalysis(model, x)
        a.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        return by_op.get("conv", 0) + by_op.get("linear", 0), parameter_count(model)[""], a.total()


def _run(args):
    return CliRunner().invoke(app, args)


# ---------------------------------------------------------------------------- the interface


def test_one_interface_for_every_base(data_cache):
    from scaling.model import EfficientNet
    from scaling.spec import NetworkSpec

    for name, kind in (("efficientnet-b0", NetworkSpec), ("resnet50", ResNetSpec), ("mobilenet_v2", MobileNetV2Spec),
                       (USER, UserSpec)):
        base = get_base(name)
        spec = base.spec(width=0.25, depth=0.5, resolution=32, num_classes=10)
        assert isinstance(spec, kind) and base_name(spec) == base.name
        assert spec_from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
        scaled = spec.replace(width=0.5, depth=1.0, resolution=40)
        assert count(scaled).flops > count(spec).flops
        model = build(scaled)
        assert model(torch.zeros(2, 3, 40, 40)).shape == (2, 10)
        if name == "efficientnet-b0":
            assert isinstance(model, EfficientNet) and base.analytic
    assert get_base("mobilenet_v2").name == "mobilenetv2" and get_base("b0").name == DEFAULT


@pytest.mark.parametrize("ref", [USER, "resnet50", "mobilenetv2"])
def test_scaled_counts_equal_a_direct_fvcore_trace_and_are_cached(data_cache, monkeypatch, ref):
    spec = get_base(ref).spec(width=0.5, depth=1.5, resolution=32, num_classes=10)
    expected = _fvcore(build(spec), 32)
    c = count(spec)
    assert (c.flops, c.params, c.activations) == expected
    monkeypatch.setattr(counting, "trace", lambda s: (_ for _ in ()).throw(AssertionError("traced again")))
    assert count(spec) == c  # the second run reads the disk cache: no trace


def test_user_counts_follow_the_code(tmp_path, data_cache, monkeypatch):
    """The cache key holds the module's source: edited code is counted again."""
    (tmp_path / "mynet.py").write_text("from torch import nn\n"
                                       "def net(width=1.0, depth=1.0):\n"
                                       "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = UserSpec("mynet:net", resolution=8, num_classes=2)
    first = counting.cache_key(spec)
    (tmp_path / "mynet.py").write_text((tmp_path / "mynet.py").read_text() + "# edited\n")
    assert counting.cache_key(spec) != first


# ---------------------------------------------------------------------------- the commands


def test_resnet50_and_mobilenetv2_through_flops_and_candidates(data_cache):
    for base, params, flops in (("resnet50", RESNET50_PARAMS, RESNET50_FLOPS),
                                ("mobilenetv2", MOBILENET_V2_PARAMS, MOBILENET_V2_FLOPS)):
        r = _run(["flops", "--base", base, "--by", "total", "--format", "json"])
        assert r.exit_code == 0, r.output
        row = json.loads(r.output)[0]
        assert (row["flops"], row["params"]) == (flops, params)
    # by stage (flops' default): the network's top-level modules, summing to the total
    r = _run(["flops", "--base", "resnet50", "--format", "json"])
    assert r.exit_code == 0, r.output
    stages = json.loads(r.output)
    assert [s["stage"] for s in stages] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3",
                                            "layer4", "avgpool", "fc"]
    assert sum(s["flops"] for s in stages) == RESNET50_FLOPS and sum(s["params"] for s in stages) == RESNET50_PARAMS
    # the grid at a small base: every candidate's count is the direct trace of its network
    r = _run(["candidates", "--base", "resnet50", "--base-resolution", "32", "--base-width", "0.25",
              "--alpha-range", "1,1.2", "--beta-range", "1,1.2", "--gamma-range", "1,1.2", "--step", "0.2",
              "--tolerance", "0.2", "--flops-tolerance", "0.5", "--format", "json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert len(rows) == 3  # (1, 1.2, 1.2), (1.2, 1, 1.2), (1.2, 1.2, 1): products within 20% of 2
    base_flops = _fvcore(build(ResNetSpec(width=0.25, resolution=32)), 32)[0]
    for row in rows:
        spec = ResNetSpec(width=0.25 * row["w"], depth=row["d"], resolution=row["resolution"])
        f, p, _ = _fvcore(build(spec), row["resolution"])
        assert (row["flops"], row["params"]) == (f, p)
        assert row["flops_ratio"] == round(f / base_flops, 4)
        assert row["repeats"] == "-".join(str(n) for n in spec.stage_blocks())


def test_user_network_through_candidates_and_train(tmp_path, data_cache, monkeypatch):
    from tests.user_net import tiny

    monkeypatch.chdir(tmp_path)
    r = _run(["candidates", "--base", USER, "--base-resolution", "32", "--multiple", "4", "--step", "0.1",
              "--format", "json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert len(rows) == 13
    for row in rows:
        expected = _fvcore(tiny(width=row["w"], depth=row["d"], num_classes=1000), row["resolution"])
        assert (row["flops"], row["params"], row["activations"]) == expected
        assert abs(row["flops_ratio"] / 2 - 1) <= 0.1  # held within 10% of twice the base's
    r = _run(["train", "--base", USER, "--width", "1.5", "--resolution", "32", "--epochs", "1", "--train-size", "100",
              "--val-size", "50", "--batch-size", "50", "--device", "cpu", "-q"])
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "runs" / "tiny-w1.5-d1-r32-seed0" / "result.json").read_text())
    assert result["status"] == "ok" and result["spec"]["kind"] == "user" and result["spec"]["function"] == USER
    assert spec_from_dict(result["spec"]) == UserSpec(USER, width=1.5, resolution=32, num_classes=10, name="tiny")


@pytest.mark.parametrize("args, message", [
    (["candidates", "--base", "vgg16"], "unknown base 'vgg16'"),
    (["candidates", "--base", "tests.nowhere:tiny"], "cannot import module 'tests.nowhere'"),
    (["flops", "--base", "tests.user_net:missing"], "has no function 'missing'"),
    (["train", "--base", "tests.user_net:no_width"], "must take width= and depth="),
    (["family", "--base", "tests.user_net:NOT_CALLABLE"], "is not a function"),
    (["sweep", "--dimension", "width", "--values", "1.2", "--base", "tests.user_net:not_a_module",
      "--base-resolution", "16"], "not a torch.nn.Module"),
    (["search", "--base", "nocolon:", "--name", "x"], "module:function"),
    (["export", "--onnx", "x.onnx", "--base", "tests.nowhere:f"], "cannot import"),
    (["flops", "efficientnet-b3", "--base", "resnet50"], "NAME names an EfficientNet"),
])
def test_bad_base_exits_2_in_one_line(tmp_path, data_cache, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    r = _run(args)
    assert r.exit_code == 2, r.output
    assert message in r.output and r.output.strip().count("\n") == 0 and "Traceback" not in r.output


# ---------------------------------------------------------------------------- study files, old studies


def test_study_files_take_base_and_objective(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "s"\n[grid]\nbase = "mobilenet_v2"\n[search]\nobjective = "accuracy-flops"\n'
                    "objective_target = 400000000\nobjective_exponent = -0.07\n")
    c = StudyConfig(**read_toml(path))
    assert (c.base, c.objective, c.objective_target, c.objective_exponent) == ("mobilenetv2", "accuracy-flops",
                                                                               4e8, -0.07)
    path.write_text('[search]\nobjective = "accuracy-speed"\n')
    with pytest.raises(StudyError, match=r"\[search\] objective"):
        read_toml(path)
    with pytest.raises(StudyError, match="needs its target"):
        StudyConfig(objective="accuracy-latency")
    with pytest.raises(StudyError, match="unknown base"):
        StudyConfig(base="vgg16")


def test_old_studies_read_as_efficientnet_b0(tmp_path):
    """A study.json and trials written before bases were a choice: the definition resumes
    unchanged, and each trial's base is efficientnet-b0."""
    old = StudyConfig(name="old").to_dict()
    for k in ("base", "objective", "objective_target", "objective_exponent"):
        old.pop(k)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "study.json").write_text(json.dumps(old))
    check_or_save(StudyConfig(name="old"), tmp_path / "old")  # the same study: no refusal
    assert StudyConfig.from_json(json.dumps(old)).base == DEFAULT
    with pytest.raises(StudyError, match="other settings \\(base\\)"):
        check_or_save(StudyConfig(name="old", base="resnet50"), tmp_path / "old")
    t = optuna.trial.create_trial(value=0.5, user_attrs={"network": "d1", "seed": 0, "flops": 10})
    rec = TrialRecord.from_trial(t)
    assert rec.base is None and rec.base_network == DEFAULT and rec.network_spec() is None


# ---------------------------------------------------------------------------- search and objectives

TOML = """
name = "{name}"
[data]
source = "default"
base_resolution = 32
train_size = 100
val_size = 50
[grid]
base = "{base}"
phi = 1
alpha = [1.0, 1.2]
beta = [1.0, 1.2]
gamma = [1.0, 1.2]
step = 0.1
tolerance = 0.2
multiple = 4
flops_tolerance = 0.5
[search]
sampler = "grid"
trials = 2
{objective}
[recipe]
name = "proxy"
epochs = 1
batch_size = 50
"""


def _search(tmp_path, name: str, objective: str = "", base: str = USER):
    (tmp_path / f"{name}.toml").write_text(TOML.format(name=name, base=base, objective=objective))
    r = _run(["search", "--study", f"{name}.toml", "-q", "--no-report"])
    assert r.exit_code == 0, r.output
    url = f"sqlite:///{tmp_path / 'studies' / name / 'optuna.db'}"
    return optuna.load_study(study_name=name, storage=url)


def test_user_network_through_search_with_each_objective(tmp_path, data_cache, monkeypatch):
    from tests.user_net import tiny

    monkeypatch.chdir(tmp_path)
    study = _search(tmp_path, "acc")
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2
    base_flops = _fvcore(tiny(width=1.0, depth=1.0, num_classes=10), 32)[0]
    for t in trials:
        rec = TrialRecord.from_trial(t)
        spec = rec.network_spec()
        assert rec.base == USER and isinstance(spec, UserSpec) and spec.num_classes == 10
        assert (rec.flops, rec.params, rec.activations) == _fvcore(tiny(width=spec.width, depth=spec.depth),
                                                                   spec.resolution)
        assert rec.objective is None and rec.top1 == t.value
        assert rec.to_attrs() == t.user_attrs

    flops = _search(tmp_path, "flops", 'objective = "accuracy-flops"\nobjective_exponent = -0.5')
    for t in flops.get_trials():
        rec = TrialRecord.from_trial(t)
        assert rec.objective_target == base_flops  # T: the base network's FLOPs by default
        assert t.value == rec.objective == pytest.approx(rec.top1 * (rec.flops / base_flops) ** -0.5, rel=1e-12)
        assert rec.top1 == t.user_attrs["top1"] and rec.to_attrs() == t.user_attrs
    assert flops.metric_names == ["accuracy-flops"]

    latency = _search(tmp_path, "latency", 'objective = "accuracy-latency"\nobjective_target = 2.5')
    for t in latency.get_trials():
        rec = TrialRecord.from_trial(t)
        assert rec.latency_ms > 0 and rec.objective_target == 2.5
        assert t.value == pytest.approx(rec.top1 * (rec.latency_ms / 2.5) ** -0.07, rel=1e-12)

    from scaling.results import results_frame

    df = results_frame(flops)
    assert list(df["objective"]) == sorted(df["objective"], reverse=True) and (df["base"] == USER).all()
