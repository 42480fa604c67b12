"""What a training study trains besides the search grid: a compound family, the official
coefficients, or one dimension alone.

A plan is part of a study's definition. Its study lives in the same storage as the search
(``NAME.family-1.2-1.1-1.15``, ``NAME.official``, ``NAME.sweep-width``) and trains with
the same data and recipe. Each member is queued as ``{"member": key, "seed": s}`` (as the
grid's networks are), its key the value of the plan's parameter (``phi`` for a family or the
official networks, ``multiplier`` for a sweep) with a fixed distribution, so a later run
that asks for more members adds them to the same study and trains only what is new.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .compound import DIMENSIONS, Triple, multipliers, official, scale_one, scaled_spec
from .members import Member
from .spec import NetworkSpec

KINDS = ("family", "official", "sweep")
PHI_RANGE = (0.0, 10.0)  # the distribution of the "phi" parameter
MULTIPLIER_RANGE = (1.0, 64.0)  # the distribution of the "multiplier" parameter


@dataclass(frozen=True)
class Plan:
    kind: str  # family, official or sweep
    phis: tuple[float, ...] = ()  # family and official (B0..B7 are phi 0..7)
    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 1.0
    dimension: str = ""  # sweep
    values: tuple[float, ...] = ()  # sweep multipliers
    matched_phis: tuple[float, ...] = ()  # sweep --match family: the member each value matches

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"plan kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        object.__setattr__(self, "phis", tuple(float(p) for p in self.phis))
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))
        object.__setattr__(self, "matched_phis", tuple(float(v) for v in self.matched_phis))
        if self.kind == "sweep" and self.dimension not in DIMENSIONS:
            raise ValueError(f"dimension must be one of {', '.join(DIMENSIONS)}, got {self.dimension!r}")
        if self.kind == "official" and any(p not in range(8) for p in self.phis):
            raise ValueError(f"the official networks are B0..B7, got phi {self.phis}")

    @property
    def triple(self) -> Triple:
        return Triple(self.alpha, self.beta, self.gamma)

    @property
    def param(self) -> str:
        return "multiplier" if self.kind == "sweep" else "phi"

    @property
    def keys(self) -> tuple[float, ...]:
        return self.values if self.kind == "sweep" else self.phis

    def suffix(self) -> str:
        """The study name's suffix after the search's name."""
        if self.kind == "family":
            return f"family-{self.alpha:g}-{self.beta:g}-{self.gamma:g}"
        if self.kind == "official":
            return "official"
        return f"sweep-{self.dimension}"

    def series(self) -> str:
        """The series name in tables and plots."""
        if self.kind == "family":
            return f"compound {self.triple}"
        return "official" if self.kind == "official" else self.dimension

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        return cls(**d)


def member(plan: Plan, base: NetworkSpec, key: float, multiple: int = 8) -> Member:
    """The network of one member of ``plan`` on ``base``."""
    series = plan.series()
    if plan.kind == "family":
        d, w, r = multipliers(plan.triple, key)
        spec = scaled_spec(base, plan.triple, key, multiple)
        return Member(key=key, kind="family", series=series, label=f"phi={key:g}", spec=spec, d=d, w=w, r=r,
                      triples=(plan.triple,), phi=key, dimension="compound")
    if plan.kind == "official":
        spec = official([f"efficientnet-b{int(key)}"], base=base)[0]
        return Member(key=key, kind="official", series=series, label=f"B{int(key)}", spec=spec,
                      d=spec.depth / base.depth, w=spec.width / base.width, r=spec.resolution / base.resolution,
                      phi=key, dimension="official")
    spec = scale_one(base, plan.dimension, key, multiple)
    one = {"depth": "d", "width": "w", "resolution": "r"}[plan.dimension]
    dwr = {"d": 1.0, "w": 1.0, "r": 1.0}
    dwr[one] = key
    matched = plan.matched_phis[plan.values.index(key)] if key in plan.values and plan.matched_phis else None
    return Member(key=key, kind="sweep", series=series, label=f"{one} x{key:.3f}", spec=spec, **dwr,
                  multiplier=key, dimension=plan.dimension, matched_phi=matched)
