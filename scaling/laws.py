"""Scaling laws: error against FLOPs as a saturating power law, with bootstrap intervals.

    error = a * GFLOPs^(-b) + c        (a > 0, b > 0, c >= 0: the irreducible error)

For a fixed exponent b the model is linear in (a, c), so each b has a closed-form least
squares fit; b itself is found by a coarse grid then golden-section search on the squared
error. No optimizer library is needed and the fit is deterministic. Uncertainty comes from
a seeded bootstrap over the points; a held-out check fits all but the largest members and
predicts the largest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

MIN_POINTS = 4  # three parameters need at least one point to spare
B_RANGE = (1e-3, 3.0)


class TooFewPoints(ValueError):
    """Not enough distinct points to fit three parameters."""


@dataclass
class PowerLaw:
    a: float
    b: float
    c: float
    n: int  # points fitted
    rmse: float  # root mean squared error of the fit, in error units
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)  # 95% bootstrap intervals

    def error(self, gflops) -> np.ndarray:
        return self.a * np.asarray(gflops, dtype=float) ** (-self.b) + self.c

    def accuracy(self, gflops) -> np.ndarray:
        return 1.0 - self.error(gflops)

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "c": self.c, "n": self.n, "rmse": self.rmse,
                "ci": {k: list(v) for k, v in self.ci.items()}}


def _fit_fixed_b(x: np.ndarray, y: np.ndarray, b: float) -> tuple[float, float, float]:
    """Least squares (a, c) for a fixed b, with a >= 0 and c >= 0; returns (a, c, sse)."""
    f = x ** (-b)
    design = np.stack([f, np.ones_like(f)], axis=1)
    (a, c), *_ = np.linalg.lstsq(design, y, rcond=None)
    if a < 0 or c < 0:  # the constrained optimum lies on a boundary: try both
        options = []
        a0 = max(0.0, float(f @ y / (f @ f)))  # c = 0
        options.append((a0, 0.0))
        options.append((0.0, max(0.0, float(y.mean()))))  # a = 0
        a, c = min(options, key=lambda p: float(((p[0] * f + p[1] - y) ** 2).sum()))
    sse = float(((a * f + c - y) ** 2).sum())
    return float(a), float(c), sse


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    lo, hi = B_RANGE
    grid = np.geomspace(lo, hi, 60)
    sses = [_fit_fixed_b(x, y, b)[2] for b in grid]
    i = int(np.argmin(sses))
    left, right = grid[max(0, i - 1)], grid[min(len(grid) - 1, i + 1)]
    phi = (math.sqrt(5) - 1) / 2
    for _ in range(60):  # golden-section search for b in [left, right]
        m1, m2 = right - phi * (right - left), left + phi * (right - left)
        if _fit_fixed_b(x, y, m1)[2] <= _fit_fixed_b(x, y, m2)[2]:
            right = m2
        else:
            left = m1
    b = (left + right) / 2
    a, c, sse = _fit_fixed_b(x, y, b)
    return a, b, c, sse


def fit_power_law(gflops, error, *, bootstrap: int = 1000, seed: int = 0) -> PowerLaw:
    """Fit error = a * gflops^-b + c.

    Raises:
        TooFewPoints: fewer than 4 distinct FLOPs values (the reason says how many).
    """
    x = np.asarray(gflops, dtype=float)
    y = np.asarray(error, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0)
    x, y = x[keep], y[keep]
    distinct = len(np.unique(x))
    if distinct < MIN_POINTS:
        raise TooFewPoints(f"{distinct} distinct FLOPs value(s); a three-parameter law needs at least {MIN_POINTS}")
    a, b, c, sse = _fit(x, y)
    law = PowerLaw(a=a, b=b, c=c, n=len(x), rmse=math.sqrt(sse / len(x)))
    if bootstrap:
        rng = np.random.default_rng(seed)
        samples = []
        for _ in range(bootstrap):
            idx = rng.integers(0, len(x), len(x))
            if len(np.unique(x[idx])) < 3:
                continue
            samples.append(_fit(x[idx], y[idx])[:3])
        s = np.array(samples)
        law.ci = {k: (float(np.percentile(s[:, j], 2.5)), float(np.percentile(s[:, j], 97.5)))
                  for j, k in enumerate("abc")}
    return law


def holdout_check(gflops, error, holdout: int = 1, bootstrap: int = 0) -> dict:
    """Fit all but the ``holdout`` largest members; predict the largest.

    Returns the law, the largest member's FLOPs, its predicted and actual error and
    their difference (absolute, in error units, and relative to the actual error).
    """
    x = np.asarray(gflops, dtype=float)
    y = np.asarray(error, dtype=float)
    order = np.argsort(x)
    x, y = x[order], y[order]
    if len(x) - holdout < MIN_POINTS:
        raise TooFewPoints(f"{len(x)} points leave {len(x) - holdout} to fit after holding out {holdout}; "
                           f"need at least {MIN_POINTS}")
    law = fit_power_law(x[:-holdout], y[:-holdout], bootstrap=bootstrap)
    predicted = float(law.error(x[-1]))
    actual = float(y[-1])
    return {"law": law, "gflops": float(x[-1]), "predicted_error": predicted, "actual_error": actual,
            "abs_error": abs(predicted - actual), "rel_error": abs(predicted - actual) / actual if actual else math.inf}


def fit_series(df, by: str = "series", bootstrap: int = 1000) -> dict:
    """One law per series of a DataFrame with columns ``by``, ``flops`` and ``top1``.

    Returns series -> PowerLaw, or series -> the reason it was not fitted.
    """
    out: dict = {}
    for name, g in df.dropna(subset=["top1"]).groupby(by, sort=False):
        try:
            out[name] = fit_power_law(g["flops"] / 1e9, 1.0 - g["top1"], bootstrap=bootstrap)
        except TooFewPoints as e:
            out[name] = f"not fitted: {e}"
    return out
