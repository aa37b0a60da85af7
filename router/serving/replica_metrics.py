"""Each ingress replica's /metrics series carry a `replica` label (issue 17.4).

Every Serve replica is its own process with its own counters, and Serve's HTTP port balances a
scrape onto any one of them. Without a label, two replicas' `slm_router_requests_total` were
the same series, so a scrape saw one replica's value now and another's next time: counters
jumped back and forth and `rate()` read resets. With the replica's id as a label (the same value
Serve puts in its own `replica` tag), each replica's series are distinct and can be summed.
docs/OBSERVABILITY.md says how to scrape every replica and where Serve's own totals are.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from router.serving.telemetry import Metrics

REPLICA_LABEL = "replica"


def _replica_context() -> Any | None:
    """Serve's context of this replica, None outside a Serve replica."""
    try:
        from ray import serve

        return serve.get_replica_context()
    except Exception:  # not in a replica: Serve raises RayServeException, or Ray is absent
        return None


def serve_replica_id() -> str | None:
    """Serve's id of this replica, None outside a Serve replica."""
    ctx = _replica_context()
    return None if ctx is None else str(ctx.replica_id.unique_id)


def serve_app_name() -> str | None:
    """Serve's name of this replica's application, None outside a Serve replica."""
    ctx = _replica_context()
    return None if ctx is None else str(ctx.app_name)


def replica_id() -> str:
    """Serve's id of this replica; outside Serve (in-process use, tests) host:pid."""
    return serve_replica_id() or f"{socket.gethostname()}:{os.getpid()}"


class _Labelled(Collector):
    """Re-yields another registry's families with constant labels added to every sample."""

    def __init__(self, source: CollectorRegistry, labels: Mapping[str, str]) -> None:
        self._source = source
        self._labels = dict(labels)

    def collect(self) -> Iterable[Metric]:
        for family in self._source.collect():
            out = Metric(family.name, family.documentation, family.type, family.unit)
            # A label the source already has wins: it was set on purpose by the instrument.
            out.samples = [s._replace(labels=self._labels | s.labels) for s in family.samples]
            yield out


def labelled_registry(source: CollectorRegistry, labels: Mapping[str, str]) -> CollectorRegistry:
    """A registry whose scrape is `source`'s, with `labels` on every series."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Labelled(source, labels))
    return registry


def label_replica(metrics: Metrics, replica: str | None = None) -> str:
    """Point telemetry's scrape registry at a replica-labelled view of itself; returns the id."""
    rid = replica or replica_id()
    metrics.registry = labelled_registry(metrics.registry, {REPLICA_LABEL: rid})
    return rid


def share_with_peers(metrics: Metrics, redis_url: str | None, prefix: str = "slm") -> bool:
    """In a Serve replica with a Redis: every scrape shows every ingress replica's series.

    Outside Serve there is one process and so no peers; without Redis, each replica's own."""
    rid = serve_replica_id()
    if rid is None or not redis_url:
        return False
    from router.serving.metrics_peers import PeerMetrics, peered_registry

    label_replica(metrics, rid)
    # One hash per application: two gateways sharing a Redis (staging and prod, or a second app
    # on the same cluster) must not show each other's replicas.
    key = f"{prefix}:metrics:replicas:{serve_app_name() or 'default'}"
    peers = PeerMetrics(metrics.registry, rid, redis_url, key=key)
    metrics.registry = peered_registry(peers)
    peers.start()
    return True
