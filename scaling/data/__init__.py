"""Data for proxy trainings: the embedded default set or an ImageFolder, cached, batched on the device.

    data = load_data(None, 64)                      # embedded default, 5,000 + 1,000 images
    data = load_data("~/data/cifar10.tar.gz", 32)   # ImageFolder folder or archive
    for x, y in Batches(data.train, 256, train=True, device="cuda", seed=0):
        ...                                         # x: (256, 3, 32, 32), cut on the GPU
    for x, y in Batches(data.at(128).train, ...):   # the same cache, batches at 128 px

Modules: :mod:`.synthetic` (the default set, documented there), :mod:`.folder`
(folders and archives), :mod:`.decode` (decoding and resizing, in parallel),
:mod:`.cache` (the on-disk cache, one entry per source, under the one root of :mod:`scaling.cache`), :mod:`.load`
(:func:`load_data`, the memory check), :mod:`.batches` (:class:`Batches`, which resizes on
the device).
"""

from .base import DataError, DataSet, Split
from .batches import IMAGENET_MEAN, IMAGENET_STD, Batches, channel_stats
from ..cache import cache_root
from .cache import NoSpace
from .load import load_data

__all__ = ["Batches", "DataError", "DataSet", "IMAGENET_MEAN", "IMAGENET_STD", "NoSpace", "Split", "cache_root",
           "channel_stats", "load_data"]
