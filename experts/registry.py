"""A lazy registry of backends by kind: heavy imports happen only for kinds a policy uses."""

from __future__ import annotations

from experts.base import Backend
from experts.spec import ExpertSpec


def build_backend(name: str, spec: ExpertSpec) -> Backend:
    if spec.backend == "fake":
        from experts.fake import FakeBackend

        return FakeBackend(
            name,
            reply=spec.reply,
            delay_ms=spec.delay_ms,
            fail=spec.fail,
            context_window=spec.context_window or 4096,
        )
    if spec.backend == "local":
        from experts.builtin import resolve
        from experts.local import LocalBackend

        return LocalBackend.from_spec(name, resolve(spec))
    if spec.backend == "remote":
        from experts.remote import RemoteBackend

        return RemoteBackend.from_spec(name, spec)
    raise ValueError(f"unknown backend kind '{spec.backend}'")
