"""The model: forward, endpoints, padding, dropout and stochastic depth."""

import pytest
import torch
from torch import nn

from scaling import EfficientNet
from scaling.model import SameConv2d, same_padding


@pytest.fixture(scope="module")
def b0():
    torch.manual_seed(0)
    return EfficientNet.from_name("efficientnet-b0", num_classes=10).eval()


@pytest.mark.parametrize("size", [(224, 224), (256, 256), (512, 512), (200, 328), (33, 47), (32, 32)])
def test_endpoints_strides(b0, size):
    h, w = size
    with torch.no_grad():
        ends = b0.extract_endpoints(torch.randn(1, 3, h, w))
    assert list(ends) == [f"reduction_{i}" for i in range(1, 6)]
    channels = [16, 24, 40, 112, 1280]
    for i, (key, stride) in enumerate(zip(ends, (2, 4, 8, 16, 32))):
        assert ends[key].shape == (1, channels[i], -(-h // stride), -(-w // stride)), key


def test_features_and_head(b0):
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        feats = b0.extract_features(x)
        out = b0(x)
        manual = b0.classifier(b0.dropout(b0.pool(feats).flatten(1)))
        ends = b0.extract_endpoints(x)
    assert feats.shape == (2, 1280, 7, 7)
    assert torch.equal(ends["reduction_5"], feats)
    assert out.shape == (2, 10)
    assert torch.allclose(out, manual)


def test_replaceable_head(b0):
    net = EfficientNet.from_name("efficientnet-b0", num_classes=10).eval()
    net.classifier = nn.Identity()
    net.pool = nn.AdaptiveMaxPool2d(1)
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64)).shape == (1, 1280)


def test_dropout_train_and_eval():
    torch.manual_seed(0)
    net = EfficientNet.from_name("efficientnet-b0", num_classes=10, dropout=0.5)
    x = torch.randn(4, 3, 64, 64)
    net.eval()
    with torch.no_grad():
        a, b = net(x), net(x)
    assert torch.equal(a, b)
    net.train()
    with torch.no_grad():
        c, d = net(x), net(x)
    assert not torch.equal(c, d)
    assert isinstance(net.dropout, nn.Dropout) and net.dropout.p == 0.5


def test_stochastic_depth_linear_in_block_index():
    net = EfficientNet.from_name("efficientnet-b0", drop_connect=0.2)
    rates = [blk.drop_rate for blk in net.blocks]
    assert len(rates) == 16
    assert rates == pytest.approx([0.2 * i / 16 for i in range(16)])


def test_batch_norm_reference_settings():
    net = EfficientNet.from_name("efficientnet-b0")
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.01 for m in bns)
    tv = EfficientNet.from_name("efficientnet-b0", batch_norm_momentum=0.9, batch_norm_epsilon=1e-5)
    assert all(m.eps == 1e-5 and m.momentum == pytest.approx(0.1) for m in tv.modules() if isinstance(m, nn.BatchNorm2d))


def test_mbconv_structure():
    net = EfficientNet.from_name("efficientnet-b0")
    first, second = net.blocks[0], net.blocks[1]
    assert first.expand is None  # ratio 1: no expansion conv
    assert second.expand is not None and second.expand.conv.out_channels == 16 * 6
    assert not first.has_skip and not second.has_skip  # 32 -> 16; stride 2
    assert net.blocks[2].has_skip  # 24 -> 24, stride 1
    assert first.se.reduce.out_channels == 8  # 32 * 0.25
    assert isinstance(first.depthwise.act, nn.SiLU)


def test_same_padding_rule():
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(225, 3, 2) == (1, 1)
    assert same_padding(224, 5, 1) == (2, 2)
    assert same_padding(7, 5, 2) == (2, 2)


@pytest.mark.parametrize("size", [224, 225])
def test_static_same_padding_equals_dynamic(size):
    torch.manual_seed(0)
    dyn = EfficientNet.from_name("efficientnet-b0", resolution=size).eval()
    static = EfficientNet.from_name("efficientnet-b0", resolution=size, static_padding=True).eval()
    static.load_state_dict(dyn.state_dict())
    assert all(m.static_pad is not None for m in static.modules() if isinstance(m, SameConv2d))
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(dyn(x), static(x), atol=1e-6)


def test_symmetric_and_same_padding_differ_only_where_strided():
    torch.manual_seed(0)
    same = EfficientNet.from_name("efficientnet-b0").eval()
    sym = EfficientNet.from_name("efficientnet-b0", padding="symmetric").eval()
    sym.load_state_dict(same.state_dict())  # identical parameter layout
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert same(x).shape == sym(x).shape
        assert not torch.allclose(same(x), sym(x))


def test_custom_scaling_and_backward():
    net = EfficientNet.from_scaling(1.15, 1.3, 64, num_classes=5)
    assert net.spec.resolution == 64 and net.spec.num_classes == 5
    out = net(torch.randn(2, 3, 64, 64))
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
