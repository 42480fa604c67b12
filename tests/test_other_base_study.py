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


def test_the_committed_mobilenetv2_study_reads_its_speeds_and_names_its_base(tmp_path):
    """studies/cifar10-mobilenetv2 (one H200, 2026-12-02): every network its GPU trials trained has the
    speed the pass measured after the workers ended, in the report's records too; the family's text
    names the base it scaled."""
    import shutil
    from types import SimpleNamespace

    import optuna

    from scaling.records import study_records
    from scaling.report.sections import family, latency, latency_frame
    from scaling.results import plan_studies, series_frame
    from scaling.speed_pass import study_speeds

    shutil.copytree(STUDIES / "cifar10-mobilenetv2", tmp_path / "cifar10-mobilenetv2")
    url = f"sqlite:///{tmp_path / 'cifar10-mobilenetv2' / 'optuna.db'}"
    grid = optuna.load_study(study_name="cifar10-mobilenetv2", storage=url)
    done = [r for r in study_records(grid) if r.status == "COMPLETE"]
    speeds = study_speeds(grid)
    assert len(done) == 23 and len(speeds) == 23 and {r.network for r in done} == set(speeds)
    assert all(r.latency_ms == speeds[r.network]["latency_ms"] > 0 and r.inference_batch == 256 for r in done)
    assert all(t.user_attrs.get("latency_ms") is None for t in grid.trials)  # measured after, not in the trial

    # The study's series (families, sweeps), read as the report reads them; not read_study, which
    # would count the grid's candidates, an fvcore trace each for this base (a minute on 2 cores)
    plans = plan_studies(url, "cifar10-mobilenetv2")
    records = done + [r for p in plans for r in study_records(p)]
    trained = [r for r in records if r.status == "COMPLETE" and r.trained]
    assert len(trained) == 23 + 6 + 4 + 4 + 4  # the grid, both families, the two sweeps, 2 seeds each of these
    assert all(r.latency_ms is not None and r.speed_alone for r in trained)
    frame = latency_frame(SimpleNamespace(records=tuple(records)))
    assert len(frame) == len(trained)
    assert "measured on cuda:0 (NVIDIA H200) after the workers ended, one network at a time alone on the device" in \
        latency(frame).paragraphs[0]
    text = family(series_frame(plans), {}, "mobilenetv2").paragraphs[0]
    assert text.startswith("Each compound-scaled family member (mobilenetv2 scaled by d = α^φ")
