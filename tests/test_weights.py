"""Tests of scaling.weights: peers' state dicts load onto our network with equal outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scaling.model import EfficientNet
from scaling.weights import load_pretrained

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")
efficientnet_pytorch = pytest.importorskip("efficientnet_pytorch")

TOL = 1e-4
# Neither side a multiple of 32: TF "same" pads asymmetrically where a stride-2 layer
# meets an even size (230, 58; 198, 50) and symmetrically where it meets an odd one.
# (225 x 193 would meet odd sizes only, where "same" equals symmetric padding.)
ODD = (230, 198)
RESOLUTION = {"b0": 224, "b2": 260}


def make_peer(source: str, size: str) -> nn.Module:
    """A randomly initialised peer network of ``source`` (never downloads)."""
    if source == "efficientnet_pytorch":
        return efficientnet_pytorch.EfficientNet.from_name(f"efficientnet-{size}")
    if source == "torchvision":
        return getattr(torchvision.models, f"efficientnet_{size}")(weights=None)
    prefix = "tf_" if source == "timm_tf" else ""
    return timm.create_model(f"{prefix}efficientnet_{size}", pretrained=False)


def randomise(net: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN statistic, affine parameter and bias a distinct random value.

    Affine parameters and biases are drawn first; running statistics are then those of
    a batch of random images (BN alone in training mode, so no stochastic depth), which
    differ per channel and keep activations of order one. Returns the net in eval mode.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    net.eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
        for m in bns:
            m.weight.copy_(torch.empty(m.num_features).uniform_(0.5, 1.5, generator=g))
            m.bias.copy_(0.2 * torch.randn(m.num_features, generator=g))
            m.momentum = 1.0
            m.train()
        net(torch.randn(2, 3, 224, 224, generator=g))
        for m in bns:
            m.num_batches_tracked.fill_(int(torch.randint(1, 10_000, (1,), generator=g)))
            m.eval()
    return net


def max_diff(ours: nn.Module, peer: nn.Module, size: tuple[int, int]) -> float:
    """Largest absolute output difference on one random batch of ``size`` images."""
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    ours.eval()
    peer.eval()
    with torch.no_grad():
        want = peer(x)
        got = ours(x)
    scale = want.abs().max().item()
    assert 0.1 < scale < 1000, f"peer output of size {scale} makes a poor comparison"
    return (got - want).abs().max().item()


def first_bn_eps(net: nn.Module) -> float:
    """The eps of the first batch norm of ``net``."""
    return next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d)).eps


@pytest.fixture(scope="module")
def b0_files(tmp_path_factory):
    """Randomised b0 peers of every source, saved once: {source: (peer, path)}."""
    root = tmp_path_factory.mktemp("b0")
    out = {}
    for i, source in enumerate(("efficientnet_pytorch", "torchvision", "timm", "timm_tf")):
        peer = randomise(make_peer(source, "b0"), seed=i)
        path = root / f"{source}_b0.pth"
        torch.save(peer.state_dict(), path)
        out[source] = (peer, path)
    return out


# ---------------------------------------------------------------------------- peers


@pytest.mark.parametrize("size", ["b0", "b2"])
@pytest.mark.parametrize("source", ["efficientnet_pytorch", "torchvision", "timm", "timm_tf"])
def test_peer_outputs_match(source, size, b0_files, tmp_path):
    if size == "b0":
        peer, path = b0_files[source]
    else:
        peer = randomise(make_peer(source, size), seed=7)
        # timm_tf is told apart by the name for b0, by the file name for b2.
        path = tmp_path / (f"tf_efficientnet_{size}.pth" if source == "timm_tf" else f"{size}.pth")
        torch.save(peer.state_dict(), path)
    name = f"tf_efficientnet_{size}" if source == "timm_tf" and size == "b0" else f"efficientnet-{size}"
    res = RESOLUTION[size]

    ours = EfficientNet.from_pretrained(name, path)
    expected_padding = "symmetric" if source in ("torchvision", "timm") else "same"
    assert ours.spec.padding == expected_padding
    assert ours.spec.bn_eps == pytest.approx(first_bn_eps(peer))

    diffs = {"native": max_diff(ours, peer, (res, res))}
    if source == "efficientnet_pytorch":
        # EfficientNet-PyTorch's from_name pads statically for its image size at any input.
        ours_static = EfficientNet.from_pretrained(name, path, static_padding=True)
        diffs["odd/static"] = max_diff(ours_static, peer, ODD)
    else:
        diffs["odd"] = max_diff(ours, peer, ODD)
    print(f"{source} {size}: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    assert max(diffs.values()) <= TOL, diffs


def test_comparison_detects_wrong_padding_and_eps(b0_files):
    peer, path = b0_files["timm_tf"]
    wrong_pad = EfficientNet.from_pretrained("tf_efficientnet_b0", path, padding="symmetric")
    assert max_diff(wrong_pad, peer, ODD) > 100 * TOL
    peer, path = b0_files["timm"]
    wrong_eps = EfficientNet.from_pretrained("efficientnet-b0", path, bn_eps=1e-3)
    assert max_diff(wrong_eps, peer, (224, 224)) > 100 * TOL


def test_explicit_source_and_wrapped_state_dict(b0_files, tmp_path):
    peer, path = b0_files["torchvision"]
    wrapped = tmp_path / "ckpt.pth"
    state = {f"module.{k}": v for k, v in peer.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state}, wrapped)
    ours = load_pretrained("efficientnet-b0", wrapped, source="torchvision")
    assert max_diff(ours, peer, (224, 224)) <= TOL


# ---------------------------------------------------------------------------- our own files


def test_scaling_round_trip(tmp_path):
    net = randomise(EfficientNet.from_scaling(0.5, 0.6, 128, padding="symmetric", num_classes=7))
    path = tmp_path / "ours.pt"
    net.save(path)
    back = EfficientNet.from_pretrained(None, path, num_classes=7)
    assert back.spec == net.spec
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(back.eval()(x), net(x))
    for key, value in net.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_scaling_name_must_agree(tmp_path):
    path = tmp_path / "b0.pt"
    EfficientNet.from_name("b0").save(path)
    assert EfficientNet.from_pretrained("efficientnet_b0", path).spec.name == "efficientnet-b0"
    with pytest.raises(ValueError, match="efficientnet-b2"):
        EfficientNet.from_pretrained("b2", path)


# ---------------------------------------------------------------------------- transfer


def test_num_classes_keeps_fresh_classifier(b0_files):
    peer, path = b0_files["timm"]
    torch.manual_seed(0)
    fresh = EfficientNet.from_name("b0", num_classes=10).classifier.state_dict()
    torch.manual_seed(0)
    ours = EfficientNet.from_pretrained("b0", path, num_classes=10)
    assert ours.classifier.out_features == 10
    for key, value in fresh.items():
        assert torch.equal(ours.classifier.state_dict()[key], value), key
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        diff = (ours.eval().extract_features(x) - peer.forward_features(x)).abs().max().item()
    assert diff <= TOL
    assert ours(x).shape == (1, 10)


def test_in_channels_keeps_fresh_stem_and_warns(b0_files):
    peer, path = b0_files["efficientnet_pytorch"]
    with pytest.warns(UserWarning, match="stem"):
        ours = EfficientNet.from_pretrained("b0", path, in_channels=1)
    assert ours.stem.conv.weight.shape[1] == 1
    assert torch.equal(ours.stem.bn.running_var, peer._bn0.running_var)
    assert torch.equal(ours.blocks[3].depthwise.conv.weight, peer._blocks[3]._depthwise_conv.weight)


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("source", ["efficientnet_pytorch", "timm"])
def test_wrong_network_names_a_key(source, tmp_path):
    b2 = make_peer(source, "b2")
    path = tmp_path / "b2.pth"
    torch.save(b2.state_dict(), path)
    with pytest.raises(ValueError) as info:
        EfficientNet.from_pretrained("efficientnet-b0", path)
    assert any(f"'{key}'" in str(info.value) for key in b2.state_dict()), str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        EfficientNet.from_pretrained("b0", tmp_path / "nowhere.pth")


def test_unknown_layout(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match="layout"):
        EfficientNet.from_pretrained("b0", path)
