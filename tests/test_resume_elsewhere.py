"""A study's storage brought to another machine, its data at another path: resumed with
nothing retrained where the data are the same; refused, in one line, where they are not."""

import shutil

import optuna
import pytest
from typer.testing import CliRunner

from scaling.cli import app
from tests.test_data import make_folder

TOML = """
name = "moved"
[data]
source = "data-a"
base_resolution = 32
[grid]
phi = 1
alpha = [1.0, 2.0]
beta = [1.0, 1.5]
gamma = [1.0, 1.5]
step = 0.25
tolerance = 0.1
base_width = 0.25
base_depth = 0.25
flops_tolerance = 0.5
[search]
sampler = "grid"
trials = 2
[recipe]
name = "proxy"
epochs = 1
batch_size = 6
"""


@pytest.fixture
def moved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "cache"))
    make_folder(tmp_path / "data-a", bad=False, train_per_class=6, val_per_class=2)
    (tmp_path / "moved.toml").write_text(TOML)
    return tmp_path


def _complete(root):
    study = optuna.load_study(study_name="moved", storage=f"sqlite:///{root / 'studies/moved/optuna.db'}")
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def test_resume_from_another_path_retrains_nothing_and_other_data_is_refused(moved):
    run = CliRunner().invoke
    first = run(app, ["search", "--study", "moved.toml", "--no-report", "-q", "--gpus", "none"])
    assert first.exit_code == 0, first.output
    done = _complete(moved)
    assert len(done) == 2
    # "Another machine": the study folder and the data under new paths, the old ones gone.
    shutil.move(moved / "data-a", moved / "elsewhere")
    shutil.rmtree(moved / "cache")
    again = run(app, ["search", "--study", "moved.toml", "--data", "elsewhere", "--no-report", "-q", "--gpus", "none"])
    assert again.exit_code == 0, again.output
    after = _complete(moved)
    assert [t.number for t in after] == [t.number for t in done]  # nothing trained again
    study = optuna.load_study(study_name="moved", storage=f"sqlite:///{moved / 'studies/moved/optuna.db'}")
    assert '"source": "elsewhere"' in study.user_attrs["definition"]  # the workers' data path: this machine's
    assert study.user_attrs["data_identity"]["train"]["images"] == 18
    # Other data at that path: one more training image.
    extra = moved / "elsewhere/train/cat/extra.png"
    shutil.copy(next((moved / "elsewhere/train/cat").glob("*.png")), extra)
    other = run(app, ["search", "--study", "moved.toml", "--data", "elsewhere", "--no-report", "-q", "--gpus", "none"])
    assert other.exit_code == 2
    assert "was trained on other data than elsewhere (train images 18 -> 19)" in other.output
    # The embedded default is never the same data as a path.
    default = run(app, ["search", "--study", "moved.toml", "--data", "default", "--no-report", "-q", "--gpus", "none"])
    assert default.exit_code == 2 and "other settings (source)" in default.output
