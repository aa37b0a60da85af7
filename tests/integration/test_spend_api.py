"""The spend API over a real redis-server: known records in, independently computed sums out."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from router.finance import access, spend_api
from router.finance.access import Access
from router.finance.budgets import Limiter
from router.finance.costs import usd_to_nano
from router.finance.keys import KeyStore
from router.finance.ledger import Ledger
from router.finance.ledger_types import CostRecord
from router.finance.redis_server import make_client
from router.finance.spend_api import DASHBOARD_CSP, SpendReader, spend_route_paths
from router.serving.http.api import new_app
from tests.integration import spend_fixtures as fx

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

RECORDS = fx.make_records(240, seed=7)


def _spend_app(
    ledger: Ledger, keys: KeyStore | None = None, limiter: Limiter | None = None, auth: bool = False
) -> FastAPI:
    app = new_app()
    access.install(app, Access(auth, keys))
    spend_api.install(app, SpendReader(ledger, keys, limiter))
    return app


@pytest.fixture
async def redis(redis_url: str):
    client = make_client(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def parts(redis, redis_url: str, redis_prefix: str, tmp_path: Path):
    ledger = Ledger(redis_url, tmp_path / "spool.jsonl", prefix=redis_prefix, client=redis)
    for rec in RECORDS:
        assert await ledger.write(rec)
    keys = KeyStore(redis, prefix=redis_prefix, cache_ttl_s=0)
    limiter = Limiter(redis, prefix=redis_prefix)
    return ledger, keys, limiter


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


@pytest.fixture
async def http(parts):
    ledger, keys, limiter = parts
    app = _spend_app(ledger, keys, limiter)
    async with _client(app) as client:
        yield client


def _check_row(row: dict, want: fx.Sums) -> None:
    assert row["requests"] == want.requests
    assert row["errors"] == want.errors
    assert row["input_tokens"] == want.input_tokens
    assert row["output_tokens"] == want.output_tokens
    assert row["cost_nano"] == want.cost_nano
    assert row["baseline_nano"] == want.baseline_nano
    assert row["cost_usd"] == fx.usd9(want.cost_nano)
    assert row["baseline_usd"] == fx.usd9(want.baseline_nano)
    assert row["savings_usd"] == fx.usd9(want.savings_nano)
    assert row["savings_pct"] == want.savings_pct


@pytest.mark.parametrize("dim", ["team", "expert", "domain", "day"])
async def test_spend_json_matches_independent_sums(http, dim: str) -> None:
    resp = await http.get("/v1/spend", params={"group_by": dim})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    want = fx.group(RECORDS, dim)
    assert [row[dim] for row in body["data"]] == sorted(want)
    for row in body["data"]:
        _check_row(row, want[row[dim]])
    _check_row(body["total"], fx.total(RECORDS))
    assert body["group_by"] == [dim] and body["currency"] == "USD"


async def test_date_range_and_team_filter(http) -> None:
    params = {"group_by": "expert", "from": "2025-03-02", "to": "2025-03-04", "team": "beta"}
    body = (await http.get("/v1/spend", params=params)).json()
    mine = fx.select(RECORDS, date(2025, 3, 2), date(2025, 3, 4), "beta")
    assert mine and len(mine) < len(RECORDS)
    want = fx.group(mine, "expert")
    assert {row["expert"]: row["cost_nano"] for row in body["data"]} == {
        e: s.cost_nano for e, s in want.items()
    }
    _check_row(body["total"], fx.total(mine))
    assert (body["from"], body["to"], body["team"]) == ("2025-03-02", "2025-03-04", "beta")
    # A single day with no traffic (03-03) is empty, not an error.
    empty = (await http.get("/v1/spend", params={"from": "2025-03-03", "to": "2025-03-03"})).json()
    assert empty["data"] == [] and empty["total"]["cost_nano"] == 0


async def test_zero_and_sub_micro_amounts_are_plain_decimals(parts) -> None:
    """Free self-hosted experts cost 0 and cheap tokens cost a few nano-USD: finance must see
    "0.000000000" and "0.000000005", never Decimal's "0E-9" / "5E-9" (router.finance.spend.usd must
    format with `:f`)."""
    ledger, _, _ = parts
    ts = datetime(2025, 4, 1, 12, tzinfo=UTC).timestamp()
    for i, (cost, base) in enumerate(((0, 0), (5, 120), (0, 7))):
        rec = CostRecord(
            f"tiny{i}", ts, "free", "local", "chat", cost_nano=cost, baseline_nano=base
        )
        await ledger.write(rec)
    app = _spend_app(ledger)
    async with _client(app) as client:
        body = (
            await client.get("/v1/spend", params={"from": "2025-04-01", "to": "2025-04-01"})
        ).json()
    assert body["total"]["cost_usd"] == "0.000000005"
    assert body["total"]["baseline_usd"] == "0.000000127"
    assert body["total"]["savings_usd"] == "0.000000122"


async def test_cross_table_group_by(http) -> None:
    body = (await http.get("/v1/spend", params={"group_by": "day,team"})).json()
    assert body["group_by"] == ["day", "team"]
    want: dict[tuple[str, str], int] = {}
    for r in RECORDS:
        want[(r.day, r.team)] = want.get((r.day, r.team), 0) + r.cost_nano
    assert {(row["day"], row["team"]): row["cost_nano"] for row in body["data"]} == want


async def test_csv_equals_json_and_sums_exactly(http) -> None:
    params = {"group_by": "team", "from": "2025-03-01", "to": "2025-03-02"}
    resp = await http.get("/v1/spend.csv", params=params)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/csv")
    assert "spend-team-2025-03-01-2025-03-02.csv" in resp.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    mine = fx.select(RECORDS, date(2025, 3, 1), date(2025, 3, 2))
    want = fx.group(mine, "team")
    assert {r["team"]: r["cost_usd"] for r in rows} == {
        t: fx.usd9(s.cost_nano) for t, s in want.items()
    }
    assert sum(Decimal(r["cost_usd"]) for r in rows) == Decimal(fx.total(mine).cost_nano) / 10**9
    assert sum(int(r["requests"]) for r in rows) == len(mine)
    body = (await http.get("/v1/spend", params=params)).json()
    assert [r["cost_usd"] for r in rows] == [r["cost_usd"] for r in body["data"]]


@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/v1/spend", {"group_by": "model"}, "group_by"),
        ("/v1/spend", {"group_by": ""}, None),  # empty means the default, not an error
        ("/v1/spend.csv", {"group_by": "team,bogus"}, "group_by"),
        ("/v1/spend", {"from": "2025-13-01"}, "from"),
        ("/v1/spend", {"to": "yesterday"}, "to"),
        ("/v1/spend", {"from": "2025-03-04", "to": "2025-03-01"}, "from"),
        ("/v1/spend/requests", {"limit": "0"}, "limit"),
        ("/v1/spend/requests", {"limit": "ten"}, "limit"),
        ("/v1/spend/requests", {"limit": "²"}, "limit"),
        ("/v1/spend/summary", {"limit": "501"}, "limit"),
        ("/v1/spend/latency", {"from": "03/01/2025"}, "from"),
    ],
)
async def test_bad_parameters_are_400_envelopes(http, path: str, params: dict, param) -> None:
    resp = await http.get(path, params=params)
    if param is None:
        assert resp.status_code == 200
        return
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert err["message"] and err["code"]


async def test_most_expensive_requests(http) -> None:
    body = (await http.get("/v1/spend/requests", params={"limit": 7})).json()
    want = sorted(RECORDS, key=lambda r: (-r.cost_nano, r.request_id))[:7]
    assert [r["request_id"] for r in body["data"]] == [r.request_id for r in want]
    assert [r["cost_usd"] for r in body["data"]] == [fx.usd9(r.cost_nano) for r in want]
    gamma = (await http.get("/v1/spend/requests", params={"team": "gamma", "limit": 3})).json()
    want_g = sorted((r for r in RECORDS if r.team == "gamma"), key=lambda r: -r.cost_nano)[:3]
    assert [r["request_id"] for r in gamma["data"]] == [r.request_id for r in want_g]


async def test_latency_percentiles_per_expert(http) -> None:
    body = (await http.get("/v1/spend/latency", params={"to": "2025-03-02"})).json()
    want = fx.latency(fx.select(RECORDS, hi=date(2025, 3, 2)))
    assert [r["expert"] for r in body["data"]] == sorted(want)
    for row in body["data"]:
        w = want[row["expert"]]
        assert (row["p50_ms"], row["p95_ms"], row["samples"]) == (w["p50"], w["p95"], w["samples"])


async def test_budget_burn_after_real_reservations(http, parts) -> None:
    _, keys, limiter = parts
    alpha = await keys.create_key("alpha", budget_usd="2.5", period="month")
    await keys.create_key("beta")  # a team without a budget still shows its spend
    for actual in ("0.4", "0.35"):
        res = await limiter.admit(alpha.info, usd_to_nano("0.5"), 100)
        assert await limiter.settle(res, usd_to_nano(actual), 90)
    pending = await limiter.admit(alpha.info, usd_to_nano("0.125"), 10)  # still in flight
    body = (await http.get("/v1/spend/budgets")).json()
    by_team = {b["team"]: b for b in body["data"]}
    assert set(by_team) == {"alpha", "beta"}
    assert by_team["alpha"]["budget_usd"] == "2.500000000"
    assert by_team["alpha"]["spent_usd"] == "0.750000000"
    assert by_team["alpha"]["in_flight_usd"] == "0.125000000"
    assert by_team["alpha"]["burn"] == 0.3
    assert by_team["beta"]["budget_usd"] is None and by_team["beta"]["burn"] is None
    only = (await http.get("/v1/spend/budgets", params={"team": "alpha"})).json()
    assert [b["team"] for b in only["data"]] == ["alpha"]
    await limiter.settle(pending, 0, 0)


async def test_summary_agrees_with_the_other_routes(http) -> None:
    params = {"from": "2025-03-01", "to": "2025-03-02", "team": "alpha"}
    summary = (await http.get("/v1/spend/summary", params={**params, "limit": 5})).json()
    for dim in ("day", "team", "expert", "domain"):
        rows = (await http.get("/v1/spend", params={**params, "group_by": dim})).json()["data"]
        assert summary[f"by_{dim}"] == rows, dim
    top = (await http.get("/v1/spend/requests", params={**params, "limit": 5})).json()["data"]
    assert summary["top_requests"] == top
    lat = (await http.get("/v1/spend/latency", params=params)).json()["data"]
    assert {r["expert"]: r["p95_ms"] for r in lat} == {
        e: v["p95"] for e, v in summary["latency_ms"].items()
    }
    _check_row(
        summary["total"], fx.total(fx.select(RECORDS, date(2025, 3, 1), date(2025, 3, 2), "alpha"))
    )
    assert summary["teams"] == sorted(fx.TEAMS)  # the filter lists every team, not just alpha


async def test_without_keys_or_limiter(parts) -> None:
    ledger, _, _ = parts
    app = _spend_app(ledger)
    async with _client(app) as client:
        assert (await client.get("/v1/spend/budgets")).json()["data"] == []
        summary = (await client.get("/v1/spend/summary")).json()
        assert summary["budgets"] == [] and summary["teams"] == sorted(fx.TEAMS)


async def test_admin_only_when_auth_is_on(parts) -> None:
    ledger, keys, limiter = parts
    app = _spend_app(ledger, keys, limiter, auth=True)
    admin = await keys.create_key("ops", admin=True)
    user = await keys.create_key("alpha")
    async with _client(app) as client:
        for path in spend_route_paths():
            if path == "/dashboard":
                continue
            resp = await client.get(path)
            assert resp.status_code == 401, path
            assert resp.json()["error"]["type"] == "authentication_error"
            resp = await client.get(path, headers={"authorization": f"Bearer {user.plaintext}"})
            assert resp.status_code == 403, path
            assert resp.json()["error"]["code"] == "admin_key_required"
            resp = await client.get(path, headers={"authorization": f"Bearer {admin.plaintext}"})
            assert resp.status_code == 200, path
        # The page holds no data (its fetches carry the key), so a browser can load it.
        page = await client.get("/dashboard")
        assert page.status_code == 200 and "dashboard.js" in page.text


def _external_urls(text: str) -> list[str]:
    """URLs other than XML namespace names (which are identifiers, never fetched)."""
    urls = re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s\"')]*", text)
    return [u for u in urls if not u.startswith("http://www.w3.org/")]


async def test_dashboard_page_and_assets(http) -> None:
    page = await http.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == DASHBOARD_CSP
    assert _external_urls(page.text) == []
    for name, kind in (("dashboard.js", "javascript"), ("dashboard.css", "css")):
        asset = await http.get(f"/dashboard/{name}")
        assert asset.status_code == 200 and kind in asset.headers["content-type"]
        assert _external_urls(asset.text) == []
    missing = await http.get("/dashboard/secrets.txt")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_routes_mount_on_the_gateway_app(parts) -> None:
    """The lead's create_api app plus our routes: no clashes, the chat route still answers."""
    from experts.registry import build_backend
    from router.config import load_policy
    from router.serving.callers import InProcessExpert
    from router.serving.gateway import Gateway
    from router.serving.http.api import create_api
    from router.serving.http.state import AppState
    from router.serving.service import RouterService
    from tests.doubles import KeywordClassifier

    config = load_policy(Path(__file__).parents[1] / "policies" / "fake.yaml")
    experts = {n: InProcessExpert(build_backend(n, s)) for n, s in config.experts.items()}
    gw = Gateway(RouterService(config, KeywordClassifier({"python": "code"}), experts), experts)
    ledger, keys, limiter = parts
    spend = SpendReader(ledger, keys, limiter)
    app = create_api(AppState(gw, Access(config.gateway.auth), spend=spend))
    async with _client(app) as client:
        spend = (await client.get("/v1/spend", params={"group_by": "domain"})).json()
        assert spend["total"]["cost_nano"] == fx.total(RECORDS).cost_nano
        chat = await client.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": "python please"}]},
        )
        assert chat.status_code == 200
        assert (await client.get("/v1/spend", params={"group_by": "x"})).status_code == 400
