"""Run settings and load profiles (pure: parsing and arithmetic only)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

# Hard caps: whatever the flags say, a run ends within these.
HARD_MAX_REQUESTS = 1_000_000
HARD_MAX_DURATION_S = 6 * 3600.0


class ConfigError(ValueError):
    """A flag or profile that cannot describe a bounded, allowed run."""


@dataclass(frozen=True)
class Segment:
    """Rate goes linearly from `start_rps` to `end_rps` over `duration_s` (equal for a step)."""

    start_rps: float
    end_rps: float
    duration_s: float


@dataclass(frozen=True)
class Profile:
    segments: tuple[Segment, ...]

    @property
    def duration_s(self) -> float:
        return sum(s.duration_s for s in self.segments)

    @property
    def peak_rps(self) -> float:
        return max(max(s.start_rps, s.end_rps) for s in self.segments)

    def rate_at(self, t: float) -> float:
        """Offered rate at `t` seconds; 0 after the profile ends."""
        for seg in self.segments:
            if t < seg.duration_s:
                return seg.start_rps + (seg.end_rps - seg.start_rps) * t / seg.duration_s
            t -= seg.duration_s
        return 0.0

    def expected_requests(self) -> float:
        return sum((s.start_rps + s.end_rps) / 2 * s.duration_s for s in self.segments)


def constant_profile(rps: float, duration_s: float) -> Profile:
    return Profile((Segment(rps, rps, duration_s),))


def _positive(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{what}: not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{what} must be a finite number >= 0, got {text!r}")
    return value


def parse_profile(spec: str) -> Profile:
    """`step:RPS@S,RPS@S,...` (hold each rate) or `ramp:A-B@S,...` (linear from A to B)."""
    kind, sep, body = spec.partition(":")
    if not sep or kind not in ("step", "ramp") or not body.strip():
        raise ConfigError(f"profile must be 'step:RPS@S,...' or 'ramp:A-B@S,...', got {spec!r}")
    segments = []
    for part in body.split(","):
        rates, at, secs = part.strip().partition("@")
        if not at:
            raise ConfigError(f"profile segment {part!r} lacks '@SECONDS'")
        duration = _positive(secs, "segment duration")
        if duration == 0:
            raise ConfigError(f"profile segment {part!r} has zero duration")
        if kind == "step":
            rps = _positive(rates, "rate")
            segments.append(Segment(rps, rps, duration))
        else:
            a, dash, b = rates.partition("-")
            if not dash:
                raise ConfigError(f"ramp segment {part!r} must read 'FROM-TO@SECONDS'")
            segments.append(Segment(_positive(a, "rate"), _positive(b, "rate"), duration))
    profile = Profile(tuple(segments))
    if profile.peak_rps <= 0:
        raise ConfigError("profile never offers any load (all rates are 0)")
    return profile


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(url: str) -> str:
    """Normalise a base URL (no trailing slash, no /v1 suffix); http(s) only, no credentials."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"URL must be http(s)://host[:port], got {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(f"URL must not carry credentials, query or fragment: {url!r}")
    base = url.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def check_side_url(url: str, target: str) -> str:
    """Side channels (Serve status) may only reach loopback or the target's own host."""
    side = check_base_url(url)
    host = urlsplit(side).hostname or ""
    if not (is_loopback_host(host) or host == urlsplit(target).hostname):
        raise ConfigError(f"{url!r} is neither loopback nor the target host: refusing to poll it")
    return side


@dataclass(frozen=True)
class LoadConfig:
    """One run, validated. Exactly one of `profile` (open loop) or `concurrency` (closed loop)."""

    url: str
    mode: Literal["open", "closed"]
    duration_s: float
    max_requests: int
    profile: Profile | None = None
    concurrency: int = 0
    stream: bool = False
    model: str = "auto"
    max_tokens: int | None = 64
    api_key: str | None = None
    timeout_s: float = 60.0
    seed: int = 0
    serve_status_url: str | None = None
    spend: bool = True
    poll_interval_s: float = 1.0
    # Open loop: arrivals while this many are in flight are shed as `client_overload` errors
    # (also the connection pool's size: httpx's pool slows quadratically with its queue).
    max_in_flight: int = 512
    # Open loop: stop early when the generator falls this far behind its schedule.
    max_lag_s: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.duration_s <= HARD_MAX_DURATION_S:
            raise ConfigError(f"duration must be in (0, {HARD_MAX_DURATION_S:.0f}] seconds")
        if not 0 < self.max_requests <= HARD_MAX_REQUESTS:
            raise ConfigError(f"max-requests must be in [1, {HARD_MAX_REQUESTS}]")
        if self.mode == "open" and self.profile is None:
            raise ConfigError("open loop needs a rate or a profile")
        if self.mode == "closed" and not 1 <= self.concurrency <= 10_000:
            raise ConfigError("closed loop needs 1 <= concurrency <= 10000")
        if self.max_in_flight < 1:
            raise ConfigError("max-in-flight must be at least 1")
        if self.timeout_s <= 0:
            raise ConfigError("timeout must be positive")
