"""A scrape of /metrics with two ingress replicas shows both (issue 17.4): its own app on the
session's Serve, two ingress replicas, a Redis; the traffic of both adds up on any scrape."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import _run_with_timeout

pytestmark = pytest.mark.integration

APP, PREFIX = "slm-router-metrics", "/metrics-replicas"
POLICY = """
version: 1
classifier: {kind: examples, placement: ingress, oos_threshold: 0.3}
experts:
  only: {backend: fake}
routing:
  fallback: only
  routes:
    - domain: code
      experts: [only]
      examples: [write a python function, fix this javascript bug]
gateway: {replicas: 2}
"""
REQUESTS = 24


@pytest.fixture(scope="module")
def app_url(gateway_url: str, gateway_redis: str) -> Iterator[str]:
    from ray import serve

    from router.config import parse_policy
    from router.serving.reload import apply_config
    from router.serving.server import wait_ready

    config = parse_policy(POLICY, "metrics.yaml")
    _run_with_timeout(
        lambda: apply_config(config, gateway_redis, name=APP, route_prefix=PREFIX), 240
    )
    url = f"{gateway_url}{PREFIX}"
    try:
        wait_ready(url, timeout_s=60)
        yield url
    finally:
        serve.delete(APP)


def _per_replica(text: str) -> dict[str, float]:
    return {
        s.labels["replica"]: s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "slm_router_request_duration_seconds_count"
    }


def test_any_scrape_shows_both_ingress_replicas(app_url: str) -> None:
    with httpx.Client(timeout=30) as client:
        # HAProxy learns of a new replica a moment after Serve reports the app running, so the
        # first batch may all land on one replica: send batches until both have served some.
        sent = 0
        for _ in range(6):
            for _i in range(REQUESTS):
                body = {"model": "auto", "messages": [{"role": "user", "content": f"hi {sent}"}]}
                assert client.post(f"{app_url}/v1/chat/completions", json=body).status_code == 200
                sent += 1
            time.sleep(6.0)  # one publish interval, so the peer's series are in the scrape
            if len(_per_replica(client.get(f"{app_url}/metrics").text)) == 2:
                break
        deadline, seen = time.monotonic() + 40, {}
        while time.monotonic() < deadline:
            scrapes = [_per_replica(client.get(f"{app_url}/metrics").text) for _ in range(4)]
            seen = scrapes[-1]
            if all(len(s) == 2 and sum(s.values()) == sent for s in scrapes):
                break
            time.sleep(1.0)
        assert len(seen) == 2, seen  # the requests were balanced over both replicas
        assert sum(seen.values()) == sent, seen
