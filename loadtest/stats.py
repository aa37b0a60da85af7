"""Pure aggregation of request records into the report's numbers (no I/O, no clocks)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from loadtest.records import ReplicaSample, RequestRecord, SpendSnapshot


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default), None when empty."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {q}")
    xs = sorted(values)
    h = (len(xs) - 1) * q / 100
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def latency_summary(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99/max/mean in milliseconds."""
    mean = sum(seconds) / len(seconds) if seconds else None
    return {
        "p50_ms": _ms(percentile(seconds, 50)),
        "p90_ms": _ms(percentile(seconds, 90)),
        "p99_ms": _ms(percentile(seconds, 99)),
        "max_ms": _ms(max(seconds) if seconds else None),
        "mean_ms": _ms(mean),
    }


def error_counts(records: Iterable[RequestRecord]) -> dict[str, int]:
    counts = Counter(r.error for r in records if r.error is not None)
    return dict(sorted(counts.items()))


def routing_mix(records: Iterable[RequestRecord], attr: str) -> dict[str, int]:
    """Successful requests per `expert` or `domain` header value ('-' when absent)."""
    counts = Counter((getattr(r, attr) or "-") for r in records if r.ok)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def confusion(records: Iterable[RequestRecord]) -> dict[str, dict[str, int]]:
    """Workload domain label -> routed domain counts, to eyeball the classifier under load."""
    table: dict[str, Counter[str]] = {}
    for r in records:
        if r.ok and r.workload_domain:
            table.setdefault(r.workload_domain, Counter())[r.domain or "-"] += 1
    return {k: dict(sorted(v.items())) for k, v in sorted(table.items())}


def token_rates(records: Sequence[RequestRecord], elapsed_s: float) -> dict[str, float | None]:
    """Throughput over the run plus each request's own generation speed (median)."""
    ok = [r for r in records if r.ok]
    completion = sum(r.completion_tokens for r in ok)
    prompt = sum(r.prompt_tokens for r in ok)
    per_request = [
        r.completion_tokens / gen_s
        for r in ok
        if r.completion_tokens > 0 and (gen_s := r.latency_s - (r.ttft_s or 0.0)) > 0
    ]
    rate = (lambda n: round(n / elapsed_s, 3)) if elapsed_s > 0 else (lambda n: None)
    median = percentile(per_request, 50)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "output_tokens_per_s": rate(completion),
        "total_tokens_per_s": rate(completion + prompt),
        "per_request_output_tokens_per_s_p50": None if median is None else round(median, 3),
    }


def cost_per_1k(
    before: SpendSnapshot | None, after: SpendSnapshot | None, n_ok: int
) -> dict[str, Any]:
    """Spend added during the run, per 1,000 successful requests (None when unmeasurable)."""
    if before is None or after is None or before.cost_usd is None or after.cost_usd is None:
        return {"available": False, "delta_usd": None, "per_1k_requests_usd": None}
    delta = after.cost_usd - before.cost_usd
    ledger_requests = (
        after.requests - before.requests
        if after.requests is not None and before.requests is not None
        else None
    )
    return {
        "available": True,
        "delta_usd": round(delta, 9),
        "per_1k_requests_usd": round(delta / n_ok * 1000, 9) if n_ok else None,
        "ledger_requests_delta": ledger_requests,
    }


def time_series(records: Sequence[RequestRecord], bucket_s: float) -> list[dict[str, Any]]:
    """Per time bucket (by request start): count, errors and latency percentiles."""
    if bucket_s <= 0:
        raise ValueError("bucket_s must be positive")
    buckets: dict[int, list[RequestRecord]] = {}
    for r in records:
        buckets.setdefault(int(r.start_s // bucket_s), []).append(r)
    rows = []
    for idx in sorted(buckets):
        rs = buckets[idx]
        lat = [r.latency_s for r in rs if r.ok]
        rows.append(
            {
                "t_s": round(idx * bucket_s, 3),
                "requests": len(rs),
                "errors": sum(not r.ok for r in rs),
                "p50_ms": _ms(percentile(lat, 50)),
                "p99_ms": _ms(percentile(lat, 99)),
            }
        )
    return rows


def replica_series(samples: Sequence[ReplicaSample]) -> dict[str, Any]:
    """Replicas per deployment over time, with each deployment's min and max seen."""
    names = sorted({n for s in samples for n in s.running})
    series = [
        {"t_s": round(s.t_s, 3), "running": dict(s.running), "target": dict(s.target)}
        for s in samples
    ]
    ranges = {
        n: {
            "min": min(s.running.get(n, 0) for s in samples),
            "max": max(s.running.get(n, 0) for s in samples),
        }
        for n in names
    }
    return {"available": bool(samples), "deployments": names, "range": ranges, "samples": series}


def summarize(
    records: Sequence[RequestRecord],
    elapsed_s: float,
    *,
    spend_before: SpendSnapshot | None = None,
    spend_after: SpendSnapshot | None = None,
    replicas: Sequence[ReplicaSample] = (),
    bucket_s: float = 1.0,
) -> dict[str, Any]:
    """Everything report.json holds about a run except its settings."""
    ok = [r for r in records if r.ok]
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    return {
        "requests": len(records),
        "ok": len(ok),
        "errors": len(records) - len(ok),
        "error_rate": round((len(records) - len(ok)) / len(records), 6) if records else 0.0,
        "errors_by_type": error_counts(records),
        "elapsed_s": round(elapsed_s, 3),
        "achieved_rps": round(len(records) / elapsed_s, 3) if elapsed_s > 0 else None,
        "ok_rps": round(len(ok) / elapsed_s, 3) if elapsed_s > 0 else None,
        "latency": latency_summary([r.latency_s for r in ok]),
        "ttft": latency_summary(ttfts) if ttfts else None,
        "tokens": token_rates(records, elapsed_s),
        "routing": {
            "by_expert": routing_mix(records, "expert"),
            "by_domain": routing_mix(records, "domain"),
            "workload_vs_routed_domain": confusion(records),
        },
        "cost": cost_per_1k(spend_before, spend_after, len(ok)),
        "replicas": replica_series(replicas),
        "timeline": time_series(records, bucket_s),
    }
