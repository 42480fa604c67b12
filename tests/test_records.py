"""TrialRecord: a trial's flat user attributes read back and written again unchanged, on the
committed study written by today's code, on a study queued before the one form, and on fresh
trials; the results tables and the report read from records come out as main's code made them."""

import hashlib
import json
import shutil
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from scaling.compound import PAPER, Triple
from scaling.records import TrialRecord, study_records
from scaling.results import (failures_frame, paper_network, paper_rank, plan_studies, results_frame,
                             series_failures, series_frame)
from scaling.storage import load_study
from scaling.study import StudyConfig
from scaling.units import flops_unit

CIFAR10 = Path(__file__).parent / "fixtures" / "cifar10_2026_12_01"  # studies/cifar10/ as it stood then, frozen
LEGACY = Path(__file__).parent / "fixtures" / "legacy_queue" / "studies" / "tiny" / "optuna.db"

# What main's code (91485f8, before records) made of studies/cifar10/optuna.db:
# (rank, alpha, beta, gamma, resolution, params, flops, top1, rank_matched) per network.
RANKING = [
    (1, 1.0, 1.3, 1.1, 64, 6644960, 54212384, 0.8262, 6), (2, 1.0, 1.1, 1.3, 72, 4723046, 62077104, 0.8232, 1),
    (3, 1.0, 1.0, 1.4, 80, 4020358, 56672880, 0.8227, 3), (4, 1.0, 1.35, 1.05, 56, 7168500, 53570480, 0.8226, 7),
    (5, 1.0, 1.4, 1.0, 56, 7895140, 57456656, 0.8164, 5), (6, 1.0, 1.05, 1.35, 72, 4430618, 58656656, 0.8154, 4),
    (7, 1.35, 1.1, 1.1, 64, 8763572, 61911936, 0.8096, 2), (8, 1.3, 1.1, 1.15, 64, 8401952, 57229824, 0.8065, 10),
    (9, 1.25, 1.1, 1.15, 64, 7715084, 54898560, 0.8051, 14), (10, 1.5, 1.1, 1.05, 56, 8763572, 58255056, 0.7974, 11),
    (11, 1.5, 1.05, 1.1, 64, 8191790, 58396864, 0.7959, 12), (12, 1.3, 1.05, 1.2, 64, 7830170, 53714752, 0.7948, 19),
    (13, 1.4, 1.0, 1.2, 64, 7425418, 53455744, 0.7913, 20), (14, 1.65, 1.0, 1.1, 64, 8055370, 59171584, 0.7901, 15),
    (15, 1.55, 1.05, 1.1, 64, 8870240, 64277440, 0.7871, 9), (16, 1.3, 1.15, 1.1, 56, 9535952, 65235392, 0.7862, 8),
    (17, 1.7, 1.0, 1.1, 64, 8366842, 63203584, 0.7806, 13), (18, 2.0, 1.0, 1.0, 56, 8954794, 61041568, 0.7801, 17),
    (19, 1.65, 1.1, 1.0, 56, 9504458, 63911280, 0.7751, 16), (20, 1.25, 1.15, 1.1, 56, 8742488, 62542016, 0.7717, 18),
    (21, 1.65, 1.05, 1.05, 56, 8870240, 60120160, 0.7654, 22), (22, 1.7, 1.05, 1.05, 56, 9231860, 64802272, 0.7534, 21),
    (23, 1.75, 1.0, 1.05, 56, 8366842, 59046304, 0.7453, 23),
]
# (series, label, params, flops, top1 over seeds to 5 decimals, seeds) per trained member of the plan studies.
SERIES = [
    ("compound (1, 1.3, 1.1)", "phi=0", 4020358, 29659072, 0.80685, 2),
    ("compound (1, 1.3, 1.1)", "phi=1", 6644960, 54212384, 0.8215, 2),
    ("compound (1, 1.3, 1.1)", "phi=2", 11394138, 89872704, 0.8257, 2),
    ("compound (1, 1.3, 1.1)", "phi=3", 18935370, 247341344, 0.8453, 2),
    ("compound (1, 1.3, 1.1)", "phi=4", 31795734, 438645664, 0.8513, 2),
    ("compound (1.2, 1.1, 1.15)", "phi=1", 7715084, 54898560, 0.79815, 2),
    ("compound (1.2, 1.1, 1.15)", "phi=2", 10717938, 136245264, 0.80895, 2),
    ("compound (1.2, 1.1, 1.15)", "phi=3", 14662346, 236065280, 0.8286, 2),
    ("width", "w x1.354", 7429788, 54461440, 0.80265, 2),
    ("width", "w x1.771", 12171266, 89556976, 0.82415, 2),
    ("width", "w x2.979", 34619406, 247608144, 0.78605, 2),
]
# The report's candidate table, top-1 column, in the candidates' order (main's code matched trials to them by regex).
CANDIDATE_TOP1 = ["82.27%", "81.54%", "82.32%", "82.62%", "82.26%", "81.64%", "80.51%", "77.17%", "79.48%", "80.65%",
                  "78.62%", "80.96%", "79.13%", "79.59%", "79.74%", "78.71%", "79.01%", "76.54%", "77.51%", "78.06%",
                  "75.34%", "74.53%", "78.01%"]
PAPER_SENTENCE = ("The paper's (1.2, 1.1, 1.15) ranks 9 of 23 (top-1 80.51%; it rounds to the same network as "
                  "(1.25, 1.1, 1.15), (1.15, 1.1, 1.2), (1.05, 1.1, 1.25), (1.1, 1.1, 1.25), (1.1, 1.1, 1.2), "
                  "(1.2, 1.1, 1.2)).")
# sha256 of json.dumps([(caption, columns, rows), ...]) of the report's tables but the fits (bootstrapped), by main's code.
TABLES_SHA = {
    "Candidate networks of the grid (23), with the search's top-1 where trained": "5cbd9f5c5571a49d",
    "Ranking of the 23 trained networks by held-out top-1; at matched FLOPs by the residual (pp) over the grid's "
    "line of top-1 against log FLOPs": "0b3a6becf691852f",
    "The compound-scaled family": "c3bd046ecec793eb",
    "Single-dimension sweeps": "c062c0866d080387",
    # main's, but for the "now" column: the 8 interrupted trials are queued again ("failed" on main)
    "Failed trials and their reasons": "f66cab14927d0d61",
}
STUDIES = ["cifar10", "cifar10.family-1-1.3-1.1", "cifar10.family-1.2-1.1-1.15", "cifar10.official",
           "cifar10.sweep-resolution", "cifar10.sweep-width"]

# Today's attribute names of a finished trial (optuna-dashboard and existing studies read them).
GRID_NAMES = {"alpha", "beta", "gamma", "triples", "product", "d", "w", "r", "resolution", "repeats", "channels",
              "seed", "worker", "code_version", "code_modified", "software", "network", "params", "flops", "activations", "flops_ratio", "classes",
              "curve", "loss_curve", "images_per_second", "peak_memory_mb", "wall_s", "times", "device", "top5",
              "base", "spec",  # base and spec: since bases are a choice (issue 15)
              "depthwise"}  # what ran the depthwise convolutions: "torch" on the CPU (since 2026-12-02)
FAMILY_NAMES = (GRID_NAMES | {"phi", "multiplier", "dimension", "label", "series", "kind", "latency_ms", "throughput",
                              "inference_batch"})


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory):
    """A copy of the committed study folder (the storage is never opened where it lies)."""
    root = tmp_path_factory.mktemp("studies")
    folder = root / "cifar10"
    folder.mkdir()
    shutil.copy(CIFAR10 / "optuna.db", folder / "optuna.db")
    shutil.copy(CIFAR10 / "study.json", folder / "study.json")
    return root


def url_of(root: Path) -> str:
    return f"sqlite:///{root / 'cifar10' / 'optuna.db'}"


def all_trials(url: str):
    for name in optuna.get_all_study_names(url):
        yield from optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


# ----------------------------------------------------------------------------- round trip

def test_the_committed_study_round_trips(cifar10):
    url = url_of(cifar10)
    assert sorted(optuna.get_all_study_names(url)) == STUDIES
    trials = list(all_trials(url))
    assert len(trials) == 65
    for t in trials:
        assert TrialRecord.from_trial(t).to_attrs() == t.user_attrs, t.number


def test_a_study_queued_before_the_one_form_round_trips(tmp_path):
    shutil.copy(LEGACY, tmp_path / "optuna.db")
    trials = list(all_trials(f"sqlite:///{tmp_path / 'optuna.db'}"))
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 2
    for t in trials:
        assert TrialRecord.from_trial(t).to_attrs() == t.user_attrs


def test_records_of_the_committed_study_are_typed(cifar10):
    study = load_study(StudyConfig(name="cifar10"), url_of(cifar10))
    records = study_records(study)
    assert len(records) == 23 and {r.status for r in records} == {"COMPLETE"}
    best = max(records, key=lambda r: r.top1)
    assert (best.top1, best.triple, best.resolution, best.kind) == (0.8262, Triple(1.0, 1.3, 1.1), 64, "grid")
    assert best.num_classes == 10 and best.classes[0] == "airplane" and best.key == 3
    paper = next(r for r in records if PAPER in r.triples)
    assert paper.triple == Triple(1.25, 1.1, 1.15) and len(paper.triples) == 7 and paper.top1 == 0.8051
    assert paper.network == paper_network(records) == "d2-3-3-4-4-5-2_w32-16-24-48-88-120-208-352-1408_r64_986444ca"
    assert paper.curve[4] == 0.6527 and paper.curve[0] is None and dict(paper.times)["total"] == 80.35


def test_missing_attributes_read_as_none_and_the_class_count_is_never_guessed():
    class Old:  # a trial that failed before its data were loaded, written by older code (no worker, no version)
        number, state, value = 4, TrialState.FAIL, None
        params, system_attrs = {}, {"fixed_params": {"candidate": 2, "seed": 1}}
        user_attrs = {"alpha": 1.25, "beta": 1.1, "gamma": 1.15, "triples": "(1.25, 1.1, 1.15) (1.2, 1.1, 1.15)",
                      "product": 2.0003, "d": 1.25, "w": 1.1, "r": 1.15, "reason": "interrupted"}

    rec = TrialRecord.from_trial(Old)
    assert rec.num_classes is None and rec.network is None and rec.worker is None and rec.curve is None
    assert (rec.key, rec.status, rec.kind, rec.triples) == (2, "FAIL", "grid", (Triple(1.25, 1.1, 1.15), PAPER))
    assert TrialRecord.from_trial(Old, num_classes=100).num_classes == 100  # the study's, where given
    assert rec.to_attrs() == Old.user_attrs


# ----------------------------------------------------------------------------- results and report, as before

def test_results_from_records_are_mains(cifar10):
    url = url_of(cifar10)
    study = load_study(StudyConfig(name="cifar10"), url)
    r = results_frame(study)
    assert [(int(x.rank), x.alpha, x.beta, x.gamma, int(x.resolution), int(x.params), int(x.flops), x.top1,
             int(x.rank_matched)) for x in r.itertuples()] == RANKING
    assert paper_rank(r, study_records(study)) == 9
    # The results.csv that main's code wrote beside the study (on another machine: the fit's last digits differ).
    saved = pd.read_csv(CIFAR10 / "results.csv")
    ours = pd.read_csv(pd.io.common.StringIO(r.to_csv(index=False)))
    # Since then the table has the inference speed too: none for this study, measured before speeds were
    assert list(ours.columns) == [*saved.columns[:22], "latency_ms", "throughput", *saved.columns[22:]]
    assert ours[["latency_ms", "throughput"]].isna().all().all()
    ours = ours[saved.columns]
    pd.testing.assert_frame_equal(ours.drop(columns="top1_residual"), saved.drop(columns="top1_residual"))
    assert ours["top1_residual"].to_numpy() == pytest.approx(saved["top1_residual"].to_numpy(), abs=1e-12)

    plans = plan_studies(url, "cifar10")
    s = series_frame(plans)
    assert [(x.series, x.label, int(x.params), int(x.flops), round(x.top1, 5), int(x.seeds))
            for x in s.itertuples()] == SERIES
    assert failures_frame(study).empty
    fails = series_failures(plans)
    assert len(fails) == 8 and set(fails["reason"]) == {"interrupted"} and not fails["recovered"].any()


def test_the_report_from_records_is_mains(cifar10):
    from scaling.report import build_report

    rep = build_report("cifar10", cifar10)
    summary = next(s for s in rep.sections if s.heading == "Summary")
    assert summary.paragraphs[2] == PAPER_SENTENCE
    tables = {t.caption: t for s in rep.sections for t in s.tables}
    cands = tables["Candidate networks of the grid (23), with the search's top-1 where trained"]
    assert [row[-1] for row in cands.rows] == CANDIDATE_TOP1
    assert cands.columns[10] == "MFLOPs"
    assert [row[-1] for row in tables["Failed trials and their reasons"].rows] == ["queued again"] * 8
    for caption, sha in TABLES_SHA.items():
        t = tables[caption]
        assert hashlib.sha256(json.dumps([t.caption, t.columns, t.rows]).encode()).hexdigest()[:16] == sha, caption


# ----------------------------------------------------------------------------- units

@pytest.mark.parametrize("values, unit", [([386e6], "MFLOPs"), ([999_999_999], "MFLOPs"), ([1e9], "GFLOPs"),
                                          ([5e7, 1.8e9, None, float("nan")], "GFLOPs"), ([], "MFLOPs"),
                                          ([None], "MFLOPs")])
def test_one_flops_unit_rule(values, unit):
    assert flops_unit(values) == (unit, {"MFLOPs": 1e6, "GFLOPs": 1e9}[unit])


# ----------------------------------------------------------------------------- fresh trials

def test_fresh_trials_record_todays_names_through_the_record(tmp_path, monkeypatch):
    """A tiny search (2 networks) and a family (phi 0, 1) trained on the CPU: the attributes the
    Objective wrote through the record are today's names, and read back and written again unchanged."""
    from typer.testing import CliRunner

    from scaling.cli import app
    from test_search import TOML

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "cache"))
    (tmp_path / "tiny.toml").write_text(TOML.replace('sampler = "grid"', 'sampler = "grid"\ntrials = 2'))
    for args in (["search", "--study", "tiny.toml", "-q", "--no-report"],
                 ["family", "--train", "--study", "tiny.toml", "--phi", "0-1", "-q", "--no-report"]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, r.output
    url = f"sqlite:///{tmp_path / 'studies' / 'tiny' / 'optuna.db'}"
    grid = optuna.load_study(study_name="tiny", storage=url).get_trials()
    family = optuna.load_study(study_name="tiny.family-1.2-1.1-1.15", storage=url).get_trials()
    assert [t.state for t in grid] == [TrialState.COMPLETE] * 2 and [t.state for t in family] == [TrialState.COMPLETE] * 2
    from scaling.objective import code_modified, software

    unknown = set() if code_modified() is not None else {"code_modified"}  # outside a git checkout: not recorded
    first = {min(trials, key=lambda t: t.datetime_start).number for trials in (grid, family)}  # each run's first
    assert len(first) == 1  # trial 0 of each study
    start = {"worker_start_s"}  # the worker's start, on its first trial only
    for t in grid:
        assert set(t.user_attrs) == GRID_NAMES - unknown | (start if t.number in first else set())
        assert isinstance(t.user_attrs["curve"], list) and isinstance(t.user_attrs["times"], dict)
        assert t.user_attrs["software"] == software() and set(software()) == {"python", "torch", "cuda", "cudnn"}
        assert t.user_attrs["depthwise"] == "torch"
    for t in family:
        assert set(t.user_attrs) == FAMILY_NAMES - unknown | (start if t.number in first else set())
        assert t.user_attrs["multiplier"] is None and t.user_attrs["product"] is None and t.user_attrs["triples"] == ""
    for t in grid + family:
        rec = TrialRecord.from_trial(t)
        assert rec.to_attrs() == t.user_attrs
        assert rec.num_classes == 10 and rec.top1 == t.value and rec.status == "COMPLETE"
    assert [TrialRecord.from_trial(t).phi for t in family] == [0.0, 1.0]
    assert {TrialRecord.from_trial(t).triple for t in family} == {PAPER}


def test_code_modified_looks_at_the_code_not_the_studies(tmp_path):
    """A study's storage committed in the checkout and updated by a run is not a code change
    (the CIFAR-10 study's trials said "uncommitted changes" for that); a new module is."""
    import subprocess

    from scaling.objective import code_modified

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "pkg").mkdir()
    (tmp_path / "studies").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "studies" / "optuna.db").write_text("0")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    package = tmp_path / "pkg"
    assert code_modified(package) is False
    (tmp_path / "studies" / "optuna.db").write_text("1")
    (tmp_path / "notes.txt").write_text("untracked, outside the package")
    assert code_modified(package) is False
    (tmp_path / "pkg" / "b.py").write_text("y = 2\n")
    assert code_modified(package) is True
    (tmp_path / "pkg" / "b.py").unlink()
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert code_modified(package) is True
    assert code_modified(tmp_path.parent / "not-a-checkout-anywhere") is None


def test_a_workers_first_trial_records_its_start_and_no_other_does(tmp_path):
    import scaling
    from test_search import TOML

    from scaling.search import create_study
    from scaling.study import resolve
    from scaling.worker import run_worker

    (tmp_path / "tiny.toml").write_text(TOML)
    config = resolve(tmp_path / "tiny.toml").replace(trials=2)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = create_study(config, url, num_classes=10)
    before = time.time() - scaling.STARTED
    run_worker(config, url, device="cpu")
    first, second = (TrialRecord.from_trial(t) for t in sorted(study.trials, key=lambda t: t.datetime_start))
    assert (first.status, second.status) == ("COMPLETE", "COMPLETE")
    assert before <= first.worker_start_s <= time.time() - scaling.STARTED  # this process's start, to its first trial
    assert second.worker_start_s is None and "worker_start_s" not in study.trials[second.number].user_attrs
