"""The scalable ResNet-50 and MobileNetV2 bases: torchvision's networks at scale 1 (parameters,
state dict, outputs, FLOPs), the scaling rules at width 1.5 and depth 2, the FLOPs cache, the
refused multipliers. torchvision is used here only to compare."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
import torchvision
from torchvision.models import resnet as tv_resnet
from torchvision.models._utils import _make_divisible

from scaling.bases import (DIVISOR, ROUND_LIMIT, MobileNetV2Spec, ResNetSpec, build, counting, flops,
                           round_blocks, round_channels, spec_from_dict)
from scaling.bases.mobilenet import InvertedResidual

RESNET50_PARAMS = 25_557_032
MOBILENET_V2_PARAMS = 3_504_872
RESNET50_FLOPS = 4_089_184_256  # multiply-adds at 224 px, batch 1: convolutions and the classifier
MOBILENET_V2_FLOPS = 300_774_272
COUNTED = ("conv", "linear")  # fvcore's by_operator names of what scaling.complexity counts


@pytest.fixture(scope="module")
def torchvision_models():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"resnet50": torchvision.models.resnet50().eval(),
                "mobilenet_v2": torchvision.models.mobilenet_v2().eval()}


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _shapes(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def _direct_fvcore(model: torch.nn.Module, resolution: int):
    """Plain fvcore, every default handle: the total and the count per operator."""
    from fvcore.nn import FlopCountAnalysis

    a = FlopCountAnalysis(model.eval(), torch.zeros(1, 3, resolution, resolution))
    a.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    with torch.no_grad():
        return a.total(), dict(a.by_operator())


# ---------------------------------------------------------------------------- rules


def test_rounding_rule_is_torchvision_make_divisible():
    assert (DIVISOR, ROUND_LIMIT) == (8, 0.9)
    for c in (3, 11, 16, 24, 32, 64, 96, 160, 320, 1280):
        for w in (0.25, 0.35, 0.5, 0.75, 1.0, 1.1, 1.21, 1.4, 1.5, 2.0, 3.1):
            assert round_channels(c, w) == _make_divisible(c * w, 8), (c, w)
    assert round_channels(24, 1.5) == 40  # 36 to the nearest multiple of 8 (up)
    assert round_channels(64, 1.5) == 96
    assert round_channels(11, 1.0) == 16  # the nearest multiple, 8, loses more than 10%
    assert round_channels(3, 1.0) == 8  # never below one divisor
    assert [round_blocks(n, 1.5) for n in (1, 2, 3, 4, 6)] == [2, 3, 5, 6, 9]
    assert round_blocks(3, 1.01) == 4  # up, never down


@pytest.mark.parametrize("make, what", [
    (lambda **k: ResNetSpec(**k), "resnet50"), (lambda **k: MobileNetV2Spec(**k), "mobilenet_v2")])
def test_bad_multipliers_raise(make, what):
    for depth in (0, -1, math.nan, math.inf):
        with pytest.raises(ValueError, match=rf"{what}: depth must be a positive"):
            make(depth=depth)
    for width in (0, 0.0, -0.5, math.nan, math.inf):
        with pytest.raises(ValueError, match=rf"{what}: width must be a positive"):
            make(width=width)
    with pytest.raises(ValueError, match="resolution"):
        make(resolution=0)
    with pytest.raises(ValueError, match="num_classes"):
        make(num_classes=0)
    make(depth=1, width=0.1)  # a small width
    assert make(depth=0.25).stage_blocks()[:2] == [1, 1]  # below 1 (the CPU's reduced base): a block a stage at least


def test_build_refuses_other_specs():
    with pytest.raises(TypeError, match="not a base network spec"):
        build(object())


def test_spec_round_trips_through_its_dict():
    for spec in (ResNetSpec(width=1.5, depth=2, resolution=32, num_classes=10), MobileNetV2Spec(width=0.75)):
        d = spec.to_dict()
        assert d["kind"] == spec.kind and json.loads(json.dumps(d)) == d
        assert spec_from_dict(d) == spec
    with pytest.raises(ValueError, match="unknown base network kind 'vgg16'"):
        spec_from_dict({"kind": "vgg16"})
    with pytest.raises(ValueError, match="resnet50: .*dropout"):
        spec_from_dict({"kind": "resnet50", "dropout": 0.1})
    with pytest.raises(ValueError, match="depth must be"):
        spec_from_dict({"kind": "mobilenet_v2", "depth": 0})


# ---------------------------------------------------------------------------- scale 1


@pytest.mark.parametrize("spec, name, params", [
    (ResNetSpec(), "resnet50", RESNET50_PARAMS), (MobileNetV2Spec(), "mobilenet_v2", MOBILENET_V2_PARAMS)])
def test_scale_1_is_torchvision(torchvision_models, spec, name, params):
    ref = torchvision_models[name]
    model = build(spec).eval()
    assert _params(model) == _params(ref) == params
    assert _shapes(model) == _shapes(ref)  # same keys, same order, same shapes
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("spec, name, expected", [
    (ResNetSpec(), "resnet50", RESNET50_FLOPS), (MobileNetV2Spec(), "mobilenet_v2", MOBILENET_V2_FLOPS)])
def test_flops_at_scale_1_are_torchvision_direct_count(data_cache, torchvision_models, spec, name, expected):
    assert flops(spec) == expected
    total, by_op = _direct_fvcore(torchvision_models[name], 224)
    assert sum(by_op[k] for k in COUNTED) == expected
    # fvcore's default total also counts batch norm and the global pooling, which the
    # project's unit (scaling.complexity) leaves out
    assert total - by_op["batch_norm"] - by_op["adaptive_avg_pool2d"] == expected
    assert set(by_op) == set(COUNTED) | {"batch_norm", "adaptive_avg_pool2d"}


# ---------------------------------------------------------------------------- scaled


@pytest.fixture(scope="module")
def resnet_w15_d2():
    spec = ResNetSpec(width=1.5, depth=2, resolution=32, num_classes=10)
    return spec, build(spec).eval()


def test_resnet_width_1_5_depth_2(resnet_w15_d2):
    spec, model = resnet_w15_d2
    assert spec.stem_channels() == 96
    assert spec.stage_channels() == [96, 192, 384, 768]
    assert spec.stage_out_channels() == [384, 768, 1536, 3072]
    assert spec.stage_blocks() == [6, 8, 12, 6]
    assert model.conv1.out_channels == 96
    c_in = 96
    for i, (c, n, stride) in enumerate(zip([96, 192, 384, 768], [6, 8, 12, 6], [1, 2, 2, 2]), start=1):
        stage = getattr(model, f"layer{i}")
        assert len(stage) == n
        for j, block in enumerate(stage):
            assert (block.conv1.in_channels, block.conv1.out_channels) == (c_in, c)
            assert block.conv2.out_channels == c and block.conv2.stride == ((stride, stride) if j == 0 else (1, 1))
            assert block.conv3.out_channels == 4 * c
            assert (block.downsample is not None) == (j == 0)  # every stage's first block changes the shape
            c_in = 4 * c
    assert (model.fc.in_features, model.fc.out_features) == (3072, 10)
    with torch.no_grad():
        y = model(torch.randn(2, 3, 32, 32))
    assert y.shape == (2, 10) and torch.isfinite(y).all()


def test_mobilenet_width_1_5_depth_2():
    spec = MobileNetV2Spec(width=1.5, depth=2, resolution=32, num_classes=10)
    assert spec.stem_channels() == 48
    assert spec.stage_channels() == [24, 40, 48, 96, 144, 240, 480]
    assert spec.stage_blocks() == [2, 4, 6, 8, 6, 6, 2]
    assert spec.head_channels() == 1920
    assert [tuple(r) for r in spec.settings()] == [
        (1, 24, 2, 1), (6, 40, 4, 2), (6, 48, 6, 2), (6, 96, 8, 2), (6, 144, 6, 1), (6, 240, 6, 2), (6, 480, 2, 1)]
    model = build(spec).eval()
    blocks = [m for m in model.features if isinstance(m, InvertedResidual)]
    assert len(model.features) == 1 + 34 + 1 and len(blocks) == 34
    assert model.features[0][0].out_channels == 48
    expected = [(c, s if j == 0 else 1) for _, c, n, s in spec.settings() for j in range(n)]
    got = [(b.conv[-2].out_channels, b.conv[-3][0].stride[0]) for b in blocks]
    assert got == expected
    assert model.features[-1][0].out_channels == 1920 and model.classifier[1].in_features == 1920
    with torch.no_grad():
        y = model(torch.randn(2, 3, 32, 32))
    assert y.shape == (2, 10) and torch.isfinite(y).all()


def test_scaled_structure_agrees_with_torchvision_where_it_has_the_knob():
    """torchvision's MobileNetV2 has a width multiplier, its ResNet a block list: same state dicts."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for w in (0.5, 0.75, 1.4):
            ours = build(MobileNetV2Spec(width=w))
            assert _shapes(ours) == _shapes(torchvision.models.mobilenet_v2(width_mult=w)), w
        ours = build(ResNetSpec(depth=2))
        assert _shapes(ours) == _shapes(tv_resnet.ResNet(tv_resnet.Bottleneck, [6, 8, 12, 6]))


# ---------------------------------------------------------------------------- FLOPs and the cache


@pytest.mark.parametrize("spec, same_network", [
    (ResNetSpec(width=0.5, depth=1.5, resolution=32, num_classes=10),
     ResNetSpec(width=0.5, depth=1.4, resolution=32, num_classes=10)),  # ceil: blocks (5, 6, 9, 5) both
    (MobileNetV2Spec(width=1.5, depth=2, resolution=32, num_classes=10),
     MobileNetV2Spec(width=1.5, depth=1.9, resolution=32, num_classes=10)),
])
def test_scaled_flops_are_a_direct_trace_and_cached(data_cache, monkeypatch, spec, same_network):
    counted = flops(spec)
    _, by_op = _direct_fvcore(build(spec), spec.resolution)
    assert counted == sum(by_op[k] for k in COUNTED)

    path = data_cache / "counts" / f"bases-v{counting.VERSION}.json"
    assert json.loads(path.read_text()) == {counting.cache_key(spec): counting.counted(spec)}
    assert counting.counted(spec)["flops"] == counted

    def no_trace(s):
        raise AssertionError(f"traced {s}: the cache was not used")

    monkeypatch.setattr(counting, "trace", no_trace)
    assert flops(spec) == counted
    assert flops(same_network) == counted  # keyed by the network built, not by the multipliers
    with pytest.raises(AssertionError, match="the cache was not used"):
        flops(spec.replace(resolution=64))


def test_cache_file_keeps_others_entries_and_survives_damage(data_cache, monkeypatch):
    calls = []
    monkeypatch.setattr(counting, "trace", lambda s: calls.append(s) or dict.fromkeys(counting.FIELDS, 1000 + len(calls)))
    a, b = ResNetSpec(resolution=64), MobileNetV2Spec(resolution=64)
    path = counting.cache_path()
    assert path == data_cache / "counts" / "bases-v2.json"
    assert flops(a) == 1001
    other = dict.fromkeys(counting.FIELDS, 7)
    path.write_text(json.dumps({**json.loads(path.read_text()), "other-process": other}))
    assert flops(b) == 1002 and flops(a) == 1001 and len(calls) == 2
    assert json.loads(path.read_text())["other-process"] == other
    path.write_text("{not json")
    assert flops(a) == 1003 and flops(a) == 1003  # counted again, stored again


def test_counts_kept_in_memory_without_a_cache_folder(monkeypatch):
    calls = []
    monkeypatch.setattr(counting, "trace", lambda s: calls.append(s) or dict.fromkeys(counting.FIELDS, 42))
    monkeypatch.setattr(counting, "_counts_folder", lambda: None)
    monkeypatch.setattr(counting, "_memory", {})
    spec = MobileNetV2Spec(resolution=48)
    assert counting.cache_path() is None
    assert flops(spec) == 42 and flops(spec) == 42 and len(calls) == 1


@pytest.mark.parametrize("spec", [
    ResNetSpec(width=1.3, depth=1.6, resolution=40, num_classes=10),
    ResNetSpec(width=0.5, depth=2.0, resolution=33, num_classes=7),  # odd sides: every rounding of the strides
    MobileNetV2Spec(width=1.15, depth=1.25, resolution=56, num_classes=10),
    MobileNetV2Spec(width=0.35, depth=1.0, resolution=97, num_classes=1000),
])
def test_built_in_bases_are_counted_from_shapes_exactly_as_traced(monkeypatch, spec):
    from scaling.bases import base_of

    traced = counting.trace(spec)
    monkeypatch.setattr(counting, "trace", lambda s: pytest.fail(f"traced {s}: a built-in base is counted from shapes"))
    base = base_of(spec)
    c = base.count(spec)
    assert (c.flops, c.params, c.activations) == (traced["flops"], traced["params"], traced["activations"])
    assert base.largest_activation(spec) == traced["largest"]
    assert counting.shapes(spec) == traced
