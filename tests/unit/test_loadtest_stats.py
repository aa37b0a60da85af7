"""Pure parts of loadtest: percentiles, aggregation, profiles, arrivals, parsers, markdown."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from loadtest.arrivals import poisson_arrivals
from loadtest.config import (
    ConfigError,
    LoadConfig,
    check_base_url,
    check_side_url,
    constant_profile,
    parse_profile,
)
from loadtest.probes import parse_serve_status, parse_spend
from loadtest.records import ReplicaSample, RequestRecord, SpendSnapshot
from loadtest.stats import (
    cost_per_1k,
    error_counts,
    latency_summary,
    percentile,
    routing_mix,
    summarize,
    time_series,
    token_rates,
)
from loadtest.workload import builtin_workload, load_jsonl, request_body


def rec(start: float, lat: float, **kw: object) -> RequestRecord:
    kw.setdefault("status", 200)
    kw.setdefault("error", None)
    return RequestRecord(start_s=start, latency_s=lat, **kw)  # type: ignore[arg-type]


# --- percentiles, computed by hand ------------------------------------------------------------


def test_percentile_interpolates_between_ranks() -> None:
    xs = [15.0, 20.0, 35.0, 40.0, 50.0]
    # h = (n-1) q / 100: q=50 -> 2 -> 35; q=90 -> 3.6 -> 40 + .6*10 = 46; q=25 -> 1 -> 20
    assert percentile(xs, 50) == 35.0
    assert percentile(xs, 90) == pytest.approx(46.0)
    assert percentile(xs, 25) == 20.0
    assert percentile(xs, 0) == 15.0
    assert percentile(xs, 100) == 50.0


def test_percentile_ignores_input_order_and_handles_edges() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    # 1..100: h = 99 * .99 = 98.01 -> 99 + .01 * 1
    assert percentile([float(i) for i in range(100, 0, -1)], 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_summary_in_ms() -> None:
    s = latency_summary([0.010, 0.020, 0.030, 0.040])
    # p50: h=1.5 -> 25 ms; p90: h=2.7 -> 37 ms; p99: h=2.97 -> 39.7 ms
    assert s == {
        "p50_ms": 25.0,
        "p90_ms": 37.0,
        "p99_ms": 39.7,
        "max_ms": 40.0,
        "mean_ms": 25.0,
    }
    assert latency_summary([])["p50_ms"] is None


# --- aggregation ----------------------------------------------------------------------------


def test_errors_and_routing_mix() -> None:
    records = [
        rec(0, 0.1, expert="coder", domain="code"),
        rec(0, 0.1, expert="coder", domain="code"),
        rec(0, 0.1, expert="general", domain="general"),
        rec(0, 0.1, expert=None, domain=None),
        rec(0, 0.1, status=500, error="http_500", expert="coder", domain="code"),
        rec(0, 0.1, status=None, error="timeout"),
        rec(0, 0.1, status=None, error="timeout"),
    ]
    assert error_counts(records) == {"http_500": 1, "timeout": 2}
    # errors are not part of the mix; missing headers show as '-'; sorted by count then name
    assert list(routing_mix(records, "expert").items()) == [("coder", 2), ("-", 1), ("general", 1)]
    assert routing_mix(records, "domain") == {"code": 2, "-": 1, "general": 1}


def test_time_series_buckets_by_start() -> None:
    records = [
        rec(0.1, 0.010),
        rec(0.9, 0.030),
        rec(1.2, 0.050, status=503, error="http_503"),
        rec(2.5, 0.020),
    ]
    rows = time_series(records, 1.0)
    assert [r["t_s"] for r in rows] == [0.0, 1.0, 2.0]
    assert [r["requests"] for r in rows] == [2, 1, 1]
    assert [r["errors"] for r in rows] == [0, 1, 0]
    assert rows[0]["p50_ms"] == 20.0  # (10 + 30) / 2
    assert rows[1]["p50_ms"] is None  # only an error in that second
    with pytest.raises(ValueError):
        time_series(records, 0)


def test_token_rates() -> None:
    records = [
        rec(0, 1.0, completion_tokens=10, prompt_tokens=5),
        rec(0, 2.0, ttft_s=1.0, completion_tokens=30, prompt_tokens=5),
        rec(0, 1.0, status=500, error="http_500", completion_tokens=99),
    ]
    t = token_rates(records, elapsed_s=4.0)
    assert t["completion_tokens"] == 40
    assert t["prompt_tokens"] == 10
    assert t["output_tokens_per_s"] == 10.0
    assert t["total_tokens_per_s"] == 12.5
    # per request: 10/1.0 and 30/(2.0-1.0) -> median of [10, 30] = 20
    assert t["per_request_output_tokens_per_s_p50"] == 20.0


def test_cost_per_1k() -> None:
    c = cost_per_1k(SpendSnapshot(1.0, 100), SpendSnapshot(1.05, 150), n_ok=50)
    assert c["available"] is True
    assert c["delta_usd"] == pytest.approx(0.05)
    assert c["per_1k_requests_usd"] == pytest.approx(1.0)
    assert c["ledger_requests_delta"] == 50
    assert cost_per_1k(None, SpendSnapshot(1.0, None), 5)["available"] is False
    assert cost_per_1k(SpendSnapshot(None, 1), SpendSnapshot(1.0, 2), 5)["available"] is False


def test_summarize_counts_and_rates() -> None:
    records = [rec(i * 0.5, 0.01 * (i + 1), expert="e", domain="d") for i in range(8)]
    records.append(rec(4.0, 0.5, status=None, error="connection"))
    samples = [
        ReplicaSample(0.0, {"coder": 1, "general": 1}, {"coder": 1, "general": 1}),
        ReplicaSample(1.0, {"coder": 3, "general": 1}, {"coder": 3, "general": 1}),
    ]
    s = summarize(records, elapsed_s=4.5, replicas=samples)
    assert (s["requests"], s["ok"], s["errors"]) == (9, 8, 1)
    assert s["achieved_rps"] == 2.0
    assert s["error_rate"] == pytest.approx(1 / 9, abs=1e-6)
    assert s["errors_by_type"] == {"connection": 1}
    assert s["latency"]["max_ms"] == 80.0
    assert s["latency"]["p50_ms"] == 45.0  # 10..80 ms, h = 3.5
    assert s["ttft"] is None
    assert s["replicas"]["range"] == {
        "coder": {"min": 1, "max": 3},
        "general": {"min": 1, "max": 1},
    }
    assert s["cost"]["available"] is False


# --- profiles and arrivals ------------------------------------------------------------------


def test_parse_step_and_ramp_profiles() -> None:
    step = parse_profile("step:5@10,20@5")
    assert step.duration_s == 15
    assert step.rate_at(3) == 5 and step.rate_at(12) == 20 and step.rate_at(15) == 0
    assert step.expected_requests() == 5 * 10 + 20 * 5
    ramp = parse_profile("ramp:0-10@10,10-10@5")
    assert ramp.rate_at(5) == pytest.approx(5.0)
    assert ramp.peak_rps == 10
    assert ramp.expected_requests() == pytest.approx(50 + 50)
    for bad in ("step:", "wave:1@1", "step:5", "step:x@1", "step:5@0", "ramp:5@3", "step:0@5"):
        with pytest.raises(ConfigError):
            parse_profile(bad)


def test_poisson_arrivals_follow_the_profile() -> None:
    profile = parse_profile("step:50@20,200@20")
    arrivals = poisson_arrivals(profile, random.Random(1), max_n=1_000_000)
    first = sum(1 for t in arrivals if t < 20)
    second = len(arrivals) - first
    # Poisson counts: mean 1000 (sd ~32) and 4000 (sd ~63); 5 sd bounds
    assert abs(first - 1000) < 160
    assert abs(second - 4000) < 320
    assert arrivals == sorted(arrivals) and arrivals[-1] < 40
    assert len(poisson_arrivals(profile, random.Random(1), max_n=7)) == 7
    assert poisson_arrivals(profile, random.Random(1), 100) == arrivals[:100]


def test_urls_are_checked() -> None:
    assert check_base_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000"
    for bad in ("ftp://x", "127.0.0.1:8000", "http://u:p@host", "http://h/?a=1"):
        with pytest.raises(ConfigError):
            check_base_url(bad)
    target = "http://gw.internal:8000"
    assert check_side_url("http://localhost:8265", target) == "http://localhost:8265"
    assert check_side_url("http://[::1]:8265", target) == "http://[::1]:8265"
    assert check_side_url("http://gw.internal:8265", target) == "http://gw.internal:8265"
    with pytest.raises(ConfigError):
        check_side_url("http://elsewhere.example:8265", target)


def test_load_config_bounds() -> None:
    ok = {"url": "http://127.0.0.1:1", "duration_s": 1.0, "max_requests": 1}
    LoadConfig(mode="closed", concurrency=1, **ok)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        LoadConfig(mode="open", **ok)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        LoadConfig(mode="closed", concurrency=0, **ok)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        LoadConfig(
            mode="open",
            profile=constant_profile(1, 1),
            url=ok["url"],
            duration_s=1e9,
            max_requests=1,
        )
    with pytest.raises(ConfigError):
        LoadConfig(mode="closed", concurrency=1, url=ok["url"], duration_s=1, max_requests=10**9)


# --- parsers --------------------------------------------------------------------------------


def test_parse_spend_shapes() -> None:
    assert parse_spend({"total_cost_usd": 1.5, "requests": 7}) == SpendSnapshot(1.5, 7)
    assert parse_spend({"totals": {"cost_usd": 2.0, "requests": 3}, "rows": []}) == SpendSnapshot(
        2.0, 3
    )
    rows = {
        "group_by": "team",
        "rows": [
            {"team": "a", "cost_usd": 0.25, "requests": 2},
            {"team": "b", "cost_usd": 0.5, "requests": 4},
        ],
    }
    assert parse_spend(rows) == SpendSnapshot(0.75, 6)
    assert parse_spend([{"cost": 1}, {"cost": 2, "requests": 1}]) == SpendSnapshot(3.0, None)
    mixed = parse_spend(
        {"rows": [{"cost_usd": "0.000150000", "requests": 3}, {"cost_nano": 50_000, "requests": 1}]}
    )
    assert mixed.cost_usd == pytest.approx(0.0002) and mixed.requests == 4
    assert parse_spend({"cost_usd": "n/a", "cost": True}) == SpendSnapshot(None, None)
    assert parse_spend({"hello": "world"}) == SpendSnapshot(None, None)
    assert parse_spend("nope") == SpendSnapshot(None, None)


def test_parse_serve_status_counts_running_replicas() -> None:
    def dep(states: list[str], target: int) -> dict[str, object]:
        return {"target_num_replicas": target, "replicas": [{"state": s} for s in states]}

    body = {
        "applications": {
            "slm": {
                "deployments": {
                    "Ingress": dep(["RUNNING"], 1),
                    "expert_code": dep(["RUNNING", "RUNNING", "STARTING"], 3),
                }
            }
        }
    }
    assert parse_serve_status(body) == (
        {"Ingress": 1, "expert_code": 2},
        {"Ingress": 1, "expert_code": 3},
    )
    two = {
        "applications": {
            "a": {"deployments": {"X": dep([], 0)}},
            "b": {"deployments": {"X": dep(["RUNNING"], 1)}},
        }
    }
    assert parse_serve_status(two)[0] == {"a/X": 0, "b/X": 1}
    assert parse_serve_status({"applications": {}}) == ({}, {})
    assert parse_serve_status([]) == ({}, {})


# --- workloads ------------------------------------------------------------------------------


def test_builtin_workload_covers_the_domains() -> None:
    items = builtin_workload()
    domains = {i.domain for i in items}
    assert {"code", "math", "health", "finance", "general", "out_of_scope"} == domains
    assert 36 <= len(items) <= 45


def test_jsonl_workload(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    rows = [
        {"prompt": "hi", "domain": "general"},
        {
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
            "model": "coder",
        },
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    items = load_jsonl(path)
    assert items[0].messages == ({"role": "user", "content": "hi"},)
    assert items[1].model == "coder" and len(items[1].messages) == 2
    body = request_body(items[1], model="auto", stream=True, max_tokens=8)
    assert body["model"] == "coder" and body["stream_options"] == {"include_usage": True}
    assert request_body(items[0], model="auto", stream=False, max_tokens=None) == {
        "model": "auto",
        "messages": [{"role": "user", "content": "hi"}],
    }
    for bad in ('{"prompt": "a", "messages": []}', '{"promt": "a"}', "not json", "{}"):
        path.write_text(bad + "\n")
        with pytest.raises(ConfigError):
            load_jsonl(path)
