"""Scaling laws: error against FLOPs as a saturating power law, with bootstrap intervals.

    error = a * GFLOPs^(-b) + c        (a > 0, b > 0, c >= 0: the irreducible error)

For a fixed exponent b the model is linear in (a, c), so each b has a closed-form least
squares fit; b itself is found by a coarse grid then golden-section search on the squared
error. No optimizer library is needed and the fit is deterministic. Uncertainty comes from
a seeded bootstrap over the points; a held-out check (:class:`Holdout`) fits all but the
largest members and predicts the largest.

A fit is not always a law: :func:`fit_law` returns a :class:`Fit` whose status says
whether the law describes the series ("fitted"), was fitted but does not ("no law
fits": a parameter at its bound, a series whose error rises with FLOPs, or an error
larger than the spread the law explains), or could not be fitted ("not fitted").
:func:`check_series` fits every series of a frame and checks each law on its largest member
(:class:`SeriesFit`), as the report shows them. :func:`line_residuals` is the other fit
here: the straight line of top-1 against log FLOPs that ranks networks at matched FLOPs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

MIN_POINTS = 4  # three parameters need at least one point to spare
B_RANGE = (1e-3, 3.0)
MONOTONE_SLACK = 0.005  # error may rise by half a point between neighbours (seed noise) and stay monotone
BOUND_REL = 0.01  # b within 1% of an end of B_RANGE is at its bound
FITTED, NO_LAW, NOT_FITTED = "fitted", "no law fits", "not fitted"


class TooFewPoints(ValueError):
    """Not enough distinct points to fit three parameters."""


@dataclass(frozen=True)
class PowerLaw:
    a: float
    b: float
    c: float
    n: int  # points fitted
    rmse: float  # root mean squared error of the fit, in error units
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)  # 95% bootstrap intervals

    def error(self, gflops) -> np.ndarray:
        return law_error(self.a, self.b, self.c, gflops)

    def accuracy(self, gflops) -> np.ndarray:
        return 1.0 - self.error(gflops)

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "c": self.c, "n": self.n, "rmse": self.rmse,
                "ci": {k: list(v) for k, v in self.ci.items()}}


def law_error(a: float, b: float, c: float, gflops) -> np.ndarray:
    """The law's error a * gflops^-b + c at ``gflops``."""
    return a * np.asarray(gflops, dtype=float) ** (-b) + c


def _fit_fixed_b(x: np.ndarray, y: np.ndarray, b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares (a, c) for a fixed b, with a >= 0 and c >= 0; returns (a, c, sse).

    Row-wise: ``x`` and ``y`` are (fits, points) and ``b`` one value per fit, so that many
    fits (a bootstrap's, an interval's draws) run as one array computation.
    """
    f = x ** (-np.asarray(b, dtype=float)[:, None])
    fm, ym = f.mean(axis=1), y.mean(axis=1)
    fc = f - fm[:, None]
    spread = (fc ** 2).sum(axis=1)
    safe = np.where(spread > 0, spread, 1.0)
    a = np.where(spread > 0, (fc * (y - ym[:, None])).sum(axis=1) / safe, 0.0)  # least squares of y on (f, 1)
    c = ym - a * fm
    bad = (a < 0) | (c < 0)
    if bad.any():  # the constrained optimum lies on a boundary: the better of c = 0 and a = 0
        a0 = np.maximum(0.0, (f * y).sum(axis=1) / (f * f).sum(axis=1))
        c1 = np.maximum(0.0, ym)
        use_c0 = ((a0[:, None] * f - y) ** 2).sum(axis=1) <= ((c1[:, None] - y) ** 2).sum(axis=1)
        a = np.where(bad, np.where(use_c0, a0, 0.0), a)
        c = np.where(bad, np.where(use_c0, 0.0, c1), c)
    sse = ((a[:, None] * f + c[:, None] - y) ** 2).sum(axis=1)
    return a, c, sse


def _fit_many(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, c, sse) of each row's fit: b on a coarse grid, then golden-section search
    between the grid's neighbours of the best, (a, c) in closed form for each b."""
    m = len(x)
    lo, hi = B_RANGE
    grid = np.geomspace(lo, hi, 60)
    sses = np.stack([_fit_fixed_b(x, y, np.full(m, b))[2] for b in grid], axis=1)
    i = np.argmin(sses, axis=1)
    left, right = grid[np.maximum(0, i - 1)], grid[np.minimum(len(grid) - 1, i + 1)]
    phi = (math.sqrt(5) - 1) / 2
    for _ in range(60):  # golden-section search for b in [left, right]
        m1, m2 = right - phi * (right - left), left + phi * (right - left)
        lower = _fit_fixed_b(x, y, m1)[2] <= _fit_fixed_b(x, y, m2)[2]
        right = np.where(lower, m2, right)
        left = np.where(lower, left, m1)
    b = (left + right) / 2
    a, c, sse = _fit_fixed_b(x, y, b)
    return a, b, c, sse


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    a, b, c, sse = _fit_many(x[None, :], y[None, :])
    return float(a[0]), float(b[0]), float(c[0]), float(sse[0])


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
    ci = {}
    if bootstrap:
        rng = np.random.default_rng(seed)
        idx = np.stack([rng.integers(0, len(x), len(x)) for _ in range(bootstrap)])
        idx = idx[[len(np.unique(x[i])) >= 3 for i in idx]]  # a resample needs 3 distinct FLOPs values
        s = np.stack(_fit_many(x[idx], y[idx])[:3], axis=1)
        ci = {k: (float(np.percentile(s[:, j], 2.5)), float(np.percentile(s[:, j], 97.5))) for j, k in enumerate("abc")}
    return PowerLaw(a=a, b=b, c=c, n=len(x), rmse=math.sqrt(sse / len(x)), ci=ci)


@dataclass(frozen=True)
class Holdout:
    """A held-out check: the law fitted without the largest members, and how well it predicts
    the largest (errors are fractions: 0.16 is 16% top-1 error).

    ``interval``: the 95% interval of the predicted error from the points' seed noise (each
    fitted point drawn again from its mean's standard error, the law refitted, the largest
    predicted, ``draws`` times); None where the points carry no noise estimate.
    ``actual_se``: the held-out member's own standard error, where known.
    """

    law: PowerLaw  # fitted to all but the held-out members
    gflops: float  # the largest member's
    predicted_error: float
    actual_error: float
    abs_error: float  # |predicted - actual|
    rel_error: float  # abs_error / actual_error (inf where the actual error is 0)
    interval: tuple[float, float] | None = None
    actual_se: float | None = None

    @property
    def inside(self) -> bool | None:
        """Whether the measured error lies in the prediction's interval (None without one)."""
        if self.interval is None:
            return None
        return self.interval[0] <= self.actual_error <= self.interval[1]


def holdout_check(gflops, error, holdout: int = 1, bootstrap: int = 0, se=None, *, draws: int = 1000,
                  seed: int = 0) -> Holdout:
    """Fit all but the ``holdout`` largest members; predict the largest.

    Args:
        gflops, error: the series' points.
        se: each point's standard error (the seeds' noise of its mean), for the prediction's
            interval; None for no interval.
        draws: refits for the interval, from a generator seeded with ``seed``.

    Raises:
        TooFewPoints: fewer than 4 points would be left to fit.
    """
    x = np.asarray(gflops, dtype=float)
    y = np.asarray(error, dtype=float)
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if len(x) - holdout < MIN_POINTS:
        raise TooFewPoints(f"{len(x)} points leave {len(x) - holdout} to fit after holding out {holdout}; "
                           f"need at least {MIN_POINTS}")
    law = fit_power_law(x[:-holdout], y[:-holdout], bootstrap=bootstrap)
    predicted = float(law.error(x[-1]))
    actual = float(y[-1])
    interval = actual_se = None
    if se is not None:
        noise = np.asarray(se, dtype=float)[order]
        actual_se = float(noise[-1])
        rng = np.random.default_rng(seed)
        fx, fy, fs = x[:-holdout], y[:-holdout], noise[:-holdout]
        drawn = fy + rng.normal(0.0, 1.0, (draws, len(fy))) * fs
        a, b, c, _sse = _fit_many(np.broadcast_to(fx, drawn.shape), drawn)
        preds = a * x[-1] ** (-b) + c
        interval = (float(np.percentile(preds, 2.5)), float(np.percentile(preds, 97.5)))
    return Holdout(law=law, gflops=float(x[-1]), predicted_error=predicted, actual_error=actual,
                   abs_error=abs(predicted - actual), rel_error=abs(predicted - actual) / actual if actual else math.inf,
                   interval=interval, actual_se=actual_se)


@dataclass(frozen=True)
class Fit:
    """A series' fit and whether it is a law.

    ``status`` is FITTED, NO_LAW (``law`` holds the rejected fit, ``reason`` why it is not a
    law) or NOT_FITTED (``law`` is None, ``reason`` why).
    """

    status: str
    reason: str = ""
    law: PowerLaw | None = None

    @property
    def ok(self) -> bool:
        return self.status == FITTED

    def text(self) -> str:
        """"top-1 limit 84.13%", or the status and its reason, for tables and the CLI."""
        if self.ok:
            return f"top-1 limit {100 * (1 - self.law.c):.2f}%"
        return f"{self.status}: {self.reason}"


def _not_a_law(law: PowerLaw, x: np.ndarray, y: np.ndarray) -> list[str]:
    """Why a fitted law does not describe the series (empty when it does)."""
    reasons = []
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    rises = [(xs[i], xs[i + 1], ys[i + 1] - ys[i]) for i in range(len(xs) - 1)
             if xs[i + 1] > xs[i] and ys[i + 1] - ys[i] > MONOTONE_SLACK]
    if rises:
        x0, x1, by = max(rises, key=lambda r: r[2])
        reasons.append(f"top-1 falls as FLOPs grow (by {100 * by:.1f} points from {x0:.3g} to {x1:.3g} GFLOPs)")
    lo, hi = B_RANGE
    if law.b <= lo * (1 + BOUND_REL) or law.b >= hi * (1 - BOUND_REL):
        reasons.append(f"b = {law.b:.3g} at its bound ({lo:g}..{hi:g})")
    if law.a <= 1e-9:
        reasons.append("a = 0 at its bound: the error does not fall with FLOPs")
    if law.c <= 1e-9:
        reasons.append("c = 0 at its bound: no irreducible error found")
    explained = float(np.std(law.error(x)))
    if law.rmse > explained:
        reasons.append(f"RMSE {100 * law.rmse:.2f} points exceeds the spread the law explains "
                       f"({100 * explained:.2f} points)")
    return reasons


def fit_law(gflops, error, *, bootstrap: int = 1000, seed: int = 0) -> Fit:
    """Fit error = a * gflops^-b + c and judge it (see :class:`Fit`); never raises for data."""
    x = np.asarray(gflops, dtype=float)
    y = np.asarray(error, dtype=float)
    try:
        law = fit_power_law(x, y, bootstrap=bootstrap, seed=seed)
    except TooFewPoints as e:
        return Fit(NOT_FITTED, str(e))
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as e:
        return Fit(NOT_FITTED, f"{type(e).__name__}: {e}")
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0)
    reasons = _not_a_law(law, x[keep], y[keep])
    return Fit(NO_LAW, "; ".join(reasons), law) if reasons else Fit(FITTED, "", law)


def with_base(df: pd.DataFrame, by: str = "series") -> pd.DataFrame:
    """The series frame with the base network (d = w = r = 1, phi = 0) in every series.

    Every way of scaling starts from the base: a family's phi = 0 member is B0, and so is a
    sweep's multiplier 1. A study trains it once (in the first family with phi = 0); its row
    is copied into each series that lacks one, so that each law is fitted from the same start,
    as the paper's Figure 8 draws every curve from B0. A frame without such a row is returned
    as it is.
    """
    if df.empty or not {"d", "w", "r"} <= set(df.columns):
        return df
    dwr = df[["d", "w", "r"]].apply(pd.to_numeric, errors="coerce")
    is_base = np.isclose(dwr, 1.0).all(axis=1)
    if not is_base.any():
        return df
    base = df[is_base].iloc[[0]]
    parts = []
    for name, g in df.groupby(by, sort=False):
        copy = base.assign(**{by: name}, **({"label": None} if "label" in base.columns else {}))  # named once
        parts.append(g if is_base[g.index].any() else pd.concat([copy, g]))
    return pd.concat(parts, ignore_index=True)


def _standard_errors(g: pd.DataFrame, pooled: float | None):
    """Each row's standard error of its top-1 mean: its seeds' std over sqrt(seeds), the
    pooled std where a row has one seed; None where nothing is known."""
    if pooled is None or "seeds" not in g.columns:
        return None
    seeds = pd.to_numeric(g["seeds"], errors="coerce").fillna(1).clip(lower=1).to_numpy()
    return pooled / np.sqrt(seeds)


def _pooled_std(df: pd.DataFrame) -> float | None:
    """The seeds' std of one network's top-1, pooled over the rows trained with several seeds
    (the root mean of their variances), or None where no row has two seeds."""
    if not {"top1_std", "seeds"} <= set(df.columns):
        return None
    std = pd.to_numeric(df["top1_std"], errors="coerce")
    several = pd.to_numeric(df["seeds"], errors="coerce").fillna(1) >= 2
    known = std[several & std.notna()]
    return float(np.sqrt((known ** 2).mean())) if len(known) else None


def _series_points(df: pd.DataFrame, by: str = "series"):
    """(name, GFLOPs, error, standard errors or None) of each series of a frame with columns
    ``by``, ``flops`` (multiply-adds) and ``top1`` (a fraction), and where present ``top1_std``
    and ``seeds``, in the frame's order; rows without both numbers left out."""
    if df.empty:
        return
    data = df.copy()
    for col in ("flops", "top1"):
        data[col] = pd.to_numeric(data[col], errors="coerce")
    data = data.dropna(subset=["flops", "top1"])
    everywhere = _pooled_std(data)
    for name, g in data.groupby(by, sort=False):
        # the series' own seed noise (an unstable series elsewhere must not widen this one's); the frame's without
        pooled = _pooled_std(g)
        se = _standard_errors(g, pooled if pooled is not None else everywhere)
        yield str(name), g["flops"].to_numpy() / 1e9, 1.0 - g["top1"].to_numpy(), se


def fit_series(df, by: str = "series", bootstrap: int = 1000) -> dict[str, Fit]:
    """One :class:`Fit` per series of a DataFrame with columns ``by``, ``flops`` and ``top1``,
    each series from the base network (:func:`with_base`)."""
    return {name: fit_law(x, y, bootstrap=bootstrap) for name, x, y, _ in _series_points(with_base(df, by), by)}


NO_LAW_TO_CHECK = "no law to check"


@dataclass(frozen=True)
class SeriesFit:
    """A series' :class:`Fit` and, for a law, its held-out check: ``check`` is the
    :class:`Holdout`, or None with ``no_check`` saying why there is none."""

    fit: Fit
    check: Holdout | None = None
    no_check: str = ""


def check_law(gflops, error, *, bootstrap: int = 1000, seed: int = 0, se=None) -> SeriesFit:
    """:func:`fit_law`, and for a law the held-out check (:func:`holdout_check`, with its interval
    where ``se`` gives the points' standard errors) of it; never raises for data."""
    fit = fit_law(gflops, error, bootstrap=bootstrap, seed=seed)
    if not fit.ok:
        return SeriesFit(fit, None, NO_LAW_TO_CHECK)
    try:
        return SeriesFit(fit, holdout_check(gflops, error, se=se, seed=seed))
    except TooFewPoints as e:
        return SeriesFit(fit, None, f"no held-out check: {e}")
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as e:
        return SeriesFit(fit, None, f"no held-out check: {type(e).__name__}: {e}")


def check_series(df, by: str = "series", bootstrap: int = 1000) -> dict[str, SeriesFit]:
    """One :class:`SeriesFit` per series of a DataFrame with columns ``by``, ``flops`` and ``top1``
    (the report's fits: each law, from the base network (:func:`with_base`), with its 95%
    intervals and its held-out check)."""
    return {name: check_law(x, y, bootstrap=bootstrap, se=se)
            for name, x, y, se in _series_points(with_base(df, by), by)}


HOLDOUT_COLUMNS = ["heldout_gflops", "predicted_top1", "predicted_low", "predicted_high", "measured_top1",
                   "measured_se", "inside"]


def fits_frame(fits: dict[str, Fit | SeriesFit]) -> pd.DataFrame:
    """The fits of :func:`fit_series` or :func:`check_series` as rows (``laws.csv``): series,
    status, reason, the law's a, b, c, the points fitted, RMSE and the top-1 limit 1 - c
    (empty where no fit was made); for checked fits also the held-out member's GFLOPs, the
    predicted top-1 with its 95% interval, the measured top-1 with its standard error, and
    whether it lies inside (empty where there was no check)."""
    rows = []
    for series, fitted in fits.items():
        fit, held = (fitted.fit, fitted.check) if isinstance(fitted, SeriesFit) else (fitted, None)
        law = fit.law
        row = {"series": series, "status": fit.status, "reason": fit.reason,
               **({"a": law.a, "b": law.b, "c": law.c, "n": law.n, "rmse": law.rmse, "top1_limit": 1 - law.c}
                  if law is not None else {})}
        if held is not None:
            row.update(heldout_gflops=held.gflops, predicted_top1=1 - held.predicted_error,
                       measured_top1=1 - held.actual_error, measured_se=held.actual_se, inside=held.inside,
                       **({"predicted_low": 1 - held.interval[1], "predicted_high": 1 - held.interval[0]}
                          if held.interval is not None else {}))
        rows.append(row)
    return pd.DataFrame(rows, columns=["series", "status", "reason", "a", "b", "c", "n", "rmse", "top1_limit",
                                       *HOLDOUT_COLUMNS])


def line_residuals(flops, top1) -> np.ndarray:
    """Each point's top-1 minus the least-squares line of top-1 against log FLOPs through all of
    them: above 0, more accurate than the points' own trend at its FLOPs (FLOPs > 0, no NaN)."""
    x, y = np.log(np.asarray(flops, dtype=float)), np.asarray(top1, dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    return y - (intercept + slope * x)
