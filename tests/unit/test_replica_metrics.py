"""Two ingress replicas' /metrics scrapes: each replica's series are distinct (issue 17.4)."""

from __future__ import annotations

import os

from prometheus_client.parser import text_string_to_metric_families

from router.serving.replica_metrics import REPLICA_LABEL, label_replica, replica_id
from router.serving.telemetry import Telemetry


def _replica(name: str, requests: int) -> Telemetry:
    tel = Telemetry()
    assert label_replica(tel.metrics, name) == name
    for _ in range(requests):
        tel.observe_request(
            expert="coder", domain="code", duration_s=0.2, ttft_s=0.05, stream=False,
            input_tokens=10, output_tokens=5, cost_usd=0.001, team="alpha",
        )  # fmt: skip
    return tel


def _series(tel: Telemetry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, _ = tel.render_prometheus()
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def test_two_replicas_scrapes_are_distinct_series_that_sum() -> None:
    a, b = _series(_replica("r-a", 3)), _series(_replica("r-b", 4))
    # What Prometheus stores after scraping both: no series of one overwrites the other's.
    assert not set(a) & set(b)
    merged = a | b
    counts = {
        dict(labels)[REPLICA_LABEL]: v
        for (name, labels), v in merged.items()
        if name == "slm_router_request_duration_seconds_count"
    }
    assert counts == {"r-a": 3, "r-b": 4}
    tokens = [
        v
        for (name, labels), v in merged.items()
        if name == "slm_router_tokens_total" and ("direction", "output") in labels
    ]
    assert sum(tokens) == (3 + 4) * 5


def test_every_sample_carries_the_replica_and_keeps_its_own_labels() -> None:
    series = _series(_replica("r-x", 1))
    assert series
    for name, labels in series:
        assert (REPLICA_LABEL, "r-x") in labels, name
    hist = [lab for n, lab in series if n == "slm_router_request_duration_seconds_bucket"]
    assert hist
    assert all(("expert", "coder") in lab and any(k == "le" for k, _ in lab) for lab in hist)


def test_outside_serve_the_id_is_host_and_pid() -> None:
    assert replica_id().endswith(f":{os.getpid()}")
