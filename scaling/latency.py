"""Which predicts inference latency better across networks: FLOPs or activations.

FLOPs are not time: a network of depthwise convolutions (EfficientNet) does few
multiply-adds per byte it moves, so on a GPU it is bound by memory traffic, and its
activations (the elements its layers write) can say more about its latency than its FLOPs.
:func:`fit_latency` fits, by least squares across a set of networks,

    log(latency) = intercept + slope * log(FLOPs)        and
    log(latency) = intercept + slope * log(activations)

and reports each fit's RMSE in log space (``rmse``) and as a typical relative error
(``pct`` = 100 * (exp(rmse) - 1)), and which of the two predicts latency better. A fit
predicts latency only where latency grows with its predictor (slope > 0) and the fit
explains at least half the variance of log latency (R² >= :data:`MIN_R2`); where neither
does (latencies measured while other work shared the device, say) the verdict is
"neither", never the smaller of two errors that both say nothing. Networks
with the same FLOPs and activations (seeds, a base shared by several series) are one point,
their latencies' geometric mean. Fewer than :data:`MIN_POINTS` distinct points fit nothing:
two points always lie on a line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_POINTS = 3
PREDICTORS = ("flops", "activations")
TIE_REL = 1e-9  # RMSEs this close (relatively) are a tie
MIN_R2 = 0.5  # a fit that explains less of log latency's variance predicts nothing


@dataclass(frozen=True)
class LogFit:
    """log(latency) = intercept + slope * log(x), least squares over ``n`` points."""

    predictor: str  # "flops" or "activations"
    slope: float
    intercept: float
    rmse: float  # root mean squared residual of log(latency) (natural log)
    n: int
    r2: float = math.nan  # the share of log latency's variance the fit explains

    @property
    def predicts(self) -> bool:
        """Latency grows with the predictor and the fit explains at least MIN_R2 of its variance."""
        return self.slope > 0 and self.r2 >= MIN_R2

    @property
    def pct(self) -> float:
        """The RMSE as a typical relative error of the predicted latency, in percent."""
        return 100.0 * math.expm1(self.rmse)

    def predict(self, x) -> np.ndarray:
        """Latency (in the fitted latencies' unit) at ``x`` FLOPs or activations."""
        return np.exp(self.intercept + self.slope * np.log(np.asarray(x, dtype=float)))

    def to_dict(self) -> dict:
        return {"predictor": self.predictor, "slope": self.slope, "intercept": self.intercept, "rmse": self.rmse,
                "pct": self.pct, "n": self.n, "r2": self.r2}


@dataclass(frozen=True)
class LatencyFits:
    """Both fits over the same points, and which is better (None: too few points; "tie")."""

    n: int  # distinct points
    flops: LogFit | None
    activations: LogFit | None
    better: str | None  # "flops", "activations", "tie", "neither", or None with too few points

    @property
    def ok(self) -> bool:
        return self.better is not None

    def sentence(self) -> str:
        """"activations predict latency better than FLOPs here (12.0% vs 35.1%)", the reverse, a tie, or too few."""
        if not self.ok:
            return (f"too few members: {self.n} distinct network{'s' if self.n != 1 else ''} with a measured "
                    f"latency, and a fit needs {MIN_POINTS}")
        f, a = self.flops.pct, self.activations.pct
        if self.better == "neither":
            return (f"neither FLOPs nor activations predicts latency here (R² {self.flops.r2:.2f} and "
                    f"{self.activations.r2:.2f}, slopes {self.flops.slope:+.2f} and {self.activations.slope:+.2f}; "
                    f"errors {f:.1f}% and {a:.1f}%)")
        if self.better == "tie":
            return f"FLOPs and activations predict latency equally well here ({f:.1f}% each)"
        if self.better == "activations":
            return f"activations predict latency better than FLOPs here ({a:.1f}% vs {f:.1f}%)"
        return f"FLOPs predict latency better than activations here ({f:.1f}% vs {a:.1f}%)"

    def to_dict(self) -> dict:
        return {"n": self.n, "better": self.better, "sentence": self.sentence(),
                "flops": self.flops.to_dict() if self.flops else None,
                "activations": self.activations.to_dict() if self.activations else None}


def _points(flops, activations, latency) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (FLOPs, activations) points with positive values, log latency averaged over duplicates."""
    f = np.asarray(flops, dtype=float)
    a = np.asarray(activations, dtype=float)
    t = np.asarray(latency, dtype=float)
    if not (f.shape == a.shape == t.shape) or f.ndim != 1:
        raise ValueError(f"flops, activations and latency need one value per network, got shapes "
                         f"{f.shape}, {a.shape}, {t.shape}")
    keep = np.isfinite(f) & np.isfinite(a) & np.isfinite(t) & (f > 0) & (a > 0) & (t > 0)
    groups: dict[tuple[float, float], list[float]] = {}
    for fi, ai, ti in zip(f[keep], a[keep], t[keep]):
        groups.setdefault((fi, ai), []).append(math.log(ti))
    keys = sorted(groups)
    return (np.array([k[0] for k in keys]), np.array([k[1] for k in keys]),
            np.array([sum(v) / len(v) for v in (groups[k] for k in keys)]))


def fit_log(x, log_latency, predictor: str) -> LogFit:
    """Least squares of ``log_latency`` on log(``x``).

    Raises:
        ValueError: fewer than :data:`MIN_POINTS` distinct values of ``x``.
    """
    lx = np.log(np.asarray(x, dtype=float))
    y = np.asarray(log_latency, dtype=float)
    if len(np.unique(lx)) < MIN_POINTS:
        raise ValueError(f"{predictor}: {len(np.unique(lx))} distinct values, a fit needs {MIN_POINTS}")
    xm, ym = lx.mean(), y.mean()
    slope = float(((lx - xm) * (y - ym)).sum() / ((lx - xm) ** 2).sum())
    intercept = float(ym - slope * xm)
    rmse = float(np.sqrt(np.mean((y - intercept - slope * lx) ** 2)))
    spread = float(np.mean((y - ym) ** 2))
    r2 = 1.0 - rmse ** 2 / spread if spread > 0 else 1.0
    return LogFit(predictor, slope, intercept, rmse, len(lx), r2)


def fit_latency(flops, activations, latency) -> LatencyFits:
    """Fit log(latency) against log(FLOPs) and against log(activations) across networks.

    ``flops``, ``activations``, ``latency``: one value per network (any positive unit of time);
    non-finite or non-positive values are left out. Of the fits that predict latency
    (:attr:`LogFit.predicts`), the one with the smaller RMSE is the better; "neither" where none does.
    """
    f, a, y = _points(flops, activations, latency)
    n = len(y)
    if n < MIN_POINTS or len(np.unique(f)) < MIN_POINTS or len(np.unique(a)) < MIN_POINTS:
        return LatencyFits(n, None, None, None)
    by_flops, by_acts = fit_log(f, y, "flops"), fit_log(a, y, "activations")
    if not (by_flops.predicts or by_acts.predicts):
        better = "neither"
    elif by_flops.predicts != by_acts.predicts:
        better = "flops" if by_flops.predicts else "activations"
    elif abs(by_flops.rmse - by_acts.rmse) <= TIE_REL * max(by_flops.rmse, by_acts.rmse, 1e-300):
        better = "tie"
    else:
        better = "flops" if by_flops.rmse < by_acts.rmse else "activations"
    return LatencyFits(n, by_flops, by_acts, better)


def fit_frame(df) -> LatencyFits:
    """:func:`fit_latency` of a frame's ``flops``, ``activations`` and ``latency_ms`` columns."""
    import pandas as pd

    cols = [pd.to_numeric(df[c], errors="coerce") if c in df else pd.Series([math.nan] * len(df))
            for c in ("flops", "activations", "latency_ms")]
    return fit_latency(*(c.to_numpy(dtype=float) for c in cols))
