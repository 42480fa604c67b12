"""The Python API: run_search trains what the command line would and Study.open reads it back."""

import pandas as pd
import pytest

from scaling.api import Study, run_search
from scaling.errors import InputError
from scaling.study import resolve
from tests.test_resume_elsewhere import moved as here  # noqa: F401  (its study file and data folder)


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
