"""A network a study trains: one typed member for every kind of study (grid, family, official, sweep).

The arithmetic that makes the network stays in :mod:`scaling.compound` (grids, the phi
family, one dimension) and :mod:`scaling.plans` (which members a plan asks for); a
:class:`Member` is what the search queues and trains, and :class:`scaling.records.TrialRecord`
what a trial records of it. :func:`scaling.search.study_members` gives the members of a
study definition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .compound import Candidate, Triple, multipliers
from .spec import NetworkSpec

KINDS = ("grid", "family", "official", "sweep")
NAN = math.nan


@dataclass(frozen=True)
class Member:
    """One network of a study, as trained.

    ``key`` is what its trials are queued by (``{"member": key, "seed": s}``): the index of
    a grid's candidate (candidates sorted by their representative triple), a family's or
    the official networks' phi, a sweep's multiplier (NaN for a sampled triple, which is
    not queued). ``triples``: a grid member's triples that round to the network, its
    representative first; a family's triple; none for the official networks and sweeps.
    """

    key: float
    kind: str  # grid, family, official or sweep
    series: str  # in tables and plots: "grid", "compound (1.2, 1.1, 1.15)", "official", "width"
    label: str  # "(1.2, 1.1, 1.15)", "phi=2", "B3", "w x1.400"
    spec: NetworkSpec  # the network as trained (its resolution held to the FLOPs budget where it was)
    d: float
    w: float
    r: float
    triples: tuple[Triple, ...] = ()
    phi: float = NAN  # grid and family: the compound coefficient; official: B0..B7's index
    multiplier: float = NAN  # sweep
    dimension: str = ""  # family: "compound"; official: "official"; sweep: width, depth or resolution
    matched_phi: float | None = None  # sweep --match family: the family member this one matches in FLOPs
    nominal_resolution: int = 0  # grid: what gamma^phi rounds to, before the hold to the FLOPs budget

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"member kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        object.__setattr__(self, "triples", tuple(self.triples))

    @property
    def triple(self) -> Triple | None:
        """The representative triple (a grid's nearest the target, a family's own); None for the others."""
        return self.triples[0] if self.triples else None


def grid_member(key: float, triples, spec: NetworkSpec, phi: float, label: str | None = None,
                nominal_resolution: int = 0) -> Member:
    """A grid's network (or a sampled triple's, ``key`` NaN): d, w, r from its representative triple at ``phi``."""
    triples = tuple(triples)
    d, w, r = multipliers(triples[0], phi)
    return Member(key=key, kind="grid", series="grid", label=label if label is not None else
                  " ".join(str(t) for t in triples), spec=spec, d=d, w=w, r=r, triples=triples, phi=phi,
                  nominal_resolution=nominal_resolution)


def candidate_member(key: int, cand: Candidate) -> Member:
    """The grid candidate ``cand``, queued as ``key`` (its index among the study's candidates)."""
    return grid_member(key, cand.triples, cand.spec, cand.phi, cand.label, cand.nominal_resolution)
