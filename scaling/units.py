"""Units of the quantities that tables, figures, the report and the command line print, and counted nouns."""

from __future__ import annotations

import math

GIGA = 1e9  # where FLOPs switch from MFLOPs to GFLOPs


def flops_unit(values) -> tuple[str, float]:
    """The one FLOPs unit rule: ("GFLOPs", 1e9) when the largest of ``values`` reaches 1 G
    multiply-adds, else ("MFLOPs", 1e6). Missing values (None, NaN) are left out.

    The switch is at 1e9 rather than 1e8 so that the largest value of a column never reads
    below 1 in its unit: B0 at 224 px (0.39 G multiply-adds) reads "386 MFLOPs", not
    "0.386 GFLOPs", and a column keeps its significant digits left of the point.

    >>> flops_unit([386e6, 1.8e9])
    ('GFLOPs', 1000000000.0)
    >>> flops_unit([386e6, None])
    ('MFLOPs', 1000000.0)
    """
    vals = [float(v) for v in values if not _missing(v)]
    return ("GFLOPs", GIGA) if vals and max(vals) >= GIGA else ("MFLOPs", 1e6)


def _missing(v) -> bool:
    try:
        return v is None or math.isnan(float(v))
    except (TypeError, ValueError):
        return True


def plural(n: int, word: str) -> str:
    """'1 epoch', '2 epochs', '1,200 images'."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")
