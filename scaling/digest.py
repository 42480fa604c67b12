"""The one digest helper: short stable hex hashes that name things on disk and in records.

Digests name cache entries (the data cache's ``KEY``), identify data (a split's fingerprint,
the labels' hash of a data identity) and networks (the tail of
:meth:`~scaling.spec.NetworkSpec.architecture_key`, seen in committed studies' tables). A
changed value would orphan users' caches and make committed studies look different, so the
values are fixed: the same algorithm over the same bytes, cut to the same length
(``tests/test_digest.py`` holds exact values).

* :func:`digest` (parts): sha256 of the parts' canonical JSON (sorted keys, no spaces,
  ``str`` of what JSON cannot hold), the cache keys;
* :func:`digest_text` (one string or bytes) and :func:`digest_chunks` (a stream of them,
  hashed as if joined): for fingerprints of a file listing, an archive's stat, labels;
* :func:`seed_of` (parts): a 63-bit seed from the sha256 of the parts joined by ``/``.

``algorithm`` is any :func:`hashlib.new` name; sha256 unless a value was born otherwise
(the architecture key's sha1, kept so that existing names stay).
"""

from __future__ import annotations

import hashlib
import json
from typing import Iterable

ALGORITHM = "sha256"


def canonical(parts) -> str:
    """The text :func:`digest` hashes: JSON, keys sorted, no spaces, ``str`` of anything else."""
    return json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)


def _bytes(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


def digest_chunks(chunks: Iterable[str | bytes], length: int | None = None, *, algorithm: str = ALGORITHM) -> str:
    """Hex hash of the chunks as if joined (strings as UTF-8), cut to ``length`` characters."""
    h = hashlib.new(algorithm)
    for chunk in chunks:
        h.update(_bytes(chunk))
    return h.hexdigest()[:length]


def digest_text(data: str | bytes, length: int | None = None, *, algorithm: str = ALGORITHM) -> str:
    """Hex hash of one string (as UTF-8) or bytes, cut to ``length`` characters."""
    return digest_chunks((data,), length, algorithm=algorithm)


def digest(*parts, length: int = 20) -> str:
    """A short stable hex hash of JSON-serialisable parts (sha256 of :func:`canonical`)."""
    return digest_text(canonical(parts), length)


def seed_of(*parts) -> int:
    """A seed in [0, 2**63) from the parts: the first 8 bytes (little-endian) of the sha256
    of their ``str`` joined by ``/``, shifted right by one."""
    raw = hashlib.new(ALGORITHM, "/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(raw[:8], "little") >> 1
