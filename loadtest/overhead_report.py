"""The overhead benchmark's figures: medians over turns, what each gateway adds over a direct
call, the two gateways against each other, and the printed table (pure functions)."""

from __future__ import annotations

from typing import Any

from loadtest.stats import percentile

TARGETS = ("direct", "slm_router", "litellm_proxy")
# Figures compared as "added over direct" (gateway minus direct, same run).
ADDED = (
    "p50_ms",
    "p99_ms",
    "loaded_p50_ms",
    "loaded_p99_ms",
    "repeated_p50_ms",
    "stream_ttft_p50_ms",
    "stream_ttft_p99_ms",
)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def _median(values: list[Any]) -> float | None:
    nums = [v for v in values if v is not None]
    return _round(percentile(nums, 50)) if nums else None


def aggregate(url: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Headline numbers are medians over the repeats; every repeat is kept under `runs`."""
    loaded = [r["loaded"] for r in runs]
    return {
        "available": True,
        "url": url,
        "p50_ms": _median([r["p50_ms"] for r in runs]),
        "p99_ms": _median([r["p99_ms"] for r in runs]),
        "max_rps": _median([r["max_rps"] for r in runs]),
        "loaded_p50_ms": _median([r["p50_ms"] for r in loaded]),
        "loaded_p99_ms": _median([r["p99_ms"] for r in loaded]),
        "loaded_rps": _median([r["rps"] for r in loaded]),
        # The same prompts over and over (caches hit): reported apart, never the headline.
        "repeated_p50_ms": _median([r.get("repeated", {}).get("p50_ms") for r in runs]),
        "repeated_p99_ms": _median([r.get("repeated", {}).get("p99_ms") for r in runs]),
        "stream_ttft_p50_ms": _median([r.get("stream", {}).get("ttft_p50_ms") for r in runs]),
        "stream_ttft_p99_ms": _median([r.get("stream", {}).get("ttft_p99_ms") for r in runs]),
        "runs": runs,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b in (None, 0) else round(a / b, 3)  # type: ignore[operator]


def _paired(runs: list[dict[str, Any]] | None, base: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Median over turns of (gateway - direct) within the same turn: the machine's background
    load drifts between turns, and pairing cancels what both saw alike."""
    if not runs or not base or len(runs) != len(base):
        return {}
    out: dict[str, Any] = {}
    for k in ("p50_ms", "p99_ms"):
        diffs = [
            g[k] - d[k]
            for g, d in zip(runs, base, strict=True)
            if g.get(k) is not None and d.get(k) is not None
        ]
        out[f"{k}_paired"] = _median(diffs)
    return out


def compare(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Added latency over direct, and slm_router against direct and litellm_proxy (pure)."""
    direct = results.get("direct") or {}
    added: dict[str, dict[str, float | None]] = {}
    for name in ("slm_router", "litellm_proxy"):
        r = results.get(name) or {}
        if r.get("available") and direct.get("available"):
            added[name] = {
                k: _round(r[k] - direct[k])
                if r.get(k) is not None and direct.get(k) is not None
                else None
                for k in ADDED
                if k in r or k in direct
            }
            added[name].update(_paired(r.get("runs"), direct.get("runs")))
    slm, lite = results.get("slm_router") or {}, results.get("litellm_proxy") or {}
    ratios: dict[str, float | None] = {}
    for name, r in (("slm_router", slm), ("litellm_proxy", lite)):
        if r.get("available"):
            ratios[f"{name}_vs_direct_p50"] = _ratio(r.get("p50_ms"), direct.get("p50_ms"))
            ratios[f"{name}_vs_direct_rps"] = _ratio(r.get("max_rps"), direct.get("max_rps"))
    verdict = None
    if "slm_router" in added and "litellm_proxy" in added:
        a_slm, a_lite = added["slm_router"]["p50_ms"], added["litellm_proxy"]["p50_ms"]
        ratios["slm_vs_litellm_added_p50"] = _ratio(a_slm, a_lite)
        ratios["slm_vs_litellm_added_p99"] = _ratio(
            added["slm_router"]["p99_ms"], added["litellm_proxy"]["p99_ms"]
        )
        ratios["slm_vs_litellm_rps"] = _ratio(slm.get("max_rps"), lite.get("max_rps"))
        verdict = (
            a_slm is not None
            and a_lite is not None
            and a_slm <= a_lite
            and (slm.get("max_rps") or 0) >= (lite.get("max_rps") or 0)
        )
    return {
        "added": added,
        "ratios": ratios,
        "slm_router_no_worse_than_litellm": verdict,
        "targets": issue_targets(added, slm, lite),
    }


def issue_targets(
    added: dict[str, dict[str, float | None]], slm: dict[str, Any], lite: dict[str, Any]
) -> dict[str, bool | None]:
    """The routing hop's targets against LiteLLM proxy in the same run (None: not measured):
    added p50 <= half of LiteLLM's, added p99 <= LiteLLM's, max RPS >= 2x, stream TTFT added <=."""
    a, b = added.get("slm_router") or {}, added.get("litellm_proxy") or {}

    def at_most(x: float | None, y: float | None, factor: float = 1.0) -> bool | None:
        return None if x is None or y is None else x <= factor * y

    rps_a, rps_b = slm.get("max_rps"), lite.get("max_rps")
    return {
        "added_p50_at_most_half_litellm": at_most(a.get("p50_ms"), b.get("p50_ms"), 0.5),
        "added_p99_at_most_litellm": at_most(a.get("p99_ms"), b.get("p99_ms")),
        "max_rps_at_least_2x_litellm": None
        if rps_a is None or rps_b is None
        else rps_a >= 2 * rps_b,
        "stream_ttft_added_at_most_litellm": at_most(
            a.get("stream_ttft_p50_ms"), b.get("stream_ttft_p50_ms")
        ),
    }


def render_table(results: dict[str, dict[str, Any]], comparison: dict[str, Any]) -> str:
    cols = ("p50 ms", "p99 ms", "+p50 ms", "+p99 ms", "p50 @C", "max RPS", "+TTFT50", "rep p50")
    lines = [f"{'target':<15}" + "".join(f"{c:>10}" for c in cols)]
    for name in TARGETS:
        r = results.get(name) or {}
        if not r.get("available"):
            lines.append(f"{name:<15}  unavailable: {str(r.get('reason', '?'))[:200]}")
            continue
        add = comparison["added"].get(name, {})
        cells = (
            r["p50_ms"],
            r["p99_ms"],
            add.get("p50_ms"),
            add.get("p99_ms"),
            r["loaded_p50_ms"],
            r["max_rps"],
            add.get("stream_ttft_p50_ms"),
            r.get("repeated_p50_ms"),
        )
        lines.append(f"{name:<15}" + "".join(f"{'-' if c is None else c:>10}" for c in cells))
    lines.append(
        "(unique prompts; @C: at the loaded concurrency; +: added over direct; TTFT50: stream"
        " time to first token p50; rep: one repeated prompt set, caches hit)"
    )
    return "\n".join(lines)
