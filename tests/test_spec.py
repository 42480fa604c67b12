"""Block strings, rounding rules and exact parameter counts of the named networks."""

import json
from pathlib import Path

import pytest
import torch

from scaling import EfficientNet, NetworkSpec, spec_for
from scaling.spec import B0_BLOCKS, NAMED, BlockArgs, canonical_name, round_channels, round_repeats

PARAMS = json.loads((Path(__file__).parent / "reference.json").read_text())["params"]


@pytest.mark.parametrize("text", B0_BLOCKS + ("r2_k5_s22_e6_i24_o40_se0.25_noskip", "r1_k3_s11_e1_i32_o16"))
def test_block_string_round_trip(text):
    b = BlockArgs.decode(text)
    assert b.encode() == text
    assert BlockArgs.decode(b.encode()) == b


def test_block_string_fields():
    b = BlockArgs.decode("r3_k5_s22_e6_i40_o80_se0.25_noskip")
    assert (b.repeats, b.kernel, b.stride, b.expand, b.w_in, b.w_out, b.se, b.skip) == (3, 5, 2, 6, 40, 80, 0.25, False)
    assert BlockArgs.decode("k3_r1_s2_e1_o16_i32").stride == 2  # any order, short stride


@pytest.mark.parametrize("text, part", [
    ("r1_k3_s11_e1_i32_x16_se0.25", "'x16'"),
    ("r1_k3_s11_e1_i32_se0.25", "'o'"),
    ("r1_k3_s12_e1_i32_o16", "'s'"),
    ("r1_r2_k3_s11_e1_i32_o16", "'r'"),
    ("r0_k3_s11_e1_i32_o16", "'r'"),
    ("r1_k3_s11_e1.5_i32_o16", "'e'"),
    ("r1_k3_s11_e1_i32_o16_se2", "'se'"),
])
def test_block_string_errors_name_the_part(text, part):
    with pytest.raises(ValueError, match=part):
        BlockArgs.decode(text)


def test_round_channels_reference_rule():
    assert round_channels(32, 1.0) == 32
    assert round_channels(40, 1.1) == 48  # 44 -> 48 (nearest multiple of 8, ties up)
    assert round_channels(112, 1.1) == 120  # 123.2 -> 120, within 10%
    assert round_channels(16, 1.2) == 24  # 19.2 -> 16 would lose 17%: 24
    assert round_channels(1280, 1.1) == 1408
    assert round_channels(3, 1.0) == 8  # never below the divisor
    for c in (16, 24, 40, 80, 112, 192, 320):
        for w in (1.0, 1.05, 1.1, 1.37, 2.0, 4.3):
            r = round_channels(c, w)
            assert r % 8 == 0 and r >= 0.9 * c * w


def test_round_repeats_up():
    assert [round_repeats(r, 1.1) for r in (1, 2, 3, 4)] == [2, 3, 4, 5]
    assert round_repeats(3, 1.0) == 3
    assert round_repeats(4, 3.1) == 13


@pytest.mark.parametrize("name", list(NAMED))
def test_parameter_counts_exact(name):
    with torch.device("meta"):
        net = EfficientNet.from_name(name)
    assert sum(p.numel() for p in net.parameters()) == PARAMS[name]


def test_names_and_overrides():
    assert canonical_name("b3") == canonical_name("efficientnet_b3") == canonical_name("tf_efficientnet_b3")
    with pytest.raises(ValueError, match="unknown network"):
        spec_for("efficientnet-b9")
    s = spec_for("b2", num_classes=10, padding="symmetric")
    assert (s.width, s.depth, s.resolution, s.dropout, s.num_classes) == (1.1, 1.2, 260, 0.3, 10)
    with pytest.raises(ValueError, match="padding"):
        spec_for("b0", padding="valid")


def test_spec_dict_round_trip_and_key():
    s = spec_for("b4", num_classes=7)
    assert NetworkSpec.from_dict(s.to_dict()) == s
    assert s.architecture_key() == NetworkSpec.from_dict(s.to_dict()).architecture_key()
    assert s.replace(dropout=0.1).architecture() == s.architecture()  # dropout is not structure
    assert s.replace(resolution=384).architecture() != s.architecture()
    with pytest.raises(ValueError, match="unknown spec fields"):
        NetworkSpec.from_dict({**s.to_dict(), "colour": 1})
