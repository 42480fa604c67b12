"""Shared fixtures. Data fixtures are prefixed ``data_``."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaling.data import DataSet, load_data


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
