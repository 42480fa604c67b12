"""scaling: compound-scaling studies of ConvNets, in the manner of EfficientNet."""

import time as _time

STARTED = _time.time()  # when this process imported the package: a worker's start is measured from here

from .model import EfficientNet
from .spec import BlockArgs, NetworkSpec, custom_spec, spec_for

__all__ = ["EfficientNet", "NetworkSpec", "BlockArgs", "spec_for", "custom_spec"]
__version__ = "0.1.0"
