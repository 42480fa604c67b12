"""scaling: compound-scaling studies of ConvNets, in the manner of EfficientNet."""

from .model import EfficientNet
from .spec import BlockArgs, NetworkSpec, custom_spec, spec_for

__all__ = ["EfficientNet", "NetworkSpec", "BlockArgs", "spec_for", "custom_spec"]
__version__ = "0.1.0"
