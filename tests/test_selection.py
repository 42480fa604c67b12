"""--only: a grid's chosen networks (topN, bottomN, paper, a triple) trained with more seeds in
the same study, or at another proxy in a new one; the seed and proxy rank correlations."""

import optuna
import pandas as pd
import pytest
from typer.testing import CliRunner

from scaling.agreement import agreement, grid_agreement, member_top1, seed_agreement
from scaling.cli import app
from scaling.compound import PAPER, Triple
from scaling.results import results_frame
from scaling.search import study_candidates, study_members
from scaling.selection import Selection, SelectionError, holding, parse_selection, select
from scaling.study import StudyConfig, resolve
from tests.test_data import make_folder

TOML = """
name = "{name}"
[data]
source = "data"
base_resolution = {res}
[grid]
phi = 1
alpha = [1.0, 2.0]
beta = [1.0, 1.5]
gamma = [1.0, 1.5]
step = 0.1
tolerance = 0.1
base_width = 0.25
base_depth = 0.25
flops_tolerance = 0.5
[search]
sampler = "grid"
{trials}
[recipe]
name = "proxy"
epochs = 1
batch_size = 6
"""


def test_parse_selection():
    assert parse_selection("top8,paper") == Selection(top=8, triples=(PAPER,))
    assert parse_selection(" bottom3 , 1:1.3:1.1, paper, 1.2:1.1:1.15", "cifar10") == Selection(
        bottom=3, triples=(Triple(1, 1.3, 1.1), PAPER), ranked_by="cifar10")  # the paper's named twice: once
    assert parse_selection("top5,bottom3", "cifar10").describe() == "top 5, bottom 3 of study cifar10"
    for bad in ("", "top0", "best3", "1.2:1.1", "0.9:1:1", "paper:x:1"):
        with pytest.raises(SelectionError):
            parse_selection(bad)


def _grid(res=32):
    return resolve(None, name="g", base_resolution=res, base_width=0.25, base_depth=0.25, step=0.1,
                   tolerance=0.1, flops_tolerance=0.5)


def test_select_reads_the_ranking_and_finds_each_triple_where_it_lies():
    cands = study_candidates(_grid())
    assert len(cands) == 16
    reps = [c.triple for c in cands]
    ranking = [reps[3], reps[0], reps[5], reps[6], reps[1]]  # best first
    assert select(Selection(top=2), cands, ranking) == [3, 0]
    assert select(Selection(top=1, bottom=2), cands, ranking) == [3, 6, 1]
    # a network named twice (rank 1 and as a triple) is trained once
    assert select(Selection(top=1, triples=(cands[3].triples[-1],)), cands, ranking) == [3]
    with pytest.raises(SelectionError, match="only 5 networks"):
        select(Selection(top=4, bottom=2), cands, ranking)
    with pytest.raises(SelectionError, match="no completed network"):
        select(Selection(top=1), cands, [])
    with pytest.raises(SelectionError, match=r"holds no network for \(2, 1, 1\.5\)"):
        select(Selection(triples=(Triple(2, 1, 1.5),)), cands)
    assert holding(cands, Triple(2, 1, 1.5)) is None


def test_agreement_is_spearman_over_the_common_networks():
    a = pd.Series({"x": 0.80, "y": 0.70, "z": 0.60, "w": 0.5})
    b = pd.Series({"x": 0.75, "y": 0.76, "z": 0.50})  # y and x swap; w only in a
    found = agreement(a, b)
    assert found.networks == 3
    assert found.spearman == pytest.approx(0.5)  # ranks (3, 2, 1) against (2, 3, 1)
    assert found.mean_abs_diff == pytest.approx((0.05 + 0.06 + 0.10) / 3)
    assert agreement(a, b.iloc[:2]) is None  # fewer than 3 in common: no correlation


def _load(root, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{root / 'studies' / name / 'optuna.db'}")


def _done(study):
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


@pytest.fixture
def grid(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "cache"))
    make_folder(tmp_path / "data", bad=False, train_per_class=6, val_per_class=2)
    (tmp_path / "g.toml").write_text(TOML.format(name="g", res=32, trials="trials = 4"))
    (tmp_path / "rich.toml").write_text(TOML.format(name="rich", res=40, trials=""))
    first = CliRunner().invoke(app, ["search", "--study", "g.toml", "--no-report", "-q", "--gpus", "none"])
    assert first.exit_code == 0, first.output
    return tmp_path


def test_more_seeds_for_the_top_and_bottom_then_another_proxy(grid):
    """One study through every step: its first 4 networks, seed 1 for its top 2 and bottom 1,
    refusals, then its top 3 at another base resolution and the two rankings compared."""
    run = CliRunner().invoke
    study = _load(grid, "g")
    first = _done(study)
    assert len(first) == 4 and {t.params["seed"] for t in first} == {0}
    by_top1 = sorted(first, key=lambda t: -t.value)
    want = {by_top1[0].params["member"], by_top1[1].params["member"], by_top1[-1].params["member"]}

    more = run(app, ["search", "--name", "g", "--only", "top2,bottom1", "--seeds", "2", "--no-report", "--gpus", "none"])
    assert more.exit_code == 0, more.output
    assert "--only top 2, bottom 1: 3 networks x 2 seeds" in more.output
    done = _done(_load(grid, "g"))
    new = [t for t in done if t.number >= 4]
    assert len(done) == 7 and {t.params["member"] for t in new} == want and {t.params["seed"] for t in new} == {1}
    assert _load(grid, "g").user_attrs["selections"] == [
        {"keys": [by_top1[0].params["member"], by_top1[1].params["member"], by_top1[-1].params["member"]],
         "seeds": 2, "asked": "top 2, bottom 1"}]
    line = seed_agreement(member_top1(_load(grid, "g"), "member"))
    assert line.networks == 3
    assert f"seed 0 against seed 1: Spearman rank correlation {line.spearman:+.2f} over 3 networks" in more.output
    # the definition is unchanged (one seed), and the same command again trains nothing
    assert StudyConfig.from_json((grid / "studies/g/study.json").read_text()).seeds == 1
    again = run(app, ["search", "--name", "g", "--only", "top2,bottom1", "--seeds", "2", "--no-report", "--gpus", "none"])
    assert again.exit_code == 0, again.output
    assert len(_done(_load(grid, "g"))) == 7

    for args, says in [  # bad selections: exit 2 in one line, nothing trained
        (["--only", "top9"], "the ranking has only 4 networks"),
        (["--only", "best3"], "is none of topN"),
        (["--only", "top1", "--ranked-by", "nothing"], "no study 'nothing' to rank by"),
        (["--ranked-by", "g"], "give --only too"),
    ]:
        out = run(app, ["search", "--name", "g", *args, "--no-report", "--gpus", "none"])
        assert out.exit_code == 2, out.output
        assert says in " ".join(out.output.split()), out.output
    assert len(_done(_load(grid, "g"))) == 7

    # the top 3 of g at the richer proxy (another base resolution), a new study of those alone
    rich = run(app, ["search", "--study", "rich.toml", "--only", "top3", "--ranked-by", "g", "--no-report",
                     "--gpus", "none"])
    assert rich.exit_code == 0, rich.output
    config = StudyConfig.from_json((grid / "studies/rich/study.json").read_text())
    rich_done = _done(_load(grid, "rich"))
    classes = _load(grid, "g").user_attrs["num_classes"]
    members = {m.key: m for m in study_members(config, classes)}
    g_members = {m.key: m for m in study_members(StudyConfig.from_json((grid / "studies/g/study.json").read_text()),
                                                 classes)}
    g_table = member_top1(_load(grid, "g"), "member")
    ranked = results_frame(_load(grid, "g")).head(3)  # g's ranking: mean top-1, ties in the order first trained
    top3 = [Triple(r.alpha, r.beta, r.gamma) for r in ranked.itertuples()]
    assert len(rich_done) == 3  # each network of rich holds the representative triple of one of g's top 3
    assert sorted(next(i for i, t in enumerate(top3) if t in members[r.params["member"]].triples)
                  for r in rich_done) == [0, 1, 2]
    shown = run(app, ["results", "rich", "--against", "g"])
    assert shown.exit_code == 0, shown.output
    found = grid_agreement(member_top1(_load(grid, "rich"), "member"), list(members.values()), g_table,
                           list(g_members.values()))
    assert found.networks == 3
    assert f"rich against g: Spearman rank correlation {found.spearman:+.2f} over 3 networks" in shown.output
    # a storage file brought from another machine without its study.json reads the same: the
    # definition comes from the storage's record of it
    (grid / "studies/rich/study.json").unlink()
    alone = run(app, ["results", "rich", "--against", "g"])
    assert alone.exit_code == 0, alone.output
    assert f"rich against g: Spearman rank correlation {found.spearman:+.2f} over 3 networks" in alone.output

