"""FLOPs, parameters and activations: reference figures and equality with plain fvcore."""

import json
from pathlib import Path

import pytest

from scaling.complexity import CountCache, breakdown, count, count_many, count_traced
from scaling.compound import candidates
from scaling.spec import custom_spec, spec_for

REFERENCE = json.loads((Path(__file__).parent / "reference.json").read_text())
PARAMS, FLOPS = REFERENCE["params"], REFERENCE["gflops"]


@pytest.mark.parametrize("name", list(FLOPS))
def test_flops_match_reference(name):
    c = count(spec_for(name))
    assert c.flops / 1e9 == pytest.approx(FLOPS[name], rel=0.01)
    assert c.params == PARAMS[name]


@pytest.mark.parametrize("spec", [
    spec_for("b0"),
    spec_for("b2"),
    spec_for("b1", padding="symmetric", num_classes=10),
    custom_spec(1.15, 1.3, 232),
    custom_spec(1.0, 1.0, 225, in_channels=1),
], ids=lambda s: s.name or "spec")
def test_fast_count_equals_plain_fvcore(spec):
    assert count(spec) == count_traced(spec)


def test_grid_candidates_equal_plain_fvcore():
    cands = candidates(1.0)
    for c in (cands[0], cands[len(cands) // 2], cands[-1]):
        assert count(c.spec) == count_traced(c.spec)


def test_breakdown_sums_to_total():
    spec = spec_for("b3")
    total = count(spec)
    for by in ("stage", "layer"):
        df = breakdown(spec, by)
        assert int(df["flops"].sum()) == total.flops
        assert int(df["params"].sum()) == total.params
        assert int(df["activations"].sum()) == total.activations
    stages = breakdown(spec, "stage")
    assert list(stages["stage"]) == ["stem"] + [f"stage{i}" for i in range(1, 8)] + ["head", "classifier"]
    layers = breakdown(spec, "layer")
    assert layers.iloc[0]["layer"] == "stem.conv" and layers.iloc[0]["input"] == "3x300x300"
    with pytest.raises(ValueError):
        breakdown(spec, "block")


def test_disk_cache(tmp_path):
    specs = [spec_for("b0"), spec_for("b1")]
    cache = CountCache(tmp_path)
    first = count_many(specs, cache)
    stored = json.loads(cache.path.read_text())
    assert set(stored) == {s.architecture_key() for s in specs}
    assert stored[specs[1].architecture_key()]["flops"] == first[1].flops
    # A poisoned entry proves the second call reads the cache rather than recounting.
    stored[specs[0].architecture_key()]["flops"] = 1
    cache.path.write_text(json.dumps(stored))
    assert count_many(specs, CountCache(tmp_path))[0].flops == 1
