"""`family --train` and `sweep --train`: members trained as studies beside the search, on the CPU."""

import math
import shutil

import optuna
import pandas as pd
import pytest
from typer.testing import CliRunner

from scaling.cli import app
from scaling.complexity import count
from scaling.plans import Plan, member
from scaling.results import plan_studies, series_failures, series_frame
from scaling.search import base_spec
from scaling.study import resolve

from test_search import TOML, study_file  # noqa: F401 - the tiny study's TOML in a fresh folder (a fixture)

FAMILY = "compound (1.2, 1.1, 1.15)"


def url(tmp_path):
    return f"sqlite:///{tmp_path / 'studies' / 'tiny' / 'optuna.db'}"


def n_trials(tmp_path, study):
    """Trials that trained a member (a worker that found the queue empty leaves a skipped one)."""
    trials = optuna.load_study(study_name=study, storage=url(tmp_path)).trials
    return len([t for t in trials if not t.user_attrs.get("skipped")])


def invoke(*args):
    return CliRunner().invoke(app, [*args, "-q", "--no-report"])


def test_family_and_official_train_once_and_resume(study_file, tmp_path):
    r = invoke("family", "--train", "--study", str(study_file), "--phi", "0-1", "--official")
    assert r.exit_code == 0, r.output
    df = series_frame(plan_studies(url(tmp_path), "tiny"))
    assert list(df["series"]) == [FAMILY, FAMILY, "official", "official"]
    assert list(df["label"]) == ["phi=0", "phi=1", "B0", "B1"]
    assert list(df["kind"]) == ["family", "family", "official", "official"]
    config = resolve(study_file)
    base = base_spec(config)
    for row, (plan, key) in zip(df.itertuples(), [(Plan("family", phis=[0, 1], alpha=1.2, beta=1.1, gamma=1.15), 0),
                                                  (Plan("family", phis=[0, 1], alpha=1.2, beta=1.1, gamma=1.15), 1),
                                                  (Plan("official", phis=[0, 1]), 0), (Plan("official", phis=[0, 1]), 1)]):
        spec = member(plan, base, key).spec.replace(num_classes=10)
        assert row.resolution == spec.resolution and row.flops == count(spec).flops and row.params == count(spec).params
    assert list(df["resolution"]) == [32, 40, 32, 34]  # 32 * 1.15 -> 40 at a multiple of 8; 32 * 240/224 -> 34
    assert (df["latency_ms"] > 0).all() and (df["throughput"] > 0).all() and (df["inference_batch"] == 32).all()
    assert df["top1"].between(0, 1).all() and (df["seeds"] == 1).all()
    assert math.isclose(df.loc[1, "d"], 1.2) and math.isclose(df.loc[1, "w"], 1.1)
    assert "phi=1" in r.output and "B1" in r.output and "latency ms" in r.output
    assert series_failures(plan_studies(url(tmp_path), "tiny")).empty
    # Beside the search's results.csv: every series as trained, and each series' law (2 points: none fitted).
    saved = pd.read_csv(tmp_path / "studies" / "tiny" / "series.csv")
    assert list(saved["label"]) == list(df["label"]) and list(saved["top1"]) == list(df["top1"])
    laws = pd.read_csv(tmp_path / "studies" / "tiny" / "laws.csv")
    assert list(laws["series"]) == [FAMILY, "official"] and set(laws["status"]) == {"not fitted"}
    family = "tiny.family-1.2-1.1-1.15"
    assert n_trials(tmp_path, family) == 2 and n_trials(tmp_path, "tiny.official") == 2
    # The same command trains nothing more; a wider phi range trains only the new member, with 2 workers.
    assert invoke("family", "--train", "--study", str(study_file), "--phi", "0-1", "--official").exit_code == 0
    assert n_trials(tmp_path, family) == 2 and n_trials(tmp_path, "tiny.official") == 2
    r = invoke("family", "--train", "--study", str(study_file), "--phi", "0-2", "--workers", "2")
    assert r.exit_code == 0, r.output
    assert n_trials(tmp_path, family) == 3
    df = series_frame(plan_studies(url(tmp_path), "tiny"))
    assert list(df[df["series"] == FAMILY]["label"]) == ["phi=0", "phi=1", "phi=2"]


def test_sweeps_train_given_and_matched_multipliers(study_file, tmp_path):
    r = invoke("sweep", "--dimension", "depth", "--values", "4,2", "--train", "--study", str(study_file))
    assert r.exit_code == 0, r.output
    r = invoke("sweep", "--dimension", "width", "--match", "family", "--phi", "1", "--train", "--study", str(study_file))
    assert r.exit_code == 0, r.output
    df = series_frame(plan_studies(url(tmp_path), "tiny"))
    depth, width = df[df["series"] == "depth"], df[df["series"] == "width"]
    assert list(depth["multiplier"]) == [2.0, 4.0] and list(depth["d"]) == [2.0, 4.0] and (depth["w"] == 1).all()
    assert len(width) == 1 and width.iloc[0]["matched_phi"] == 1
    # Matched: the width-only network nearest the phi=1 member's FLOPs.
    base = base_spec(resolve(study_file))
    target = count(member(Plan("family", phis=[1], alpha=1.2, beta=1.1, gamma=1.15), base, 1).spec.replace(
        num_classes=10)).flops
    assert abs(width.iloc[0]["flops"] - target) / target < 0.15


@pytest.fixture(scope="module")
def phi0_trained(tmp_path_factory):
    """The tiny study with its family's phi=0 member trained, once for the module: its folder
    (``studies/`` and the ``cache/`` it was trained with), for tests to copy and leave as it is."""
    root = tmp_path_factory.mktemp("phi0")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("SCALING_CACHE", str(root / "cache"))
        (root / "tiny.toml").write_text(TOML)
        r = invoke("family", "--train", "--study", str(root / "tiny.toml"), "--phi", "0")
        assert r.exit_code == 0, r.output
    return root


@pytest.mark.parametrize("args, says", [
    (["sweep", "--dimension", "width", "--values", "0.5", "--train"], "--values"),
    (["family", "--train", "--official", "--phi", "8"], "B0..B7"),
    (["family", "--train", "--epochs", "7"], "other settings"),
    (["family", "--train", "--alpha", "0.9"], "--alpha"),
])
def test_bad_input_exits_2_with_one_line(phi0_trained, study_file, tmp_path, args, says):
    # The study as `family --train --phi 0` left it, trained once for the module and copied here.
    for folder in ("studies", "cache"):
        shutil.copytree(phi0_trained / folder, tmp_path / folder)
    before = sorted(p.name for p in (tmp_path / "studies").iterdir())
    r = invoke(*args, "--study", str(study_file))
    assert r.exit_code == 2, r.output
    assert says in r.output and "Traceback" not in r.output
    assert sorted(p.name for p in (tmp_path / "studies").iterdir()) == before
