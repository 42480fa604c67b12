"""Issue 15's study with another base: its file, and the sweep's table for a base other than B0."""

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scaling.cli import app
from scaling.study import resolve

STUDIES = Path(__file__).resolve().parent.parent / "studies"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "cache"))


def test_the_mobilenetv2_study_is_the_gpu_proxy_with_another_base():
    ours, b0 = resolve(STUDIES / "cifar10-mobilenetv2.toml"), resolve(STUDIES / "cifar10.toml")
    assert ours.base == "mobilenetv2" and b0.base == "efficientnet-b0"
    assert dataclasses.replace(ours, name=b0.name, base=b0.base) == b0  # the data, grid and recipe are the same


def test_sweep_heads_its_ratio_by_the_base():
    r = CliRunner().invoke(app, ["sweep", "--base", "mobilenetv2", "--base-width", "0.25", "--base-resolution", "32",
                                 "--dimension", "width", "--values", "1.5"])
    assert r.exit_code == 0, r.output
    assert "mobilenetv2 scaled by width alone" in r.output and "FLOPs x base" in r.output and "x B0" not in r.output
