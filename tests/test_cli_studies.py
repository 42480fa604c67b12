"""Studies at the command line: --name reopens one as defined, missing names list what exists,
results in every format. (Ctrl+C during a quiet search, in one line: the first stage of
test_search.py's signal test, which goes on with the same study.)"""

import json
import os

import pandas as pd
import pytest
from typer.testing import CliRunner

from scaling.cli import app
from scaling.budget import cpu_estimate
from scaling.cli.searching import prepare_study
from scaling.complexity import count
from scaling.spec import custom_spec
from scaling.study import check_or_save, resolve

# A definition from a TOML file that differs from every default: one member trains in seconds.
SMALL = """name = "cifar-small"
[data]
source = "default"
base_resolution = 32
train_size = 128
val_size = 50
[grid]
base_width = 0.25
base_depth = 0.25
tolerance = 0.1
[search]
trials = 1
[recipe]
name = "proxy"
epochs = 1
batch_size = 64
"""


@pytest.fixture
def studies(tmp_path, monkeypatch):
    """studies/cifar-small, defined from a TOML file, in a fresh folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "cache"))
    (tmp_path / "small.toml").write_text(SMALL)
    check_or_save(resolve(tmp_path / "small.toml"), tmp_path / "studies" / "cifar-small")
    return tmp_path / "studies"


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line(r, *words):
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), r.output
    assert all(w in lines[0] for w in words), r.output
    return lines[0]


def test_name_reopens_a_study_defined_by_a_file(studies):
    saved = resolve(studies.parent / "small.toml")
    config, *_ = prepare_study(None, studies, None, "none", name="cifar-small", phi=None, source=None)
    assert config == saved
    config, *_ = prepare_study(None, studies, None, "none", name="cifar-small", epochs=1, must_exist=True)
    assert config == saved  # the same epochs: still the same study
    with pytest.raises(Exception, match=r"other settings \(recipe\)"):
        prepare_study(None, studies, None, "none", name="cifar-small", epochs=3)


def test_family_train_with_the_name_of_a_file_study(studies):
    r = run("family", "--train", "--name", "cifar-small", "--phi", "0", "--gpus", "none", "-q", "--no-report")
    assert r.exit_code == 0, r.output
    assert "1 member trained" in r.output and "other settings" not in r.output
    r = run("family", "--train", "--name", "cifar-small", "--phi", "0", "--gpus", "none", "-q", "--no-report",
            "--format", "json", "-o", studies / "f.json")  # trained already: nothing to train, rows again
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert rows == json.loads((studies / "f.json").read_text())
    assert [(x["label"], x["resolution"]) for x in rows] == [("phi=0", 32)]


@pytest.mark.parametrize("cmd", [["family", "--train"], ["sweep", "--dimension", "width", "--values", "1.5", "--train"]])
def test_train_with_a_name_that_does_not_exist_is_refused_first(cmd, studies):
    r = run(*cmd, "--name", "nope", "--gpus", "none", "-q")
    one_line(r, "no study 'nope'", "cifar-small")
    assert sorted(p.name for p in studies.iterdir()) == ["cifar-small"]  # nothing created, nothing trained


@pytest.mark.parametrize("cmd", [["results"], ["report"]])
def test_missing_study_lists_those_that_exist(cmd, studies):
    (studies / "cifar-small" / "optuna.db").touch()
    one_line(run(*cmd, "default"), "no study 'default'", "studies there: cifar-small")
    one_line(run(*cmd, "default", "--studies-dir", studies.parent / "empty"), "none yet")


def test_results_in_every_format(tmp_path, monkeypatch):
    from test_search import TOML

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "cache"))
    (tmp_path / "tiny.toml").write_text(TOML)
    old = os.umask(0o022)
    try:
        r = run("search", "--study", "tiny.toml", "--trials", 2, "--gpus", "none", "-q", "--no-report")
        assert r.exit_code == 0, r.output
        r = run("results", "tiny", "--format", "json", "-o", tmp_path / "r.json")
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert len(rows) == 2 and [x["rank"] for x in rows] == [1, 2]
    assert rows == json.loads((tmp_path / "r.json").read_text())  # printed and written
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644  # the umask's mode, not mkstemp's 0600
    assert (tmp_path / "studies" / "tiny" / "results.csv").stat().st_mode & 0o777 == 0o644
    r = run("results", "tiny", "--format", "csv")
    assert r.exit_code == 0, r.output
    df = pd.read_csv(__import__("io").StringIO(r.stdout))
    assert list(df["network"]) == [x["network"] for x in rows]
    r = run("results", "tiny")
    assert r.exit_code == 0 and "Study tiny: 2 networks trained" in r.output


def test_cpu_estimate_from_the_counted_flops():
    specs = [custom_spec(0.25, 0.25, 32), custom_spec(0.5, 0.5, 32)]
    macs = sum(count(s).flops for s in specs) * 2 * 3 * (3 * 1000 + 200)
    line = cpu_estimate(specs, 1000, 200, epochs=3, seeds=2)
    assert f"2 networks x 2 seeds x 3 epochs on 1,000 images: {macs / 1e9:.3g} G multiply-adds" in line
    assert f"about {round(macs / 4e9)} s" in line and "assumed 4 G multiply-adds/s" in line
    assert "1 network x 1 seed x 1 epoch on" in cpu_estimate(specs[:1], 10, 10, epochs=1, seeds=1)
