"""The Python API: run_search, run_family and run_sweep train what the command line would and Study.open reads it back."""

import io
import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from scaling.api import Study, Trained, run_family, run_search, run_sweep
from scaling.cli import app
from scaling.complexity import count
from scaling.compound import PAPER, scaled_spec
from scaling.errors import InputError
from scaling.search import base_spec
from scaling.study import check_or_save, resolve
from tests.test_resume_elsewhere import moved as here  # noqa: F401  (its study file and data folder)
from tests.test_search import TOML


def test_run_search_then_open(here):
    study = run_search("moved.toml", quiet=True)
    assert study.name == "moved" and study.folder == here / "studies" / "moved"
    ranking = study.ranking()
    assert len(ranking) == 2 and list(ranking["rank"]) == [1, 2]
    assert ranking["top1"].is_monotonic_decreasing
    saved = pd.read_csv(here / "studies" / "moved" / "results.csv")  # what the command line writes too
    assert list(saved["network"]) == list(ranking["network"]) and list(saved["top1"]) == list(ranking["top1"])
    assert (here / "studies" / "moved" / "trials.json").is_file()
    records = [r for r in study.records() if r.status == "COMPLETE"]
    assert sorted(r.network for r in records) == sorted(ranking["network"])
    assert all(r.kind == "grid" and r.seed == 0 and r.triple is not None for r in records)
    assert study.series().empty and study.laws() == {} and study.seed_agreement() is None

    again = Study.open("moved")  # another process, later: the same results, nothing trained by reading
    assert again.config == resolve(here / "moved.toml")
    pd.testing.assert_frame_equal(again.ranking(), ranking)
    before = len(again.optuna_study().trials)
    assert run_search("moved.toml").ranking()["network"].tolist() == ranking["network"].tolist()  # resumed
    assert len(again.optuna_study().trials) == before  # nothing trained twice


def test_bad_input_is_an_input_error(here):
    with pytest.raises(InputError, match="no study 'nothing'"):
        Study.open("nothing")
    with pytest.raises(InputError, match="data missing"):
        run_search("moved.toml", data="missing")
    run_search("moved.toml")
    with pytest.raises(InputError, match="other settings"):
        run_search(resolve(here / "moved.toml").replace(seeds=2))


# ---------------------------------------------------------------------------- the family and the sweeps

FAMILY = "compound (1.2, 1.1, 1.15)"


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """The tiny study of test_search (the embedded data, 100 images at 32 px), its file in a fresh folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "cache"))
    (tmp_path / "tiny.toml").write_text(TOML)
    return tmp_path / "tiny.toml"


def _as_written(df: pd.DataFrame) -> pd.DataFrame:
    """A frame as its CSV reads back."""
    return pd.read_csv(io.StringIO(df.to_csv(index=False)))


def _trials(tmp_path, name: str) -> int:
    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'studies' / 'tiny' / 'optuna.db'}")
    return len([t for t in study.trials if not t.user_attrs.get("skipped")])


def test_run_family_and_sweeps_train_beside_the_study(tiny, tmp_path):
    fam = run_family("tiny.toml", phis=[0, 1])  # the tiny study: the embedded data, 100 images at 32 px
    assert isinstance(fam, Trained) and fam.code == 0 and fam.failures.empty
    assert fam.name == "tiny" and fam.folder == tmp_path / "studies" / "tiny"
    assert [p.suffix() for p in fam.plans] == ["family-1.2-1.1-1.15"]
    m = fam.members
    assert list(m["series"]) == [FAMILY, FAMILY] and list(m["label"]) == ["phi=0", "phi=1"]
    assert list(m["kind"]) == ["family", "family"] and list(m["resolution"]) == [32, 40]
    assert m["top1"].between(0, 1).all() and (m["seeds"] == 1).all() and (m["latency_ms"] > 0).all()
    base = base_spec(resolve(tiny)).replace(num_classes=10)
    assert list(m["flops"]) == [count(scaled_spec(base, PAPER, phi)).flops for phi in (0, 1)]
    # What it wrote is what it returned, and what Study.open reads back.
    pd.testing.assert_frame_equal(pd.read_csv(fam.folder / "series.csv"), _as_written(fam.series))
    pd.testing.assert_frame_equal(pd.read_csv(fam.folder / "laws.csv"), _as_written(fam.laws))
    pd.testing.assert_frame_equal(Study("tiny", fam.folder, fam.url, resolve(tiny)).series(), fam.series)
    assert _trials(tmp_path, "tiny.family-1.2-1.1-1.15") == 2
    # The command line asks the same of the same storage: nothing is trained again.
    r = CliRunner().invoke(app, ["family", "--train", "--study", "tiny.toml", "--phi", "0-1", "-q", "--no-report"])
    assert r.exit_code == 0, r.output
    assert "phi=1" in r.output and _trials(tmp_path, "tiny.family-1.2-1.1-1.15") == 2

    width = run_sweep("tiny.toml", dimension="width", match="family", phis=[1])
    assert [p.suffix() for p in width.plans] == ["sweep-width"] and width.code == 0
    w = width.members.iloc[0]
    assert len(width.members) == 1 and w["series"] == "width" and w["matched_phi"] == 1 and w["multiplier"] > 1
    assert (w["d"], w["r"], w["resolution"]) == (1.0, 1.0, 32)
    target = m.iloc[1]["flops"]  # the phi=1 member's: the width-only network nearest it in FLOPs
    assert abs(w["flops"] - target) / target < 0.15
    assert list(width.series["series"]) == [FAMILY, FAMILY, "width"]  # every series, as in series.csv
    pd.testing.assert_frame_equal(pd.read_csv(width.folder / "series.csv"), _as_written(width.series))
    assert list(width.laws["series"]) == [FAMILY, "width"] and _trials(tmp_path, "tiny.sweep-width") == 1


@pytest.mark.parametrize("call, says", [
    (lambda: run_family("tiny.toml", alpha=0.9), "alpha must be a number >= 1"),
    (lambda: run_family("tiny.toml", phis=[8], official=True), "B0..B7"),
    (lambda: run_family(name="nothing"), "no study 'nothing'"),
    (lambda: run_family("tiny.toml", epochs=7), "other settings"),
    (lambda: run_sweep("tiny.toml", dimension="height", values=[2]), "dimension must be one of"),
    (lambda: run_sweep("tiny.toml", dimension="width"), "either values or match"),
    (lambda: run_sweep("tiny.toml", dimension="width", values=[0.5]), "1..64"),
])
def test_bad_family_and_sweep_input_is_an_input_error_before_any_training(tiny, tmp_path, call, says):
    check_or_save(resolve(tiny), tmp_path / "studies" / "tiny")  # the study exists, nothing trained
    with pytest.raises(InputError, match=re.escape(says)):
        call()
    assert not (tmp_path / "studies" / "tiny" / "optuna.db").exists()
