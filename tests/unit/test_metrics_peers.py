"""Two ingress replicas sharing /metrics through a real Redis: any scrape shows both (17.4)."""

from __future__ import annotations

import json

import redis
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from router.serving.metrics_peers import PeerMetrics, peered_registry
from router.serving.replica_metrics import label_replica
from router.serving.telemetry import Telemetry


def _replica(name: str, requests: int, redis_url: str, key: str) -> tuple[Telemetry, PeerMetrics]:
    tel = Telemetry()
    label_replica(tel.metrics, name)
    peers = PeerMetrics(tel.metrics.registry, name, redis_url, key=key, stale_s=60)
    tel.metrics.registry = peered_registry(peers)
    for _ in range(requests):
        tel.observe_request(
            expert="coder", domain="code", duration_s=0.2, ttft_s=0.05, stream=False,
            input_tokens=10, output_tokens=5, cost_usd=0.001, team="alpha",
        )  # fmt: skip
    return tel, peers


def _counts(tel: Telemetry) -> dict[str, float]:
    body, _ = tel.render_prometheus()
    text = body.decode()
    for line in text.splitlines():  # the text format allows one HELP/TYPE per family
        if line.startswith("# TYPE"):
            assert text.count(line + "\n") == 1, line
    return {
        s.labels["replica"]: s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "slm_router_request_duration_seconds_count"
    }


def test_a_scrape_of_either_replica_shows_both(redis_url: str, redis_prefix: str) -> None:
    key = f"{redis_prefix}:metrics:replicas"
    a, pa = _replica("r-a", 3, redis_url, key)
    b, pb = _replica("r-b", 4, redis_url, key)
    assert _counts(a) == {"r-a": 3}  # nothing shared yet
    pa.sync()
    pb.sync()
    pa.sync()
    assert _counts(a) == {"r-a": 3, "r-b": 4}
    assert _counts(b) == {"r-a": 3, "r-b": 4}
    a.observe_request(
        expert="coder", domain="code", duration_s=0.2, ttft_s=0.05, stream=False,
        input_tokens=1, output_tokens=1, cost_usd=0.0, team="alpha",
    )  # fmt: skip
    assert _counts(a)["r-a"] == 4  # own series live; the peer's as of its last sync
    pb.stop()
    pa.sync()
    assert _counts(a) == {"r-a": 4}


def test_a_stale_peer_is_dropped(redis_url: str, redis_prefix: str) -> None:
    key = f"{redis_prefix}:metrics:replicas"
    gone, _ = _replica("r-gone", 2, redis_url, key)
    client = redis.Redis.from_url(redis_url)
    text = generate_latest(gone.metrics.registry).decode()
    client.hset(key, "r-gone", json.dumps({"at": 0.0, "text": text}))  # published long ago
    live, pl = _replica("r-live", 1, redis_url, key)
    pl.sync()
    assert _counts(live) == {"r-live": 1}
    assert client.hkeys(key) == [b"r-live"]
