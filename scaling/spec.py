"""The network spec: block strings, rounding rules and the named EfficientNets.

A :class:`NetworkSpec` is the one currency between the parts of the tool: the model is
built from it, complexity is counted and cached by it, training results and study
records carry it. It is a frozen dataclass, hashable and JSON-serialisable.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from .digest import digest_text

# ---------------------------------------------------------------------------- blocks

_PART = re.compile(r"^(r|k|s|e|i|o|se)(\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class BlockArgs:
    """One stage of MBConv blocks.

    Args:
        repeats: number of blocks in the stage.
        kernel: depthwise kernel size.
        stride: stride of the first block of the stage (the others use 1).
        expand: expansion ratio of the 1x1 convolution (1 skips it).
        w_in: input channels of the first block.
        w_out: output channels of every block.
        se: squeeze-excitation ratio, relative to the block's input channels (0: none).
        skip: identity skip connection where stride is 1 and w_in == w_out.
    """

    repeats: int
    kernel: int
    stride: int
    expand: int
    w_in: int
    w_out: int
    se: float = 0.25
    skip: bool = True

    @classmethod
    def decode(cls, text: str) -> "BlockArgs":
        """Parse a block string such as ``r1_k3_s11_e1_i32_o16_se0.25``.

        Grammar: parts joined by ``_``, in any order: ``r<repeats>``, ``k<kernel>``,
        ``s<stride>`` (one digit, or two equal digits as in ``s22``), ``e<expansion>``,
        ``i<in channels>``, ``o<out channels>``, optional ``se<ratio>`` and the flag
        ``noskip``. ``r k s e i o`` are required.

        Raises:
            ValueError: naming the malformed or missing part.
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"empty block string {text!r}")
        values: dict[str, str] = {}
        skip = True
        for part in text.strip().split("_"):
            if part == "noskip":
                skip = False
                continue
            m = _PART.match(part)
            if m is None:
                raise ValueError(f"block string {text!r}: malformed part {part!r}")
            key, val = m.groups()
            if key in values:
                raise ValueError(f"block string {text!r}: part {key!r} given twice")
            values[key] = val
        missing = [k for k in ("r", "k", "s", "e", "i", "o") if k not in values]
        if missing:
            raise ValueError(f"block string {text!r}: missing part {missing[0]!r}")

        def integer(key: str) -> int:
            val = values[key]
            if not val.isdigit() or int(val) < 1:
                raise ValueError(
                    f"block string {text!r}: part {key!r} needs a positive integer, got {val!r}"
                )
            return int(val)

        stride_text = values["s"]
        if len(stride_text) == 2 and stride_text[0] == stride_text[1]:
            stride_text = stride_text[0]
        if not stride_text.isdigit() or len(stride_text) != 1 or int(stride_text) < 1:
            raise ValueError(
                f"block string {text!r}: part 's' needs a stride such as s1, s11 or s22, "
                f"got {'s' + values['s']!r}"
            )
        se = float(values.get("se", 0.0))
        if not 0.0 <= se <= 1.0:
            raise ValueError(f"block string {text!r}: part 'se' must lie in [0, 1], got {se}")
        return cls(
            repeats=integer("r"),
            kernel=integer("k"),
            stride=int(stride_text),
            expand=integer("e"),
            w_in=integer("i"),
            w_out=integer("o"),
            se=se,
            skip=skip,
        )

    def encode(self) -> str:
        """The block string; ``BlockArgs.decode(b.encode()) == b``."""
        parts = [
            f"r{self.repeats}",
            f"k{self.kernel}",
            f"s{self.stride}{self.stride}",
            f"e{self.expand}",
            f"i{self.w_in}",
            f"o{self.w_out}",
        ]
        if self.se:
            parts.append(f"se{self.se:g}")
        if not self.skip:
            parts.append("noskip")
        return "_".join(parts)


# The reference EfficientNet-B0 (Tan & Le 2019, Table 1).
B0_BLOCKS: tuple[str, ...] = (
    "r1_k3_s11_e1_i32_o16_se0.25",
    "r2_k3_s22_e6_i16_o24_se0.25",
    "r2_k5_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25",
    "r3_k5_s11_e6_i80_o112_se0.25",
    "r4_k5_s22_e6_i112_o192_se0.25",
    "r1_k3_s11_e6_i192_o320_se0.25",
)

# ---------------------------------------------------------------------------- rounding


def round_channels(channels: float, multiplier: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Scale ``channels`` by ``multiplier`` and round to a multiple of ``divisor``.

    Rounds to the nearest multiple, never below ``divisor``, and adds one ``divisor``
    where rounding would lose more than ``1 - round_limit`` (10%) of the scaled width:
    the reference implementation's rule.
    """
    scaled = channels * multiplier
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < round_limit * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, multiplier: float) -> int:
    """Scale a stage's block count by the depth multiplier, rounded up.

    Rounding up means a stage never loses a block to rounding, so that depth grows
    monotonically with the multiplier.
    """
    return int(math.ceil(multiplier * repeats))


def round_resolution(resolution: float, multiple: int = 8) -> int:
    """Round an image size to the nearest multiple of ``multiple`` (at least one)."""
    return max(multiple, int(round(resolution / multiple)) * multiple)


# ---------------------------------------------------------------------------- spec

PADDINGS = ("same", "symmetric")


@dataclass(frozen=True)
class NetworkSpec:
    """Everything needed to build one EfficientNet-style network.

    ``blocks`` are the base (unscaled) stages; ``width`` and ``depth`` scale them with
    :func:`round_channels` and :func:`round_repeats`. ``resolution`` is the training
    image size (and the size static "same" padding is computed for).
    """

    width: float = 1.0
    depth: float = 1.0
    resolution: int = 224
    dropout: float = 0.2  # before the classifier
    drop_connect: float = 0.2  # stochastic depth rate of the last block; linear in the index
    num_classes: int = 1000
    in_channels: int = 3
    padding: str = "same"  # "same" (TensorFlow) or "symmetric" (torchvision, timm)
    static_padding: bool = False  # "same" padding fixed for `resolution` (ONNX export)
    bn_momentum: float = 0.01  # PyTorch convention; TensorFlow's decay 0.99
    bn_eps: float = 1e-3
    stem_channels: int = 32
    head_channels: int = 1280
    divisor: int = 8
    round_limit: float = 0.9
    blocks: tuple[str, ...] = B0_BLOCKS
    name: str = ""

    def __post_init__(self) -> None:
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        if not self.width > 0 or not self.depth > 0:
            raise ValueError(f"width and depth must be positive, got {self.width}, {self.depth}")
        if self.resolution < 1:
            raise ValueError(f"resolution must be positive, got {self.resolution}")
        if not 0 <= self.dropout < 1 or not 0 <= self.drop_connect < 1:
            raise ValueError("dropout and drop_connect must lie in [0, 1)")
        if self.num_classes < 1 or self.in_channels < 1:
            raise ValueError("num_classes and in_channels must be positive")
        object.__setattr__(self, "blocks", tuple(self.blocks))
        for text in self.blocks:
            BlockArgs.decode(text)

    # -- derived structure

    def stages(self) -> list[BlockArgs]:
        """The scaled stages: repeats and channels after rounding."""
        out = []
        for text in self.blocks:
            b = BlockArgs.decode(text)
            out.append(
                dataclasses.replace(
                    b,
                    repeats=round_repeats(b.repeats, self.depth),
                    w_in=self.channels(b.w_in),
                    w_out=self.channels(b.w_out),
                )
            )
        return out

    def channels(self, base: int) -> int:
        return round_channels(base, self.width, self.divisor, self.round_limit)

    @property
    def stem_width(self) -> int:
        return self.channels(self.stem_channels)

    @property
    def head_width(self) -> int:
        return self.channels(self.head_channels)

    @property
    def num_blocks(self) -> int:
        return sum(s.repeats for s in self.stages())

    def architecture(self) -> tuple:
        """What the network is, independent of how it was asked for.

        Two specs with equal architectures build identical networks at identical
        resolution (up to dropout rates): candidates are merged by this key.
        """
        return (
            self.in_channels,
            self.stem_width,
            tuple(s.encode() for s in self.stages()),
            self.head_width,
            self.num_classes,
            self.resolution,
            self.padding,
        )

    def architecture_key(self) -> str:
        """A short stable string of :meth:`architecture`, for caches and tables."""
        arch = self.architecture()
        stages = self.stages()
        reps = "-".join(str(s.repeats) for s in stages)
        chans = "-".join(str(s.w_out) for s in stages)
        tail = digest_text(repr(arch), 8, algorithm="sha1")  # sha1: the names in existing studies stay
        return f"d{reps}_w{self.stem_width}-{chans}-{self.head_width}_r{self.resolution}_{tail}"

    # -- conversion

    def replace(self, **changes) -> "NetworkSpec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["blocks"] = list(self.blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown spec fields: {sorted(unknown)}")
        d = dict(d)
        if "blocks" in d:
            d["blocks"] = tuple(d["blocks"])
        return cls(**d)


def smallest_feature_size(spec) -> int:
    """The side of the smallest feature map a batch-norm layer normalises: for B0 the resolution
    after the stem's stride 2 and each stage's stride, each rounding up (as "same" and
    symmetric padding of odd kernels both do); the head's batch norm sees it. Any base's spec
    (:meth:`scaling.bases.Base.smallest_side`); 1 where the base does not know it (a user's network)."""
    from .bases import base_of

    side = base_of(spec).smallest_side(spec)
    return 1 if side is None else side


def smallest_batch(spec) -> int:
    """The fewest images per forward pass that batch norm can train ``spec`` with: it needs
    more than one value per channel (batch x side x side > 1)."""
    side = smallest_feature_size(spec)
    return 1 if side * side > 1 else 2


# ---------------------------------------------------------------------------- named networks

# name: (width, depth, resolution, dropout), from the reference implementation.
NAMED: dict[str, tuple[float, float, int, float]] = {
    "efficientnet-b0": (1.0, 1.0, 224, 0.2),
    "efficientnet-b1": (1.0, 1.1, 240, 0.2),
    "efficientnet-b2": (1.1, 1.2, 260, 0.3),
    "efficientnet-b3": (1.2, 1.4, 300, 0.3),
    "efficientnet-b4": (1.4, 1.8, 380, 0.4),
    "efficientnet-b5": (1.6, 2.2, 456, 0.4),
    "efficientnet-b6": (1.8, 2.6, 528, 0.5),
    "efficientnet-b7": (2.0, 3.1, 600, 0.5),
    "efficientnet-b8": (2.2, 3.6, 672, 0.5),
    "efficientnet-l2": (4.3, 5.3, 800, 0.5),
}


def canonical_name(name: str) -> str:
    """Accept ``efficientnet-b0``, ``efficientnet_b0``, ``b0``, ``tf_efficientnet_b0``."""
    n = name.strip().lower().replace("_", "-")
    if n.startswith("tf-"):
        n = n[3:]
    if not n.startswith("efficientnet-"):
        n = "efficientnet-" + n
    if n not in NAMED:
        raise ValueError(f"unknown network {name!r}; known: {', '.join(NAMED)}")
    return n


def spec_for(name: str, **overrides) -> NetworkSpec:
    """The spec of a named network, with any field overridden."""
    n = canonical_name(name)
    width, depth, resolution, dropout = NAMED[n]
    fields = dict(width=width, depth=depth, resolution=resolution, dropout=dropout, name=n)
    fields.update(overrides)
    return NetworkSpec(**fields)


def custom_spec(width: float, depth: float, resolution: int, **overrides) -> NetworkSpec:
    """B0 scaled by any (width, depth) at any resolution."""
    name = overrides.pop("name", f"custom-w{width:g}-d{depth:g}-r{resolution}")
    return NetworkSpec(width=width, depth=depth, resolution=resolution, name=name, **overrides)
