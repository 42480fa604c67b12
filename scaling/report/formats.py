"""The report's formatting of numbers and counted nouns, one rule each, so that every table and
sentence reads the same: top-1 as 84.13%, FLOPs in MFLOPs or GFLOPs with 3 significant digits,
parameters in millions, a missing value as a dash.
"""

from __future__ import annotations

import math

import pandas as pd

from ..units import flops_unit
from .model import DASH


def missing(v) -> bool:
    """None, NaN or pandas' NA."""
    try:
        return v is None or (isinstance(v, float) and math.isnan(v)) or bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def sig3(v) -> str:
    """3 significant digits, never in exponent notation: 1234 -> "1234", 12.34 -> "12.3", 0.01234 -> "0.0123"."""
    if missing(v):
        return DASH
    v = float(v)
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    if abs(v) < 1e-3:  # 0.000000000000174 reads better as 1.74e-13
        return f"{v:.2e}"
    decimals = max(0, 2 - math.floor(math.log10(abs(v))))
    text = f"{v:.{decimals}f}"
    # Rounding may add a digit (9.996 -> "10.00"): format the rounded value again.
    rounded = float(text)
    if rounded != 0 and math.floor(math.log10(abs(rounded))) != math.floor(math.log10(abs(v))):
        text = f"{rounded:.{max(0, 2 - math.floor(math.log10(abs(rounded))))}f}"
    return text


def pct(v, digits: int = 2) -> str:
    """A fraction as a percentage: 0.84127 -> "84.13%"."""
    return DASH if missing(v) else f"{100 * float(v):.{digits}f}%"


def points(v) -> str:
    """A spread of a fraction in percentage points: 0.0012 -> "±0.12"."""
    return DASH if missing(v) else f"±{100 * float(v):.2f}"


def flops_text(v) -> str:
    """FLOPs with their unit: 386e6 -> "386 MFLOPs", 1.8e9 -> "1.80 GFLOPs"."""
    if missing(v):
        return DASH
    unit, scale = flops_unit([v])
    return f"{sig3(float(v) / scale)} {unit}"


def params_m(v) -> str:
    return DASH if missing(v) else sig3(float(v) / 1e6)


def count(v) -> str:
    """A rate or count as a whole number with thousands separators."""
    return DASH if missing(v) else f"{float(v):,.0f}"


def num(v) -> str:
    """A coefficient as written in the grid: 1.15, 1."""
    return DASH if missing(v) else f"{float(v):g}"


def triple_text(alpha, beta, gamma) -> str:
    return f"({num(alpha)}, {num(beta)}, {num(gamma)})"


def plural(n: int, word: str, many: str | None = None) -> str:
    """"1 trial", "2 trials"; ``many`` for a plural that is not ``word`` + s."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def short(text: str, limit: int = 300) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
