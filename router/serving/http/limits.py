"""The JSON nesting depth of a body, checked on the raw bytes before any parser runs: Python's
json module answers 30,000 nested '[' with a RecursionError (a 500 and a traceback), not a 400.
"""

from __future__ import annotations

import re
from itertools import accumulate

from router.errors import InvalidRequest

MAX_JSON_DEPTH = 64
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_KEEP = {ord(c) for c in "[]{}"}
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _KEEP)
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth(raw: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest (strings skipped; no parsing)."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(accumulate(_STEP[b] for b in brackets))


def check_depth(raw: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    # Fast path: fewer brackets than the limit cannot nest deeper than it.
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return
    if json_depth(raw) > limit:
        raise InvalidRequest(
            f"request body nests arrays/objects deeper than {limit} levels", code="too_deep"
        )
