"""Study definitions: every value of a study file checked, with its file, key and allowed range."""

import dataclasses

import pytest
from typer.testing import CliRunner

from scaling.cli import app
from scaling.recipe import Recipe
from scaling.study import SECTIONS, StudyError, _RecipeValues, _Values, read_toml, resolve

GOOD = """name = "small"
[data]
source = "default"
base_resolution = 32
train_size = 200
[grid]
phi = 1
alpha = [1.0, 2.0]
tolerance = 0.05
[search]
trials = 2
seeds = 1
prune = false
[recipe]
name = "proxy"
epochs = 1
"""

BAD = [
    ("tolerance = 0.05", "tolerance = 0.05\nbase_width = -1", "[grid] base_width = -1: must be a number in (0, 64]"),
    ("base_resolution = 32", 'base_resolution = "big"', '[data] base_resolution = "big": must be a whole number in 8..4096'),
    ("base_resolution = 32", "base_resolution = 4", "[data] base_resolution = 4: must be a whole number in 8..4096"),
    ("phi = 1", 'phi = "one"', '[grid] phi = "one": must be a number in 0..10'),
    ("phi = 1", "phi = 11", "[grid] phi = 11: must be a number in 0..10"),
    ("alpha = [1.0, 2.0]", "alpha = 1.5", "[grid] alpha = 1.5: must be [low, high] with 1 <= low <= high"),
    ("alpha = [1.0, 2.0]", "alpha = [2.0, 1.0]", "[grid] alpha = [2.0, 1.0]: must be [low, high] with 1 <= low"),
    ("alpha = [1.0, 2.0]", "alpha = [0.5, 2.0]", "[grid] alpha = [0.5, 2.0]: must be [low, high]"),
    ("trials = 2", "trials = 2.5", "[search] trials = 2.5: must be a whole number >= 1"),
    ("seeds = 1", "seeds = 1.5", "[search] seeds = 1.5: must be a whole number >= 1"),
    ("seeds = 1", "seeds = 0", "[search] seeds = 0: must be a whole number >= 1"),
    ("prune = false", "prune = 1", "[search] prune = 1: must be true or false"),
    ("train_size = 200", "train_size = -5", "[data] train_size = -5: must be a whole number >= 1"),
    ('source = "default"', "source = 3", "[data] source = 3: must be 'default' or a path"),
    ('name = "small"', 'name = "a/b"', 'name = "a/b": must be a plain folder name'),
    ("epochs = 1", "epochs = 2.5", "[recipe] epochs = 2.5: must be a whole number >= 1"),
    ("epochs = 1", "lr = -1.0", "[recipe] lr = -1.0: must be a number > 0"),
    ('name = "proxy"', 'name = "fast"', '[recipe] name = "fast": must be proxy or paper'),
    ("epochs = 1", "epochs = 1\nfoo = 2", "unknown key 'foo' in [recipe]; known: name, epochs"),
    ("seeds = 1", "seeds = 1\nworkers = 2", "unknown key 'workers' in [search]; known: sampler, trials"),
]


def test_a_good_file_reads(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(GOOD)
    config = resolve(path)
    assert config.base_resolution == 32 and config.trials == 2 and config.alpha == (1.0, 2.0)
    assert config.recipe == {"name": "proxy", "epochs": 1} and config.prune is False


@pytest.mark.parametrize("old, new, message", BAD, ids=[b[1].splitlines()[-1] for b in BAD])
def test_every_value_is_checked_with_file_key_and_range(old, new, message, tmp_path):
    path = tmp_path / "bad.toml"
    assert old in GOOD
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(StudyError) as e:
        read_toml(path)
    text = str(e.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text


def test_every_key_of_a_study_file_has_a_range():
    assert set(_Values.model_fields) == {"name"} | {k for keys in SECTIONS.values() for k in keys}


def test_recipe_table_has_every_recipe_field():
    assert set(_RecipeValues.model_fields) == {f.name for f in dataclasses.fields(Recipe)}


@pytest.mark.parametrize("bad", ["[grid]\nbase_width = -1", '[data]\nbase_resolution = "big"', "[search]\nseeds = 1.5"])
def test_cli_bad_study_file_is_one_line_exit_2(bad, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(f'name = "s"\n{bad}\n')
    for args in (["search", "--study", "s.toml"], ["family", "--train", "--study", "s.toml"]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2, r.output
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: s.toml: [") and "must be" in lines[0], r.output
        assert "Traceback" not in r.output
    assert not (tmp_path / "studies").exists()
