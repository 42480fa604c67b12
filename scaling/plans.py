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


# ---------------------------------------------------------------------------- plans asked for


def family_plans(phis, alpha: float = 1.2, beta: float = 1.1, gamma: float = 1.15,
                 official: bool = False) -> list[Plan]:
    """The family of (``alpha``, ``beta``, ``gamma``) at ``phis``, and with ``official`` the
    official networks B0..B7 at the whole ``phis`` among 0..7.

    Raises:
        ValueError: a base below 1, a phi outside 0..10, or ``official`` without a whole phi in 0..7.
    """
    phis = [float(p) for p in phis]
    for value, what in ((alpha, "alpha"), (beta, "beta"), (gamma, "gamma")):
        if not value >= 1.0:
            raise ValueError(f"{what} must be a number >= 1, got {value:g}")
    if not phis or any(not PHI_RANGE[0] <= p <= PHI_RANGE[1] for p in phis):
        raise ValueError(f"phi values must lie in 0..10, got {phis}")
    out = [Plan("family", phis=phis, alpha=alpha, beta=beta, gamma=gamma)]
    if official:
        ints = sorted({int(p) for p in phis if p.is_integer() and p <= 7})
        if not ints:
            raise ValueError("the official networks are B0..B7: give whole phi values in 0..7")
        out.append(Plan("official", phis=ints))
    return out


def sweep_values(values) -> list[float]:
    """A sweep's multipliers, checked: at least one, each in 1..64 (ValueError where not)."""
    values = [float(v) for v in values]
    if not values or any(not MULTIPLIER_RANGE[0] <= v <= MULTIPLIER_RANGE[1] for v in values):
        raise ValueError(f"multipliers must lie in 1..64, got {values}")
    return values


def sweep_plan(dimension: str, base: NetworkSpec, multiple: int = 8, values=None, match: Plan | None = None) -> Plan:
    """``base`` grown along ``dimension`` alone: by the multipliers ``values``, or, with
    ``match`` (a family plan), by the multiplier nearest each member's FLOPs on ``base``
    (one value per network: members that round to the same multiplier share it).

    Raises:
        ValueError: both or neither of ``values`` and ``match``, a dimension or multiplier out
            of range, or a member's FLOPs that no multiplier up to 16 reaches.
    """
    from .complexity import count
    from .compound import match_flops

    if (values is None) == (match is None):
        raise ValueError("give either the multipliers or the family to match")
    if values is not None:
        return Plan("sweep", dimension=dimension, values=sweep_values(values))
    if match.kind != "family":
        raise ValueError(f"a sweep matches a family's FLOPs, not {match.kind!r}")
    vals, matched = [], []
    for key in match.keys:
        v, _ = match_flops(base, dimension, count(member(match, base, key, multiple).spec).flops, multiple)
        v = round(v, 4)
        if v not in vals:
            vals.append(v)
            matched.append(key)
    return Plan("sweep", dimension=dimension, values=vals, matched_phis=matched)
