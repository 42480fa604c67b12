"""EfficientNet built from a :class:`~scaling.spec.NetworkSpec`.

Stem (3x3 stride 2) -> MBConv stages -> 1x1 head -> pool -> dropout -> classifier.
MBConv: 1x1 expansion (skipped at ratio 1), depthwise k x k, squeeze-excitation,
1x1 projection, identity skip with stochastic depth where shapes allow. SiLU throughout.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .spec import NetworkSpec, custom_spec, spec_for

# ---------------------------------------------------------------------------- padding


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow "same": output ceil(size / stride), the extra pixel at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def same_pads(h: int, w: int, kernel: tuple[int, int], stride: tuple[int, int],
              dilation: tuple[int, int] = (1, 1)) -> tuple[int, int, int, int]:
    """TensorFlow "same" padding of an h x w input as (left, right, top, bottom)."""
    top, bottom = same_padding(h, kernel[0], stride[0], dilation[0])
    left, right = same_padding(w, kernel[1], stride[1], dilation[1])
    return left, right, top, bottom


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding.

    With ``image_size`` the padding is computed once for that input size (static, so
    that exported graphs hold constants); without it, from each input's shape.
    """

    def __init__(self, *args, image_size: tuple[int, int] | None = None, **kwargs):
        super().__init__(*args, padding=0, **kwargs)
        self.static_pad: tuple[int, int, int, int] | None = None
        if image_size is not None:
            self.static_pad = self._pad_for(*image_size)

    def _pad_for(self, h: int, w: int) -> tuple[int, int, int, int]:
        return same_pads(h, w, self.kernel_size, self.stride, self.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right, top, bottom = self.static_pad if self.static_pad is not None else self._pad_for(*x.shape[-2:])
        if left == right and top == bottom:  # symmetric: the convolution pads, no extra kernel
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def make_conv(c_in, c_out, kernel, stride, groups, spec: NetworkSpec, size, bias=False) -> nn.Conv2d:
    if spec.padding == "symmetric":
        return nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, groups=groups, bias=bias)
    image_size = size if spec.static_padding else None
    return SameConv2d(c_in, c_out, kernel, stride, groups=groups, bias=bias, image_size=image_size)


def _down(size: tuple[int, int], stride: int) -> tuple[int, int]:
    return -(-size[0] // stride), -(-size[1] // stride)


# ---------------------------------------------------------------------------- layers


class ConvBNAct(nn.Module):
    """Convolution, batch norm and (optionally) SiLU."""

    def __init__(self, c_in, c_out, kernel, stride, spec, size, groups=1, act=True):
        super().__init__()
        self.conv = make_conv(c_in, c_out, kernel, stride, groups, spec, size)
        self.bn = nn.BatchNorm2d(c_out, eps=spec.bn_eps, momentum=spec.bn_momentum)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Channel gating: global pool, 1x1 reduce, SiLU, 1x1 expand, sigmoid."""

    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.act = nn.SiLU()
        self.expand = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


def residual_add(x: torch.Tensor, h: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """x + h, where stochastic depth drops whole samples of h in training and rescales the rest.

    The mask and the add are one fused ``addcmul``: x + h * mask / (1 - rate).
    """
    if not training or rate == 0.0:
        return x + h
    keep = 1.0 - rate
    mask = torch.empty((h.shape[0],) + (1,) * (h.ndim - 1), dtype=h.dtype, device=h.device).bernoulli_(keep)
    return torch.addcmul(x, h, mask, value=1.0 / keep)


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-excitation."""

    def __init__(self, w_in, w_out, kernel, stride, expand, se, skip, drop_rate, spec, size):
        super().__init__()
        w_mid = w_in * expand
        self.expand = ConvBNAct(w_in, w_mid, 1, 1, spec, size) if expand != 1 else None
        self.depthwise = ConvBNAct(w_mid, w_mid, kernel, stride, spec, size, groups=w_mid)
        self.se = SqueezeExcite(w_mid, max(1, int(w_in * se))) if se else None
        self.project = ConvBNAct(w_mid, w_out, 1, 1, spec, _down(size, stride), act=False)
        self.has_skip = skip and stride == 1 and w_in == w_out
        self.drop_rate = drop_rate
        self.stride = stride

    def forward(self, x):
        h = x if self.expand is None else self.expand(x)
        h = self.depthwise(h)
        if self.se is not None:
            h = self.se(h)
        h = self.project(h)
        if self.has_skip:
            h = residual_add(x, h, self.drop_rate, self.training)
        return h


# ---------------------------------------------------------------------------- network

# Aliases EfficientNet-PyTorch users know, accepted by from_name / from_pretrained.
_OVERRIDE_ALIASES = {
    "image_size": "resolution",
    "dropout_rate": "dropout",
    "drop_connect_rate": "drop_connect",
    "batch_norm_epsilon": "bn_eps",
    "width_coefficient": "width",
    "depth_coefficient": "depth",
}


def _overrides(kwargs: dict) -> dict:
    out = {}
    for k, v in kwargs.items():
        k = _OVERRIDE_ALIASES.get(k, k)
        if k == "batch_norm_momentum":  # TensorFlow decay -> PyTorch momentum
            k, v = "bn_momentum", 1.0 - v
        out[k] = v
    return out


class EfficientNet(nn.Module):
    """An EfficientNet built from a spec.

    Example:
        >>> net = EfficientNet.from_name("efficientnet-b0", num_classes=10)
        >>> net(torch.randn(2, 3, 224, 224)).shape
        torch.Size([2, 10])

    ``pool``, ``dropout`` and ``classifier`` are plain attributes that can be replaced.
    """

    def __init__(self, spec: NetworkSpec):
        super().__init__()
        self.spec = spec
        size = (spec.resolution, spec.resolution)
        self.stem = ConvBNAct(spec.in_channels, spec.stem_width, 3, 2, spec, size)
        size = _down(size, 2)
        stages = spec.stages()
        total = sum(s.repeats for s in stages)
        blocks = []
        for stage in stages:
            for j in range(stage.repeats):
                stride = stage.stride if j == 0 else 1
                w_in = stage.w_in if j == 0 else stage.w_out
                rate = spec.drop_connect * len(blocks) / total
                blocks.append(
                    MBConv(w_in, stage.w_out, stage.kernel, stride, stage.expand, stage.se,
                           stage.skip, rate, spec, size)
                )
                size = _down(size, stride)
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBNAct(stages[-1].w_out, spec.head_width, 1, 1, spec, size)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(spec.dropout)
        self.classifier = nn.Linear(spec.head_width, spec.num_classes)
        self.reset_parameters()

    # -- construction

    @classmethod
    def from_name(cls, name: str, num_classes: int = 1000, in_channels: int = 3, **overrides) -> "EfficientNet":
        """A named network (``efficientnet-b0`` .. ``b8``, ``efficientnet-l2``), randomly initialised.

        Overrides are spec fields (``padding="symmetric"``, ``dropout=0.1``, ...) or the
        EfficientNet-PyTorch names (``image_size``, ``dropout_rate``, ...).
        """
        return cls(spec_for(name, num_classes=num_classes, in_channels=in_channels, **_overrides(overrides)))

    @classmethod
    def from_scaling(cls, width: float, depth: float, resolution: int, **overrides) -> "EfficientNet":
        """B0 scaled by any (width, depth) at any resolution."""
        return cls(custom_spec(width, depth, resolution, **_overrides(overrides)))

    @classmethod
    def from_pretrained(cls, name: str, weights_path, num_classes: int = 1000, in_channels: int = 3,
                        source: str = "auto", **overrides) -> "EfficientNet":
        """A named network with weights from a local file; see :func:`scaling.weights.load_pretrained`."""
        from .weights import load_pretrained

        return load_pretrained(name, weights_path, num_classes=num_classes, in_channels=in_channels,
                               source=source, **_overrides(overrides))

    def reset_parameters(self) -> None:
        """He-normal (fan-out) convolutions as in the reference; the classifier uniform in
        +-1/sqrt(in_features) (PyTorch's default), which keeps initial logits small for any
        number of classes (the reference's 1/sqrt(classes) gives large ones at 10)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def save(self, path) -> None:
        """Write a weights file (atomically) that :meth:`from_pretrained` reads back with its spec."""
        from .checkpoint import save_weights

        save_weights(path, self.spec, self.state_dict())

    # -- forward

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """The head's output (before pooling), stride 32."""
        return self.head(self.blocks(self.stem(x)))

    def extract_endpoints(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Feature maps at each reduction: ``reduction_1`` (stride 2) .. ``reduction_5`` (stride 32).

        Each is the last feature map at its stride; the deepest is the head's output.
        """
        endpoints: dict[str, torch.Tensor] = {}
        x = self.stem(x)
        blocks = list(self.blocks)
        for i, block in enumerate(blocks):
            x = block(x)
            if i + 1 < len(blocks) and blocks[i + 1].stride > 1:
                endpoints[f"reduction_{len(endpoints) + 1}"] = x
        endpoints[f"reduction_{len(endpoints) + 1}"] = self.head(x)
        return endpoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.extract_features(x)).flatten(1)
        return self.classifier(self.dropout(x))

    # -- structure

    def stage_slices(self) -> list[slice]:
        """Which of ``self.blocks`` belong to each stage."""
        out, start = [], 0
        for s in self.spec.stages():
            out.append(slice(start, start + s.repeats))
            start += s.repeats
        return out
