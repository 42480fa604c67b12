"""What the built-in base specs (ResNet-50, MobileNetV2) share: a key, ``replace`` and a dict.

A spec class mixes :class:`StagedSpec` in and gives ``kind`` and ``base`` (class variables),
``stage_blocks()``, ``stage_channels()``, ``stem_channels()`` and ``architecture()``.
"""

from __future__ import annotations

import dataclasses


class StagedSpec:
    """The methods of a frozen spec dataclass of stages of blocks (mixed in, no fields of its own)."""

    def architecture_key(self) -> str:
        """A short stable string of ``architecture()``, for tables and records."""
        from ..digest import digest

        blocks = "-".join(str(n) for n in self.stage_blocks())
        chans = "-".join(str(c) for c in self.stage_channels())
        return (f"{self.base}_d{blocks}_w{self.stem_channels()}-{chans}_r{self.resolution}_"
                f"{digest(self.architecture(), length=8)}")

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dict(kind=self.kind, **dataclasses.asdict(self))
