"""Open-loop arrival times: a (possibly time-varying) Poisson process, pure and seedable."""

from __future__ import annotations

import random

from loadtest.config import Profile


def poisson_arrivals(profile: Profile, rng: random.Random, max_n: int) -> list[float]:
    """Arrival offsets in seconds, by thinning a homogeneous process at the profile's peak rate.

    Thinning keeps the process exactly Poisson while the rate steps or ramps, which a
    per-gap exponential at the current rate would not do across segment boundaries.
    """
    peak = profile.peak_rps
    end = profile.duration_s
    out: list[float] = []
    t = 0.0
    while len(out) < max_n:
        t += rng.expovariate(peak)
        if t >= end:
            break
        if rng.random() * peak < profile.rate_at(t):
            out.append(t)
    return out
