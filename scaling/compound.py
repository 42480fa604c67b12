"""Compound-scaling arithmetic: the constraint, candidate grids, merging, the phi family.

Depth d = alpha^phi, width w = beta^phi, resolution r = gamma^phi, with
alpha * beta^2 * gamma^2 ~ 2 so that FLOPs grow by about 2^phi (Tan & Le 2019, eq. 3).
Rounding moves the realized FLOPs far from 2^phi, so candidates are held to them
(:func:`hold_to_budget`); the grid's size is checked before it is enumerated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .spec import NetworkSpec, round_resolution, spec_for


@dataclass(frozen=True)
class Triple:
    alpha: float
    beta: float
    gamma: float

    @property
    def product(self) -> float:
        return constraint(self.alpha, self.beta, self.gamma)

    def __str__(self) -> str:
        return f"({self.alpha:g}, {self.beta:g}, {self.gamma:g})"


PAPER = Triple(1.2, 1.1, 1.15)


def constraint(alpha: float, beta: float, gamma: float) -> float:
    """alpha * beta^2 * gamma^2: how much FLOPs grow per unit of phi."""
    return alpha * beta**2 * gamma**2


def multipliers(triple: Triple, phi: float) -> tuple[float, float, float]:
    """(d, w, r) = (alpha^phi, beta^phi, gamma^phi); checks d * w^2 * r^2 against the constraint."""
    d, w, r = triple.alpha**phi, triple.beta**phi, triple.gamma**phi
    assert math.isclose(d * w**2 * r**2, triple.product**phi, rel_tol=1e-9)
    return d, w, r


def scaled_spec(base: NetworkSpec, triple: Triple, phi: float, multiple: int = 8) -> NetworkSpec:
    """The network that ``triple`` at ``phi`` rounds to: base width and depth times w and d,
    resolution base * r rounded to ``multiple``."""
    d, w, r = multipliers(triple, phi)
    return base.replace(
        width=base.width * w,
        depth=base.depth * d,
        resolution=round_resolution(base.resolution * r, multiple),
        name=f"phi{phi:g}-{triple.alpha:g}-{triple.beta:g}-{triple.gamma:g}",
    )


# ---------------------------------------------------------------------------- grid

MAX_GRID_POINTS = 2_000_000  # grid points (alpha x beta x gamma values) enumerated without asking


class GridTooLarge(ValueError):
    """A grid with more points than the limit: refused before any is built."""


@dataclass(frozen=True)
class Grid:
    """The search space: ranges, step and how close to ``target`` the product must be.

    ``tolerance`` is relative and strict: 0.05 keeps |alpha * beta^2 * gamma^2 - 2| < 0.1
    (so (1.9, 1, 1), exactly on the bound, is out).
    """

    alpha: tuple[float, float] = (1.0, 2.0)
    beta: tuple[float, float] = (1.0, 1.5)
    gamma: tuple[float, float] = (1.0, 1.5)
    step: float = 0.05
    target: float = 2.0
    tolerance: float = 0.05

    def __post_init__(self) -> None:
        if not self.step > 0:
            raise ValueError(f"step must be positive, got {self.step}")
        if not self.tolerance > 0:
            raise ValueError(f"tolerance must be positive, got {self.tolerance}")
        if not self.target > 1:
            raise ValueError(f"target must be above 1, got {self.target}")
        for name in ("alpha", "beta", "gamma"):
            lo, hi = getattr(self, name)
            if not 1.0 <= lo <= hi:
                raise ValueError(f"{name} range must satisfy 1 <= low <= high, got [{lo}, {hi}]")

    def count(self, lo: float, hi: float) -> int:
        """How many values ``values(lo, hi)`` holds, without building them."""
        return int(math.floor((hi - lo) / self.step + 1e-9)) + 1

    def values(self, lo: float, hi: float) -> list[float]:
        return [self._value(lo, i) for i in range(self.count(lo, hi))]

    def _value(self, lo: float, i: int) -> float:
        return round(lo + i * self.step, 10)

    @property
    def size(self) -> int:
        """Grid points before the constraint: alpha values x beta values x gamma values."""
        return self.count(*self.alpha) * self.count(*self.beta) * self.count(*self.gamma)

    def check_size(self, limit: int = MAX_GRID_POINTS) -> None:
        """Refuse a grid of more than ``limit`` points, saying how many it has.

        Raises:
            GridTooLarge: its message is one line, with the size and what to change.
        """
        if self.size > limit:
            sizes = " x ".join(f"{self.count(*getattr(self, k)):,} {k}" for k in ("alpha", "beta", "gamma"))
            raise GridTooLarge(f"the grid has {self.size:,} points ({sizes} values), more than the limit of "
                               f"{limit:,}; use a larger step or narrower ranges, or raise the limit")

    def iter_triples(self) -> Iterator[Triple]:
        """Every grid point whose product lies within the tolerance of the target, lazily.

        For each (alpha, beta) only the gammas near sqrt(target / (alpha * beta^2)) are
        tried, so the work grows with the triples kept, not with the gamma axis.
        """
        bound = self.tolerance * self.target
        g_lo, g_hi = self.gamma
        n_g = self.count(g_lo, g_hi)
        for i in range(self.count(*self.alpha)):
            a = self._value(self.alpha[0], i)
            for j in range(self.count(*self.beta)):
                b = self._value(self.beta[0], j)
                ab2 = a * b * b
                lo = math.sqrt(max(self.target - bound, 0.0) / ab2)
                hi = math.sqrt((self.target + bound) / ab2)
                first = max(0, math.floor((lo - g_lo) / self.step) - 1)
                last = min(n_g - 1, math.ceil((hi - g_lo) / self.step) + 1)
                for k in range(first, last + 1):
                    g = self._value(g_lo, k)
                    if abs(constraint(a, b, g) - self.target) < bound - 1e-12:
                        yield Triple(a, b, g)

    def triples(self) -> list[Triple]:
        """Every grid point whose product lies within the tolerance of the target."""
        return list(self.iter_triples())


# ---------------------------------------------------------------------------- budget

FLOPS_TOLERANCE = 0.10  # realized FLOPs within 10% of target^phi times the base's


def hold_to_budget(spec: NetworkSpec, target_flops: float, tolerance: float, resolutions: tuple[int, int],
                   multiple: int, flops: Callable[[NetworkSpec], int]) -> NetworkSpec | None:
    """The network nearest ``spec`` whose realized FLOPs lie within ``tolerance`` of the target.

    Depth and width keep what alpha^phi and beta^phi round to; the resolution moves from
    ``spec``'s one (gamma^phi rounded to ``multiple``), one multiple at a time, towards the
    budget, and the first size inside it is taken: the smallest change to the network the
    triple asked for. None when no size within ``resolutions`` (the grid's gamma range at
    phi) lands inside: the walk stops at the range's end or where FLOPs jump over the band.

    Why the resolution: once repeats are rounded up and channels to multiples of 8, it is
    the finest knob left (8 px at 224 px moves FLOPs by about 7%, where one block or one
    channel step moves them by more); it changes no parameter, so depth and width stay
    what alpha and beta made them; and FLOPs never decrease with it (every feature map is
    ceil(size / stride)), so walking one way finds the nearest size in budget. Dropping
    the triples that rounding pushes out of budget would keep only 12 of the 65 networks
    at 224 px; rounding depth to nearest instead of up would change every network of the
    family and the official table as well.
    """
    lo_res, hi_res = resolutions
    lo, hi = target_flops * (1 - tolerance), target_flops * (1 + tolerance)
    res = spec.resolution
    f = flops(spec)
    if lo <= f <= hi:
        return spec
    step = multiple if f < lo else -multiple
    while True:
        res += step
        if not lo_res <= res <= hi_res:
            return None
        moved = spec.replace(resolution=res)
        f = flops(moved)
        if lo <= f <= hi:
            return moved
        if (step > 0 and f > hi) or (step < 0 and f < lo):
            return None


# ---------------------------------------------------------------------------- candidates


def network_key(spec) -> tuple | str:
    """What ``spec`` builds, as a dict key: its ``architecture()`` (B0's is a tuple; another
    base's dict as canonical JSON). Two specs with equal keys are one network."""
    from .digest import canonical

    arch = spec.architecture()
    return arch if isinstance(arch, tuple) else canonical(arch)



@dataclass
class Candidate:
    """One distinct network of a grid, with every triple that rounds to it.

    ``nominal_resolution`` is what the representative's gamma^phi rounds to; ``spec``'s
    resolution differs from it where the candidate was held to its FLOPs budget.
    """

    spec: NetworkSpec
    triples: list[Triple] = field(default_factory=list)
    phi: float = 1.0
    nominal_resolution: int = 0

    @property
    def triple(self) -> Triple:
        """The representative triple: the one whose product is nearest the target."""
        return self.triples[0]

    @property
    def label(self) -> str:
        return " ".join(str(t) for t in self.triples)


def candidates(phi: float = 1.0, grid: Grid | None = None, base: NetworkSpec | None = None,
               multiple: int = 8, flops_tolerance: float | None = FLOPS_TOLERANCE,
               max_points: int = MAX_GRID_POINTS) -> list[Candidate]:
    """The grid's triples at ``phi``, held to their FLOPs budget and merged by the network they round to.

    With ``flops_tolerance`` (default 10%), every candidate's realized FLOPs (counted with
    :func:`scaling.complexity.count`, ``base``'s classifier included) lie within it of
    ``grid.target ** phi`` times the base's: a triple whose rounded network misses is moved
    to the nearest resolution in budget (:func:`hold_to_budget`), or dropped where none is.
    ``None`` keeps every triple at its nominal rounding (studies defined before the hold).

    No network appears twice, so none is ever trained twice. Each candidate lists its
    triples nearest-to-target first; the first is its representative, and candidates
    are sorted by it.

    Raises:
        GridTooLarge: the grid has more than ``max_points`` points (checked before building it).
    """
    from .complexity import count

    grid = grid or Grid()
    base = base or spec_for("efficientnet-b0")
    grid.check_size(max_points)
    memo: dict[tuple, int] = {}

    def flops(spec: NetworkSpec) -> int:
        key = network_key(spec)
        if key not in memo:
            memo[key] = count(spec).flops
        return memo[key]

    target_flops = flops(base) * grid.target**phi
    resolutions = tuple(round_resolution(base.resolution * g**phi, multiple) for g in grid.gamma)
    merged: dict[tuple, Candidate] = {}
    specs: dict[Triple, tuple[NetworkSpec, int]] = {}
    for t in grid.iter_triples():
        spec = scaled_spec(base, t, phi, multiple)
        nominal = spec.resolution
        if flops_tolerance is not None:
            spec = hold_to_budget(spec, target_flops, flops_tolerance, resolutions, multiple, flops)
            if spec is None:
                continue
        key = network_key(spec)
        if key not in merged:
            merged[key] = Candidate(spec=spec, phi=phi)
        merged[key].triples.append(t)
        specs[t] = (spec, nominal)
    for c in merged.values():
        c.triples.sort(key=lambda t: (abs(t.product - grid.target), t.alpha, t.beta, t.gamma))
        c.spec, c.nominal_resolution = specs[c.triples[0]]
    return sorted(merged.values(), key=lambda c: (c.triple.alpha, c.triple.beta, c.triple.gamma))


# ---------------------------------------------------------------------------- family


@dataclass
class Member:
    phi: float
    triple: Triple
    spec: NetworkSpec

    @property
    def multipliers(self) -> tuple[float, float, float]:
        return multipliers(self.triple, self.phi)


def family(triple: Triple, phis=range(0, 8), base: NetworkSpec | None = None, multiple: int = 8) -> list[Member]:
    """B0 scaled by ``triple`` at each phi: the compound-scaled family."""
    base = base or spec_for("efficientnet-b0")
    out = []
    for phi in phis:
        spec = scaled_spec(base, triple, phi, multiple).replace(name=f"phi{phi:g}")
        out.append(Member(phi=phi, triple=triple, spec=spec))
    return out


def official(names=None, base: NetworkSpec | None = None) -> list[NetworkSpec]:
    """The official networks (B0..B7 by default), as specs with the base's settings."""
    names = names or [f"efficientnet-b{i}" for i in range(8)]
    out = []
    for n in names:
        s = spec_for(n)
        if base is not None:
            s = base.replace(width=base.width * s.width, depth=base.depth * s.depth,
                             resolution=round_resolution(base.resolution * s.resolution / 224, 1),
                             dropout=s.dropout, name=s.name)
        out.append(s)
    return out


def parse_phis(text: str) -> list[float]:
    """``"1-7"`` -> [1..7]; ``"0,2,4"``; ``"3"``. Integers in ranges, any numbers in lists."""
    text = text.strip()
    try:
        if "-" in text[1:]:
            lo, hi = text.split("-", 1)
            lo_i, hi_i = int(lo), int(hi)
            if lo_i > hi_i:
                raise ValueError
            return [float(p) for p in range(lo_i, hi_i + 1)]
        return [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"phi must be a number, a range such as 1-7 or a list such as 0,2,4; got {text!r}")


# ---------------------------------------------------------------------------- one dimension

DIMENSIONS = ("width", "depth", "resolution")


def scale_one(base: NetworkSpec, dimension: str, value: float, multiple: int = 8) -> NetworkSpec:
    """The base scaled along one dimension only, by ``value``."""
    if dimension == "width":
        return base.replace(width=base.width * value, name=f"width x{value:g}")
    if dimension == "depth":
        return base.replace(depth=base.depth * value, name=f"depth x{value:g}")
    if dimension == "resolution":
        return base.replace(resolution=round_resolution(base.resolution * value, multiple),
                            name=f"resolution x{value:g}")
    raise ValueError(f"dimension must be one of {', '.join(DIMENSIONS)}, got {dimension!r}")


def match_flops(base: NetworkSpec, dimension: str, target: int, multiple: int = 8,
                limit: float = 16.0, flops=None) -> tuple[float, NetworkSpec]:
    """The one-dimensional multiplier whose network's FLOPs are nearest ``target``.

    FLOPs never decrease with a multiplier (every rounding rule is monotone), so a
    bisection finds the first multiplier at or above the target; the nearest of it and
    the last one below wins.
    """
    from .complexity import count

    flops = flops or (lambda s: count(s).flops)
    lo, hi = 1.0, limit
    if flops(scale_one(base, dimension, lo, multiple)) >= target:
        return lo, scale_one(base, dimension, lo, multiple)
    if flops(scale_one(base, dimension, hi, multiple)) < target:
        raise ValueError(f"{dimension} alone does not reach {target / 1e9:.3f} GFLOPs below x{limit:g}")
    for _ in range(40):
        mid = (lo + hi) / 2
        if flops(scale_one(base, dimension, mid, multiple)) >= target:
            hi = mid
        else:
            lo = mid
    below, above = scale_one(base, dimension, lo, multiple), scale_one(base, dimension, hi, multiple)
    if abs(flops(below) - target) < abs(flops(above) - target):
        return _short(base, dimension, lo, below, multiple, math.floor), below
    return _short(base, dimension, hi, above, multiple, math.ceil), above


def _short(base: NetworkSpec, dimension: str, value: float, spec: NetworkSpec, multiple: int, toward) -> float:
    """A short multiplier that still gives the network of ``spec`` (the same
    :meth:`~NetworkSpec.architecture`): ``value`` to 4 decimals where that does, else the
    fewest decimals on the network's side of the edge.

    A bisection ends on the edge of a rounding step (56 px x 1.785714 is 99.99996 px, 96 px;
    x 1.785715 is 104 px), so rounding its multiplier to the nearest would name the
    network on the other side of the edge. Where it does, rounding away from the edge
    (``toward``: floor for the last multiplier below the target, ceil for the first above)
    stays inside it: x 1.8 for that 104 px network.
    """
    options = [round(value, 4)] + [toward(value * 10 ** places) / 10 ** places for places in range(13)]
    for short in options:  # round(value, 4) first: what plans written before this rule hold
        if scale_one(base, dimension, short, multiple).architecture() == spec.architecture():
            return short
    return value
