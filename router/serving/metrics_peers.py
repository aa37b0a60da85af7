"""Every ingress replica's series on every scrape, through the gateway's Redis (issue 17.4).

Serve's HTTP port hands a scrape to any one ingress replica. Labels alone (replica_metrics) keep
replicas' series apart, but a scrape that reaches replica A only would leave B's series out, and
Prometheus marks a series missing from a scrape as stale: `sum(rate(...))` would flicker. So each
replica publishes its own exposition every `interval_s` into one Redis hash (field = replica id,
one key so it works on Redis Cluster too) and keeps a parsed copy of its peers' entries; a scrape
answers its own live series plus its peers' as of at most one interval ago. Entries older than
`stale_s` (a replica that stopped) are dropped. A background thread with its own small
synchronous client does the Redis work: nothing on the request path, and a Redis outage only
ages the peers' copy until it is dropped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

log = logging.getLogger("slm_router")


def merge_families(groups: Iterable[Iterable[Metric]]) -> list[Metric]:
    """One family per name (the text format allows one HELP/TYPE each), samples concatenated."""
    merged: dict[str, Metric] = {}
    for group in groups:
        for fam in group:
            into = merged.get(fam.name)
            if into is None:
                into = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
            into.samples.extend(fam.samples)
    return list(merged.values())


class PeerMetrics(Collector):
    """Publishes `own` under `replica` and collects own + peers' families."""

    def __init__(
        self,
        own: CollectorRegistry,
        replica: str,
        redis_url: str,
        *,
        key: str = "slm:metrics:replicas",
        interval_s: float = 5.0,
        stale_s: float = 30.0,
    ) -> None:
        from router.finance.redis_server import make_sync_client

        self.own, self.replica, self.key = own, replica, key
        self.interval_s, self.stale_s = interval_s, stale_s
        # make_sync_client: a RedisCluster where the URL says cluster=true (docs/DEPLOY.md)
        self._client = make_sync_client(redis_url)
        self._peers: list[Metric] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def collect(self) -> Iterable[Metric]:
        # Ours through the same text round trip as the peers', so family names match exactly
        # (the parser names a counter and an info family as the text shows them).
        own = text_string_to_metric_families(generate_latest(self.own).decode())
        return merge_families([own, self._peers])

    def sync(self) -> None:
        """Publish ours, read the others' (one round each); called by the thread, or tests."""
        now = time.time()
        body = generate_latest(self.own).decode()
        self._client.hset(self.key, self.replica, json.dumps({"at": now, "text": body}))
        peers: list[Metric] = []
        for field, raw in self._client.hgetall(self.key).items():
            name = field.decode() if isinstance(field, bytes) else str(field)
            if name == self.replica:
                continue
            entry = json.loads(raw)
            if now - float(entry["at"]) > self.stale_s:
                self._client.hdel(self.key, name)  # a replica gone for good
                continue
            peers.extend(text_string_to_metric_families(entry["text"]))
        self._peers = peers

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="metrics-peers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            self._client.hdel(self.key, self.replica)  # leave at once, not after stale_s
        except Exception:
            log.debug("metrics peers: could not remove our entry", exc_info=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception as exc:  # Redis away: peers' copy ages until it is dropped
                log.debug("metrics peers: sync failed: %s", exc)
            self._stop.wait(self.interval_s)


def peered_registry(peers: PeerMetrics) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(peers)
    return registry
