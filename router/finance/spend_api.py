"""The spend API and the finance dashboard: thin read-only routes over the ledger and the limiter.

Routes (all GET; admin-only when auth is on; `private`: no cache keeps an answer or an error):
  /v1/spend            totals grouped by team|expert|domain|day (or "day,team"), JSON
  /v1/spend.csv        the same rows as CSV
  /v1/spend/requests   the most expensive requests
  /v1/spend/budgets    budget burn per team, for each team's current period
  /v1/spend/latency    p50/p95 latency per expert
  /v1/spend/summary    everything the dashboard draws, in one round trip
  /dashboard           the dashboard page (public: it holds no data; its fetches need the key)

Query parameters: `from`, `to` (inclusive ISO dates, UTC days), `team`, `group_by`, `limit`.
Money is exact: integer nano-USD plus nine-decimal strings (see router.finance.spend). The
routers are module-level; `install(app, reader)` mounts them with the SpendReader they read.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from router.errors import InvalidRequest, NotFound
from router.finance.access import NO_STORE, admin, private
from router.finance.budgets import BudgetStatus, Limiter
from router.finance.keys import KeyStore
from router.finance.ledger import Ledger
from router.finance.ledger_types import METRICS, TotalsRow
from router.finance.spend import (
    budget_json,
    dashboard_json,
    parse_dims,
    parse_range,
    record_json,
    spend_csv,
    spend_json,
)

CELL_DIMS = ("day", "team", "expert", "domain")
DEFAULT_TOP = 20
MAX_TOP = 500
# The page may talk to its own origin only: a CDN script or font would fail loudly in tests.
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
STATIC_TYPES = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "drift_panel.js": "text/javascript; charset=utf-8",
}


@dataclass(frozen=True)
class SpendQuery:
    """The filters every spend route shares, validated once."""

    from_date: date | None
    to_date: date | None
    team: str | None

    @classmethod
    def parse(cls, request: Request) -> SpendQuery:
        q = request.query_params
        raw_from, raw_to = q.get("from") or None, q.get("to") or None
        for param, raw in (("from", raw_from), ("to", raw_to)):
            try:
                parse_range(raw, None)
            except ValueError as exc:
                raise InvalidRequest(str(exc), param=param, code="invalid_date") from None
        try:
            lo, hi = parse_range(raw_from, raw_to)
        except ValueError as exc:  # both valid, but in the wrong order
            raise InvalidRequest(str(exc), param="from", code="invalid_date_range") from None
        return cls(lo, hi, q.get("team") or None)


def _group_by(request: Request) -> str:
    raw = request.query_params.get("group_by") or "team"
    try:
        return ",".join(parse_dims(raw))
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="group_by", code="invalid_group_by") from None


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return DEFAULT_TOP
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_TOP:
        raise InvalidRequest(
            f"limit must be an integer from 1 to {MAX_TOP}; got {raw!r}",
            param="limit",
            code="invalid_limit",
        )
    return int(raw)


@functools.cache
def _static(name: str) -> bytes:
    return (resources.files("router.finance") / "static" / name).read_bytes()


class SpendReader:
    """The queries behind the routes; `keys` and `limiter` are None when auth is off."""

    def __init__(self, ledger: Ledger, keys: KeyStore | None, limiter: Limiter | None) -> None:
        self.ledger = ledger
        self.keys = keys
        self.limiter = limiter

    async def spend(self, group_by: str, q: SpendQuery) -> list[TotalsRow]:
        return await self.ledger.totals(group_by, q.from_date, q.to_date, q.team)

    async def teams(self, q: SpendQuery) -> list[str]:
        """Teams with keys plus teams with spend in the range (for the dashboard's filter)."""
        return await self._teams_from(await self.ledger.totals("team", q.from_date, q.to_date))

    async def _teams_from(self, by_team: Sequence[TotalsRow]) -> list[str]:
        known = set(await self.keys.teams()) if self.keys is not None else set()
        return sorted(known | {r.group[0] for r in by_team})

    async def budgets(self, team: str | None) -> list[BudgetStatus]:
        if self.limiter is None or self.keys is None:
            return []
        teams = [team] if team else await self.keys.teams()
        limiter = self.limiter
        return list(await asyncio.gather(*(limiter.status(t) for t in teams)))

    async def summary(self, q: SpendQuery, top_n: int) -> dict[str, Any]:
        lo, hi, team = q.from_date, q.to_date, q.team
        led = self.ledger
        # One pass over the day hashes, rolled up four ways, instead of four passes.
        cells = await led.totals(CELL_DIMS, lo, hi, team)
        by = {dim: rollup(cells, dim) for dim in CELL_DIMS}
        top, latency = await asyncio.gather(
            led.top_requests(top_n, lo, hi, team), led.latency_percentiles(lo, hi)
        )
        budgets = await self.budgets(team)
        teams = await self.teams(q) if team else await self._teams_from(by["team"])
        body = dashboard_json(
            by_day=by["day"],
            by_team=by["team"],
            by_expert=by["expert"],
            by_domain=by["domain"],
            top=top,
            latency=latency,
            budgets=budgets,
            from_date=lo,
            to_date=hi,
            team=team,
        )
        body["object"] = "spend.summary"
        body["currency"] = "USD"
        body["teams"] = teams
        # The ledger samples latency per expert and day, not per team: say so, don't pretend.
        body["latency_scope"] = "all teams"
        return body


def rollup(cells: Sequence[TotalsRow], dim: str) -> list[TotalsRow]:
    """Rows grouped by CELL_DIMS -> rows grouped by one of them (exact: integer sums)."""
    idx = CELL_DIMS.index(dim)
    sums: dict[str, dict[str, int]] = {}
    for row in cells:
        acc = sums.setdefault(row.group[idx], dict.fromkeys(METRICS, 0))
        for metric in METRICS:
            acc[metric] += getattr(row, metric)
    return [TotalsRow(group=(k,), dims=(dim,), **m) for k, m in sorted(sums.items())]


def _csv_name(group_by: str, q: SpendQuery) -> str:
    parts = ["spend", group_by.replace(",", "-")]
    parts += [d.isoformat() for d in (q.from_date, q.to_date) if d is not None]
    if q.team:
        parts.append("".join(c if c.isalnum() or c in "-_" else "_" for c in q.team))
    return "-".join(parts) + ".csv"


def _latency_rows(latency: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    return [
        {
            "expert": expert,
            "p50_ms": round(pct.get("p50", 0.0), 3),
            "p95_ms": round(pct.get("p95", 0.0), 3),
            "samples": int(pct.get("samples", 0)),
        }
        for expert, pct in sorted(latency.items())
    ]


# Spend routes: admin only. The dashboard page is public: a browser cannot attach a bearer
# token to a page load, so the page asks for the admin key and sends it with its data requests,
# which are guarded like every other spend route. Both are private (never cached).
router = APIRouter(dependencies=[Depends(private), Depends(admin)])
dashboard = APIRouter(dependencies=[Depends(private)], include_in_schema=False)


def install(app: FastAPI, reader: SpendReader) -> None:
    """Mount the spend API and the dashboard on `app`, reading from `reader`."""
    app.state.spend_reader = reader
    app.include_router(router)
    app.include_router(dashboard)


def _reader(request: Request) -> SpendReader:
    reader: SpendReader = request.app.state.spend_reader
    return reader


@router.get("/v1/spend")
async def spend(request: Request) -> Response:
    group_by, q = _group_by(request), SpendQuery.parse(request)
    rows = await _reader(request).spend(group_by, q)
    body = spend_json(rows, group_by, from_date=q.from_date, to_date=q.to_date, team=q.team)
    return JSONResponse(body, headers=NO_STORE)


@router.get("/v1/spend.csv")
async def spend_csv_route(request: Request) -> Response:
    group_by, q = _group_by(request), SpendQuery.parse(request)
    rows = await _reader(request).spend(group_by, q)
    disposition = f'attachment; filename="{_csv_name(group_by, q)}"'
    return Response(
        spend_csv(rows, group_by),
        media_type="text/csv; charset=utf-8",
        headers={**NO_STORE, "content-disposition": disposition},
    )


@router.get("/v1/spend/requests")
async def requests(request: Request) -> Response:
    q, n = SpendQuery.parse(request), _limit(request)
    top = await _reader(request).ledger.top_requests(n, q.from_date, q.to_date, q.team)
    return JSONResponse({"object": "list", "data": [record_json(r) for r in top]}, headers=NO_STORE)


@router.get("/v1/spend/budgets")
async def budgets(request: Request) -> Response:
    team = request.query_params.get("team") or None
    rows = [budget_json(b) for b in await _reader(request).budgets(team)]
    return JSONResponse({"object": "list", "data": rows}, headers=NO_STORE)


@router.get("/v1/spend/latency")
async def latency(request: Request) -> Response:
    q = SpendQuery.parse(request)
    pct = await _reader(request).ledger.latency_percentiles(q.from_date, q.to_date)
    body = {
        "object": "spend.latency",
        "from": q.from_date.isoformat() if q.from_date else None,
        "to": q.to_date.isoformat() if q.to_date else None,
        "scope": "all teams",
        "data": _latency_rows(pct),
    }
    return JSONResponse(body, headers=NO_STORE)


@router.get("/v1/spend/summary")
async def summary(request: Request) -> Response:
    q, n = SpendQuery.parse(request), _limit(request)
    return JSONResponse(await _reader(request).summary(q, n), headers=NO_STORE)


@dashboard.get("/dashboard")
async def dashboard_page() -> Response:
    return Response(
        _static("dashboard.html"),
        media_type="text/html; charset=utf-8",
        headers={"content-security-policy": DASHBOARD_CSP, "cache-control": "no-cache"},
    )


@dashboard.get("/dashboard/{name}")
async def dashboard_asset(name: str) -> Response:
    if name not in STATIC_TYPES:
        raise NotFound(f"no dashboard asset named {name!r}")
    return Response(
        _static(name), media_type=STATIC_TYPES[name], headers={"cache-control": "no-cache"}
    )


def spend_route_paths() -> Sequence[str]:
    """Every path `install` mounts (for auth middleware allow-lists and docs)."""
    return (*(r.path for r in router.routes), "/dashboard")  # type: ignore[attr-defined]
