"""Fixtures shared by the remote experts' tests (a loopback OpenAI-compatible server and a
builder for both remote clients); defined in tests/unit/openai_upstream.py."""

from tests.unit.openai_upstream import client, make, upstream

__all__ = ["client", "make", "upstream"]
