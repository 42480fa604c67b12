"""One queue form, {"member": key, "seed": s}, for every kind of study; a study queued in the
older forms ({"candidate": k, "seed": s} for a grid, {"phi": p, "seed": s} for a plan) still
opens, reports and resumes, in its own form, with nothing retrained."""

import shutil
from dataclasses import astuple
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from scaling.cli import app
from scaling.plans import Plan
from scaling.search import create_study, queue_param, study_members
from scaling.storage import trial_key
from scaling.study import resolve

LEGACY = Path(__file__).parent / "fixtures" / "legacy_queue"  # written by make.py there, with the older code
FAMILY = "tiny.family-1.2-1.1-1.15"


@pytest.fixture
def legacy(tmp_path, monkeypatch):
    shutil.copytree(LEGACY, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _study(folder: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'studies' / 'tiny' / 'optuna.db'}")


def _snapshot(study):
    return [(t.number, t.state, t.value, t.datetime_complete, dict(t.user_attrs)) for t in study.trials
            if t.state == TrialState.COMPLETE]


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_a_study_in_the_older_queue_forms_opens_reports_and_resumes(legacy):
    grid, family = _study(legacy, "tiny"), _study(legacy, FAMILY)
    assert {k for t in grid.trials for k in t.system_attrs["fixed_params"]} == {"candidate", "seed"}
    assert {k for t in family.trials for k in t.system_attrs["fixed_params"]} == {"phi", "seed"}
    before_grid, before_family = _snapshot(grid), _snapshot(family)
    assert len(before_grid) == len(before_family) == 1
    r = run("results", "tiny")  # opens, as written
    assert r.exit_code == 0 and "Study tiny: 1 network trained" in r.output, r.output
    # Resumes: the two queued networks are trained, the one trained before is not.
    r = run("search", "--study", "tiny.toml", "--gpus", "none", "-q", "--no-report")
    assert r.exit_code == 0, r.output
    grid = _study(legacy, "tiny")
    done = [t for t in grid.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 3 and not any(t.user_attrs.get("duplicate_of") is not None for t in done)
    assert len({t.user_attrs["network"] for t in done}) == 3
    assert _snapshot(grid)[:1] == before_grid  # untouched
    assert {k for t in grid.trials for k in t.params} == {"candidate", "seed"}  # in its own form
    assert queue_param(grid, resolve(legacy / "tiny.toml")) == "candidate"
    # The family: its queued member is trained, and a member asked for now is queued in the study's form.
    r = run("family", "--train", "--study", "tiny.toml", "--phi", "0-2", "--gpus", "none", "-q", "--no-report")
    assert r.exit_code == 0, r.output
    assert "3 members trained" in r.output, r.output
    family = _study(legacy, FAMILY)
    done = [t for t in family.trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["phi"] for t in done) == [0.0, 1.0, 2.0] and len(family.trials) == 3
    assert _snapshot(family)[:1] == before_family
    assert {k for t in family.trials for k in t.params} == {"phi", "seed"}
    # Reports.
    r = run("report", "tiny")
    assert r.exit_code == 0, r.output
    assert (legacy / "reports" / "tiny" / "index.html").stat().st_size > 0


def test_a_new_study_queues_members(tmp_path):
    from test_search import TOML

    (tmp_path / "tiny.toml").write_text(TOML)
    config = resolve(tmp_path / "tiny.toml")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    grid = create_study(config, url, num_classes=10)
    family = create_study(config.replace(name="tiny.family", seeds=2,
                                         plan=Plan("family", phis=[0, 1], alpha=1.2, beta=1.1, gamma=1.15).to_dict()),
                          url)
    # A grid's network also by its representative triple (optuna-dashboard plots alpha, beta, gamma), a plan's by its key.
    assert {tuple(sorted(t.system_attrs["fixed_params"])) for t in grid.trials} == {("alpha", "beta", "gamma",
                                                                                     "member", "seed")}
    members = {m.key: m for m in study_members(config, 10)}
    for t in grid.trials:
        p = t.system_attrs["fixed_params"]
        assert (p["alpha"], p["beta"], p["gamma"]) == astuple(members[p["member"]].triple)
    assert {tuple(sorted(t.system_attrs["fixed_params"])) for t in family.trials} == {("member", "seed")}
    assert grid.metric_names == ["top1"] and family.metric_names == ["top1"]
    assert sorted(dict(trial_key(t))["member"] for t in family.trials) == [0.0, 0.0, 1.0, 1.0]
    # Creating again (a re-run) queues nothing twice, the plan's queued members included.
    again = create_study(config.replace(name="tiny.family", seeds=2, plan=Plan(
        "family", phis=[0, 1, 2], alpha=1.2, beta=1.1, gamma=1.15).to_dict()), url)
    keys = sorted(trial_key(t) for t in again.trials)
    assert len(keys) == len(set(keys)) == 6
    assert again.user_attrs["enqueued"] == 6
    # A plan whose members changed (a sweep's matched multiplier corrected) adds the new member and
    # keeps the trained one: the progress total counts both.
    sweep = create_study(config.replace(name="tiny.sweep", plan=Plan("sweep", dimension="depth", values=[1.5, 2.0],
                                                                     matched_phis=[1.0, 2.0]).to_dict()), url)
    assert sweep.user_attrs["enqueued"] == 2
    sweep = create_study(config.replace(name="tiny.sweep", plan=Plan("sweep", dimension="depth", values=[1.6, 2.0],
                                                                     matched_phis=[1.0, 2.0]).to_dict()), url)
    assert sorted(dict(trial_key(t))["member"] for t in sweep.trials) == [1.5, 1.6, 2.0]
    assert sweep.user_attrs["enqueued"] == 3
    assert len(create_study(config, url, num_classes=10).trials) == len(grid.trials)
