"""Stable buckets in [0, 1) for splits and shadow sampling.

Python's hash() is salted per process, so replicas would disagree and a user would flip arms on
every restart; a keyed blake2b digest is the same everywhere and always.
"""

from __future__ import annotations

import hashlib


def bucket(*parts: str) -> float:
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
