"""Shared fixtures. Data fixtures are prefixed ``data_``."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from scaling.data import DataSet, load_data


def pytest_collection_finish(session):
    """Every test module is imported by now (torch, optuna, matplotlib, ...): move the half a million
    objects of the imports into the permanent generation, so that the full collections the searches
    run after each trial (Optuna's ``gc_after_trial``) scan what the tests make, not the imports too.
    Nothing tested changes: objects made from here on are collected as before."""
    gc.collect()
    gc.freeze()


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
