"""Side readings around a run: the gateway's spend totals and Serve's replica counts.

Both are optional: an endpoint that is unreachable or answers something unexpected is
recorded as absent, never as an error of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx

from loadtest.records import ReplicaSample, SpendSnapshot

SERVE_STATUS_PATH = "/api/serve/applications/"
_COST_KEYS = (
    "total_cost_usd",
    "cost_usd",
    "total_usd",
    "spend_usd",
    "total_spend",
    "cost",
    "spend",
)
_COUNT_KEYS = ("requests", "total_requests", "request_count", "count")
_ROW_KEYS = ("rows", "groups", "data", "items")


def _number(obj: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    """The first key holding a number; decimal strings count (the ledger sums in Decimal)."""
    for key in keys:
        value = obj.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                continue
    return None


def _cost(obj: dict[str, Any]) -> float | None:
    usd = _number(obj, _COST_KEYS)
    if usd is not None:
        return usd
    nano = _number(obj, ("cost_nano",))  # the ledger's integer nano-dollars
    return None if nano is None else nano / 1e9


def _sum_rows(rows: list[Any]) -> SpendSnapshot:
    dicts = [r for r in rows if isinstance(r, dict)]
    costs = [_cost(r) for r in dicts]
    counts = [_number(r, _COUNT_KEYS) for r in dicts]
    cost = sum(c for c in costs if c is not None) if any(c is not None for c in costs) else None
    count = (
        int(sum(c for c in counts if c is not None)) if all(c is not None for c in counts) else None
    )
    return SpendSnapshot(cost, count if dicts else None)


def parse_spend(obj: Any) -> SpendSnapshot:
    """Totals from the spend API's JSON, whatever its grouping.

    Accepted: top-level totals (`total_cost_usd`/`cost_usd`/... as numbers or decimal strings, or
    the ledger's `cost_nano`, and `requests`), a `total`/`totals`
    object holding them, or grouped rows under `rows`/`groups`/`data`/`items` (or a bare list),
    which are summed.
    """
    if isinstance(obj, list):
        return _sum_rows(obj)
    if not isinstance(obj, dict):
        return SpendSnapshot(None, None)
    for key in ("totals", "total"):
        inner = obj.get(key)
        if isinstance(inner, dict):
            snap = parse_spend(inner)
            if snap.cost_usd is not None:
                return snap
    cost = _cost(obj)
    if cost is not None:
        count = _number(obj, _COUNT_KEYS)
        return SpendSnapshot(cost, None if count is None else int(count))
    for key in _ROW_KEYS:
        if isinstance(obj.get(key), list):
            return _sum_rows(obj[key])
    return SpendSnapshot(None, None)


async def read_spend(client: httpx.AsyncClient, base_url: str) -> SpendSnapshot | None:
    """GET {base}/v1/spend once; None when unreachable, not 200, or without a total."""
    try:
        resp = await client.get(base_url + "/v1/spend", timeout=5.0)
        if resp.status_code != 200:
            return None
        snap = parse_spend(resp.json())
    except (httpx.HTTPError, ValueError):
        return None
    return snap if snap.cost_usd is not None else None


def parse_serve_status(obj: Any) -> tuple[dict[str, int], dict[str, int]]:
    """(running replicas, target replicas) per deployment from Serve's REST status JSON.

    Shape (ray.serve.schema.ServeInstanceDetails): {"applications": {app: {"deployments":
    {name: {"target_num_replicas": int, "replicas": [{"state": "RUNNING", ...}]}}}}}.
    Deployments are named `app/deployment` only when more than one application is deployed.
    """
    running: dict[str, int] = {}
    target: dict[str, int] = {}
    apps = obj.get("applications") if isinstance(obj, dict) else None
    if not isinstance(apps, dict):
        return running, target
    for app_name, app in apps.items():
        deployments = app.get("deployments") if isinstance(app, dict) else None
        for dep_name, dep in (deployments or {}).items():
            if not isinstance(dep, dict):
                continue
            key = f"{app_name}/{dep_name}" if len(apps) > 1 else str(dep_name)
            replicas = dep.get("replicas") or []
            running[key] = sum(
                1 for r in replicas if isinstance(r, dict) and r.get("state") == "RUNNING"
            )
            target[key] = int(dep.get("target_num_replicas") or 0)
    return running, target


class ReplicaPoller:
    """Samples Serve's status API every `interval_s` until stopped; failures are skipped."""

    def __init__(self, status_url: str, interval_s: float, run_t0: float) -> None:
        self._url = status_url.rstrip("/") + SERVE_STATUS_PATH
        self._interval = interval_s
        self._t0 = run_t0
        self.samples: list[ReplicaSample] = []
        self.failures = 0

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while not stop.is_set():
                await self._sample(client)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._interval)
            await self._sample(client)  # the state the run ended in

    async def _sample(self, client: httpx.AsyncClient) -> None:
        t = time.perf_counter() - self._t0
        try:
            resp = await client.get(self._url)
            resp.raise_for_status()
            running, target = parse_serve_status(resp.json())
        except (httpx.HTTPError, ValueError):
            self.failures += 1
            return
        if running or target:
            self.samples.append(ReplicaSample(t, running, target))
