"""One typed member for every kind of study: the networks of a study definition, and what each trial records of it."""

import dataclasses
import math

import pytest

from scaling.compound import PAPER, Triple
from scaling.members import Member
from scaling.plans import Plan
from scaling.records import NETWORK_ATTRS, TrialRecord
from scaling.search import base_spec, spread_order, study_candidates, study_members
from scaling.study import StudyConfig

GRID = StudyConfig(name="g", base_resolution=64, base_width=0.25, base_depth=0.25)
PLAN_ATTRS = {"phi", "multiplier", "dimension", "alpha", "beta", "gamma", "d", "w", "r", "label", "series", "kind",
              "triples", "product"}


def recorded(m: Member) -> dict:
    """What a trial of ``m`` records of its member before it trains (the network's structure, seed and worker left out)."""
    attrs = TrialRecord.for_member(m, m.spec, seed=0, worker="host:1", code_version="0").to_attrs()
    return {k: v for k, v in attrs.items() if k not in NETWORK_ATTRS}


def test_grid_members_in_spread_order():
    cands = study_candidates(GRID, 10)
    members = study_members(GRID, 10)
    assert [m.key for m in members] == spread_order(cands)
    assert [m.spec for m in members] == [cands[k].spec for k in spread_order(cands)]
    first = members[0]
    assert first.kind == "grid" and PAPER in first.triples and first.triple == cands[first.key].triple
    assert first.label == cands[first.key].label and first.nominal_resolution == cands[first.key].nominal_resolution
    t = first.triple  # the representative: nearest the target, not always the paper's
    assert (first.d, first.w, first.r) == pytest.approx((t.alpha, t.beta, t.gamma)) and first.phi == 1
    assert set(recorded(first)) == {"alpha", "beta", "gamma", "triples", "product", "d", "w", "r"}
    assert recorded(first)["product"] == round(t.product, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.key = 3
    assert study_members(GRID.replace(sampler="tpe")) == []


def test_plan_members_of_every_kind():
    base = base_spec(GRID)
    family = study_members(GRID.replace(plan=Plan("family", phis=[0, 2], alpha=1.2, beta=1.1, gamma=1.15).to_dict()))
    assert [(m.key, m.kind, m.label, m.series, m.phi) for m in family] == [
        (0.0, "family", "phi=0", "compound (1.2, 1.1, 1.15)", 0.0), (2.0, "family", "phi=2", "compound (1.2, 1.1, 1.15)", 2.0)]
    assert family[1].triple == Triple(1.2, 1.1, 1.15) and family[1].d == pytest.approx(1.44)
    assert family[1].spec.resolution == 88 and set(recorded(family[1])) == PLAN_ATTRS  # 64 * 1.15^2 = 84.6, to 8
    official = study_members(GRID.replace(plan=Plan("official", phis=[0, 3]).to_dict()))
    assert [m.label for m in official] == ["B0", "B3"] and official[0].triple is None
    assert official[0].spec.architecture() == base.replace(num_classes=10).architecture()
    assert recorded(official[1])["alpha"] is None and recorded(official[1])["dimension"] == "official"
    sweep = study_members(GRID.replace(plan=Plan("sweep", dimension="width", values=[1.2, 1.5],
                                                 matched_phis=[1, 2]).to_dict()))
    assert [(m.key, m.label, m.multiplier, m.w, m.d, m.matched_phi) for m in sweep] == [
        (1.2, "w x1.200", 1.2, 1.2, 1.0, 1.0), (1.5, "w x1.500", 1.5, 1.5, 1.0, 2.0)]
    assert set(recorded(sweep[0])) == PLAN_ATTRS | {"matched_phi"} and math.isnan(sweep[0].phi)
    with pytest.raises(ValueError, match="member kind"):
        Member(key=0, kind="other", series="", label="", spec=base, d=1, w=1, r=1)
