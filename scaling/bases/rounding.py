"""The scaling rules the bases share: channels by width, blocks by depth, and their checks.

Width multiplies a layer's channels, which are then rounded to a multiple of
:data:`DIVISOR` (8), never below :data:`ROUND_LIMIT` (90%) of the scaled value and never
below one :data:`DIVISOR` (the reference EfficientNet rule, torchvision's
``_make_divisible``). Depth multiplies a stage's block count, rounded up, so a stage never
loses a block to rounding (a depth below 1 leaves every stage at least one block: the CPU's
reduced base). A width or depth that is not a positive finite number is refused.
"""

from __future__ import annotations

import math

DIVISOR = 8  # channels are rounded to a multiple of this
ROUND_LIMIT = 0.9  # rounding may not lose more than 1 - ROUND_LIMIT of the scaled channels


def round_channels(channels: int, width: float, divisor: int = DIVISOR, limit: float = ROUND_LIMIT) -> int:
    """``channels * width`` rounded to the nearest multiple of ``divisor``, at least ``divisor``,
    plus one ``divisor`` where the nearest multiple is below ``limit`` of the scaled value.

    Example: 24 channels at width 1.5 are 36, rounded to 40; 64 at 1.5 are exactly 96.
    """
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < limit * scaled:
        rounded += divisor
    return int(rounded)


def round_blocks(blocks: int, depth: float) -> int:
    """``blocks * depth`` rounded up (ceil), as :func:`scaling.spec.round_repeats` does for B0."""
    return int(math.ceil(blocks * depth))


def check_multipliers(kind: str, width: float, depth: float, resolution: int, num_classes: int) -> None:
    """Refuse what no network can be built from.

    Raises:
        ValueError: one line naming the base, the field, the value and what is allowed.
    """
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not (math.isfinite(width) and width > 0):
        raise ValueError(f"{kind}: width must be a positive finite number, got {width!r}")
    if isinstance(depth, bool) or not isinstance(depth, (int, float)) or not (math.isfinite(depth) and depth > 0):
        raise ValueError(f"{kind}: depth must be a positive finite number, got {depth!r}")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"{kind}: resolution must be a positive integer, got {resolution!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{kind}: num_classes must be a positive integer, got {num_classes!r}")
