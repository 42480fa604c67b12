"""Digests name cache entries and networks and identify data: their values must never change.

Every hex value below was computed with the code before :mod:`scaling.digest` existed (each
caller hashing for itself); the network names also appear in the committed
``studies/cifar10/results.csv``. A failure here means users' caches would be orphaned and
committed studies would look different: change the code, not the value.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import pytest

from scaling.spec import custom_spec, spec_for

ROOT = Path(__file__).resolve().parents[1]

# (parts, length) -> value of the data cache's key digest (sha256 of canonical JSON)
PARTS = [
    (("default", 1, 0, "train", 5000, ["a", "b"]), 20, "71a08235f67aeaaff6f4"),
    ((0, "train"), 15, "edfbe1e747da44f"),
    (({"b": 2, "a": [1.5, None, True]}, Path("/x/y"), "é"), 20, "9ee1fd8d3ceaf45c60cf"),
    ((), 20, "4f53cda18c2baa0c0354"),
]


@pytest.mark.parametrize("parts,length,value", PARTS)
def test_the_parts_digest_keeps_its_values(parts, length, value):
    from scaling.digest import digest

    assert digest(*parts, length=length) == value
    assert digest(*parts, length=length) == hashlib.sha256(
        __import__("json").dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()
    ).hexdigest()[:length]


def test_text_chunks_and_seed_keep_their_values():
    from scaling.digest import digest_chunks, digest_text, seed_of

    text = "train/cat/0.png\x0010\x00111\x00222\n"
    assert digest_text(text, 32) == digest_text(text.encode(), 32) == hashlib.sha256(text.encode()).hexdigest()[:32]
    assert digest_chunks(["ab", b"c", "dé"]) == digest_text("abcdé") == hashlib.sha256("abcdé".encode()).hexdigest()
    assert digest_text("x", 8, algorithm="sha1") == hashlib.sha1(b"x").hexdigest()[:8]
    assert digest_chunks([]) == hashlib.sha256().hexdigest()
    assert seed_of(0, 0, "augment") == 3877270518295315906
    assert seed_of(7, 3, "order") == 6670349941804259736


# ---------------------------------------------------------------------------- the callers' values


def test_network_names_keep_their_values():
    assert spec_for("b0").architecture_key() == "d1-2-2-3-3-4-1_w32-16-24-40-80-112-192-320-1280_r224_af22ccb1"
    assert custom_spec(0.25, 0.25, 32).architecture_key() == "d1-1-1-1-1-1-1_w8-8-8-16-24-32-48-80-320_r32_879a116a"
    assert custom_spec(1.3, 1.0, 64).architecture_key() == "d1-2-2-3-3-4-1_w40-24-32-56-104-144-248-416-1664_r64_428df806"
    # as in the committed study's table
    with open(ROOT / "studies" / "cifar10" / "results.csv") as f:
        names = {row["network"] for row in csv.DictReader(f)}
    for spec in (custom_spec(1.3, 1.0, 64, num_classes=10), custom_spec(1.1, 1.0, 72, num_classes=10)):
        assert spec.architecture_key() in names


def test_batch_seeds_keep_their_values():
    from scaling.data.batches import _seed

    assert _seed(0, 0, "augment") == 3877270518295315906
    assert _seed(7, 3, "order") == 6670349941804259736


def test_folder_and_archive_fingerprints_keep_their_values(tmp_path):
    from scaling.data.folder import FolderSource, TarSource

    f = FolderSource.__new__(FolderSource)  # a listing of fixed stats, as the walk would leave it
    f.train_folder, f.val_folder = "train", "val"
    f._stat = {"train/cat/0.png": (10, 111, 222), "train/dog/1.png": (20, 333, 444), "val/cat/2.png": (5, 1, 2)}
    f.dirs = {"train", "train/cat", "train/dog", "val", "val/cat"}
    assert f.fingerprint("train") == "98a4513102f71a389c5e0ee4513ef6e3"
    assert f.fingerprint("val") == "44cc611615b1c4fcb7b7dcc4f62a1613"

    tar = tmp_path / "x.tar"
    tar.write_bytes(b"\0" * 1024)
    st = os.stat(tar)
    text = f"{tar.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}"
    assert TarSource(tar).fingerprint("train") == hashlib.sha256(text.encode()).hexdigest()[:32]


def test_default_data_fingerprints_and_identity_keep_their_values(data_cache):
    from scaling.checkpoint import data_identity
    from scaling.data import load_data

    d = load_data(None, 16, train_size=20, val_size=10, quiet=True)
    assert (d.train.fingerprint, d.val.fingerprint) == ("e9b13d166418b467b84e", "0a22cc2a5261b184295b")
    assert sorted(p.name for p in (data_cache / "data").glob("*.json")) == [
        "default-train-cap32-e9b13d166418b467b84e.json", "default-val-cap32-0a22cc2a5261b184295b.json"]
    identity = data_identity(d)
    assert identity["train"] == {"images": 20, "labels": "2aaca1e2252f1fc4"}
    assert identity["val"] == {"images": 10, "labels": "23c379d6c0f22ef6"}
