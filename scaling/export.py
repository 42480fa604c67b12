"""ONNX export of a network, with static "same" padding so the graph holds constants."""

from __future__ import annotations

from pathlib import Path

import torch

from .model import EfficientNet


def check_onnx() -> None:
    """Raise ImportError, saying how to install them, where onnx or onnxscript is missing."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError(f"ONNX export needs the export extra: pip install 'scaling[export]' "
                          f"(onnx and onnxscript; {e})") from e


def export_onnx(model: torch.nn.Module, path: str | Path, resolution: int | None = None, spec=None) -> Path:
    """Write ``model`` (eval mode) to an ONNX file with a dynamic batch axis.

    ``spec``: the network's spec (any base's, :mod:`scaling.bases`; default ``model.spec``).
    An EfficientNet's "same" padding is rebuilt as static padding for ``resolution`` (the
    spec's by default): the exported graph then takes images of exactly that size.

    Raises:
        ImportError: where onnx or onnxscript is missing (``pip install 'scaling[export]'``).
    """
    check_onnx()
    spec = spec if spec is not None else model.spec
    resolution = resolution or spec.resolution
    if getattr(spec, "padding", None) == "same" and (not spec.static_padding or resolution != spec.resolution):
        static = EfficientNet(spec.replace(static_padding=True, resolution=resolution))
        static.load_state_dict(model.state_dict())
        model = static
    model = model.eval()
    path = Path(path)
    x = torch.zeros(2, spec.in_channels, resolution, resolution)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        model, (x,), input_names=["images"], output_names=["logits"],
        dynamic_shapes={"x": {0: batch}}, dynamo=True, verbose=False,
    )
    program.save(str(path))
    return path
