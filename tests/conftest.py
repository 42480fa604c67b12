"""Shared fixtures. Data fixtures are prefixed ``data_``."""

from __future__ import annotations

import gc
import os
from pathlib import Path

# One thread of torch for this process and the commands the tests start (which inherit it), set before
# torch is imported: the suite runs on 2 shared cores, where the test process, the workers it starts
# and other jobs train at once, and a second thread that waits for a core at every operation makes
# a tiny network's step several times slower, not faster. OMP_NUM_THREADS set outside is kept.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

from scaling.data import DataSet, load_data  # noqa: E402


def pytest_collection_finish(session):
    """Every test module is imported by now (torch, optuna, matplotlib, ...): move the half a million
    objects of the imports into the permanent generation, so that the full collections the searches
    run after each trial (Optuna's ``gc_after_trial``) scan what the tests make, not the imports too.
    Nothing tested changes: objects made from here on are collected as before."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="module", autouse=True)
def _gc_frozen_at_each_module():
    """The same at the start of each test module, for what earlier modules imported on the way
    (onnx, timm, the report's PDF fonts, ...) and the session's fixtures: first collected, so that
    nothing an earlier module left unreachable stays, then frozen, so that each trial's full
    collection scans only what this module makes. Objects made from here on are collected as before."""
    gc.collect()
    gc.freeze()
    yield


@pytest.fixture
def data_cache(tmp_path, monkeypatch) -> Path:
    """A fresh cache folder, also set as ``$SCALING_CACHE`` so nothing lands in the home folder."""
    path = tmp_path / "cache"
    monkeypatch.setenv("SCALING_CACHE", str(path))
    return path


@pytest.fixture(scope="session")
def data_tiny_default() -> DataSet:
    """The default data set at 16 px, 200 training and 50 validation images, in memory."""
    return load_data(None, 16, cache_dir=False, train_size=200, val_size=50, quiet=True)
