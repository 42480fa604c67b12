"""The CPU budget of the embedded default: one rule, in the library, for the command line and the API."""

import json

import pytest

from scaling.budget import CPU_BUDGET, cpu_budget
from scaling.cli.searching import prepare_study
from scaling.study import StudyConfig, resolve

# What `scaling search` said before the rule moved out of the command line.
NOTE = ("no GPU: a reduced budget - 12 of the grid's networks (spread over it), each 4 epochs on 2,000 images of "
        "the embedded data, from a base of B0 at width 0.25, depth 0.25, 40 px. The full study, on a GPU: scaling "
        "search --phi 1 --name default --base-resolution 224")


def test_the_default_on_a_cpu_is_reduced_and_says_so():
    b = cpu_budget(resolve(), {})
    assert b.reduced and b.note == NOTE
    c = b.config
    assert c.name == "default-cpu" and c.source == "default"
    assert (c.base_resolution, c.base_width, c.base_depth, c.train_size, c.val_size, c.trials) == (40, 0.25, 0.25,
                                                                                                  2000, 500, 12)
    assert c.recipe == CPU_BUDGET["recipe"] and c.training_recipe().epochs == 4


def test_what_the_user_gave_is_kept_and_the_note_tells_the_truth():
    given = dict(name="mine", trials=5, base_resolution=48, epochs=2, batch_size=None)
    b = cpu_budget(resolve(**{k: v for k, v in given.items() if k not in ("epochs", "batch_size")}), given)
    c = b.config
    assert (c.name, c.trials, c.base_resolution, c.base_width) == ("mine", 5, 48, 0.25)
    assert c.recipe == {**CPU_BUDGET["recipe"], "epochs": 2}
    assert "5 of the grid's networks" in b.note and "each 2 epochs" in b.note and "48 px" in b.note


@pytest.mark.parametrize("kw", [dict(gpus=1), dict(from_file=True)])
def test_a_gpu_or_a_study_file_keeps_the_definition(kw):
    config = resolve()
    b = cpu_budget(config, {}, **kw)
    assert b.config == config and not b.reduced and b.note == ""


def test_other_data_keep_the_definition(tmp_path):
    config = StudyConfig(source=str(tmp_path))
    assert cpu_budget(config, {}).config == config


def test_the_command_line_and_run_search_get_the_same_budget(tmp_path, monkeypatch, data_cache, capsys):
    import scaling.pool

    cli, _, folder, _ = prepare_study(None, tmp_path / "cli", None, "none")
    assert cli == cpu_budget(resolve(), {}).config and folder == tmp_path / "cli" / "default-cpu"
    assert NOTE in capsys.readouterr().err.replace("\n", " ")

    trained = []
    monkeypatch.setattr(scaling.pool, "run_pool", lambda config, *a, **k: trained.append(config) or 0)
    from scaling.api import run_search

    study = run_search(studies_dir=tmp_path / "api")  # the notebook: no GPU asked for, the default data
    assert study.name == "default-cpu" and study.config == cli and trained == [cli]
    assert json.loads((tmp_path / "api" / "default-cpu" / "study.json").read_text()) == cli.to_dict()
    assert NOTE in capsys.readouterr().err.replace("\n", " ")
