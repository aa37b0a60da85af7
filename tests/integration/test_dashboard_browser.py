"""The finance dashboard in a real headless Chromium: what it renders equals what the API says.

Known traffic goes into a real Redis (ledger records, keys, budget reservations); the app runs
under uvicorn on a loopback port; Debian's `chromium`, driven by Playwright (no browser download:
`executable_path`), loads /dashboard. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from router.finance import access, spend_api
from router.finance.access import Access
from router.finance.budgets import Limiter
from router.finance.costs import usd_to_nano
from router.finance.keys import KeyStore
from router.finance.ledger import Ledger
from router.finance.redis_server import EmbeddedRedis, make_client
from router.finance.spend_api import SpendReader
from router.serving.http.api import new_app
from tests.integration import spend_fixtures as fx

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEY_STORE = "slm-router-admin-key"
RECORDS = fx.make_records(240, seed=21, prefix="req-")


def _chromium() -> str | None:
    return shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine on a loop of its own, whatever loop the test runner holds."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(asyncio.run(make())))
    t.start()
    t.join()
    return out[0]


@dataclass(frozen=True)
class Served:
    url: str
    admin_key: str
    user_key: str

    def api(self, path: str, **params: str) -> Any:
        resp = httpx.get(
            f"{self.url}{path}",
            params=params,
            headers={"authorization": f"Bearer {self.admin_key}"},
            timeout=10,
        )
        resp.raise_for_status()
        return resp.json()


async def _seed(url: str, prefix: str, spool: Path) -> tuple[str, str]:
    redis = make_client(url)
    ledger = Ledger(url, spool, prefix=prefix, client=redis)
    for rec in RECORDS:
        await ledger.write(rec)
    keys = KeyStore(redis, prefix=prefix)
    limiter = Limiter(redis, prefix=prefix)
    admin = await keys.create_key("finance", admin=True)
    alpha = await keys.create_key("alpha", budget_usd="2.5", period="month")
    beta = await keys.create_key("beta", budget_usd="1", period="day")
    gamma = await keys.create_key("gamma", budget_usd="0.5", period="month")
    for key, spends in ((alpha, ("0.4", "0.35")), (beta, ("0.9",)), (gamma, ("0.3", "0.3"))):
        for usd in spends:
            res = await limiter.admit(key.info, usd_to_nano(usd), 100)
            await limiter.settle(res, usd_to_nano(usd), 100)
    await limiter.admit(beta.info, usd_to_nano("0.05"), 10)  # left in flight on purpose
    await redis.aclose()
    return admin.plaintext, alpha.plaintext


def _app(url: str, prefix: str, spool: Path) -> FastAPI:
    redis = make_client(url)  # connects lazily, on uvicorn's loop
    keys = KeyStore(redis, prefix=prefix)
    app = new_app()
    access.install(app, Access(auth=True, keys=keys))
    ledger = Ledger(url, spool, prefix=prefix, client=redis)
    spend_api.install(app, SpendReader(ledger, keys, Limiter(redis, prefix=prefix)))
    _add_router_status(app)
    return app


def _add_router_status(app: FastAPI) -> None:
    """The gateway always serves /v1/router/status, which the dashboard's classifier panel reads."""
    from router.config import load_policy
    from router.continuous import status_api
    from router.continuous.live import Continuous
    from tests.doubles import KeywordClassifier

    config = load_policy(Path(__file__).parent.parent / "policies" / "fake.yaml")
    status_api.install(app, Continuous(config, KeywordClassifier({})))


@pytest.fixture(scope="module")
def served(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    import uvicorn

    prefix = f"dash{uuid.uuid4().hex[:8]}"
    spool = tmp_path_factory.mktemp("dash") / "spool.jsonl"
    admin, user = _run(lambda: _seed(redis_server.url, prefix, spool))
    port = _free_port()
    config = uvicorn.Config(
        _app(redis_server.url, prefix, spool),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield Served(f"http://127.0.0.1:{port}", admin, user)
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    binary = _chromium()
    if binary is None:
        pytest.skip("no chromium binary (apt-get install chromium; scripts/test.sh does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=binary,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
            accept_downloads=True,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context: Any, served: Served) -> Iterator[Any]:
    """A tab that already holds the admin key (as the unlock form would store it)."""
    page = browser_context.new_page()
    page.add_init_script(f"sessionStorage.setItem({KEY_STORE!r}, {served.admin_key!r})")
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    foreign: list[str] = []
    page.on(
        "request",
        lambda r: (
            None if r.url.startswith((served.url, "blob:", "data:")) else foreign.append(r.url)
        ),
    )
    yield page
    page.close()
    assert foreign == [], f"the dashboard fetched outside its origin: {foreign}"
    assert problems == [], f"browser errors: {problems}"


# ---- reading what the page shows -------------------------------------------------------------


def _plain(usd: str) -> str:
    """An API money string digit for digit, in plain notation ("5E-9" -> "0.000000005")."""
    return f"{Decimal(usd):f}"


def _money(text: str) -> str:
    return text.strip().replace("$", "").replace(",", "")


def _int(text: str) -> int:
    return int(text.strip().replace(",", ""))


def _wait_loaded(page: Any, after: int = 0) -> None:
    page.wait_for_function(
        "n => { const m = document.querySelector('#main');"
        " return Number(m.dataset.loads || 0) > n && m.dataset.state !== 'loading'; }",
        arg=after,
    )
    state = page.get_attribute("#main", "data-state")
    assert state == "ready", page.text_content("#error")


def _loads(page: Any) -> int:
    return int(page.get_attribute("#main", "data-loads") or 0)


def _rows(page: Any, testid: str, *cells: str) -> dict[str, tuple[str, ...]]:
    """{data-key: (text of each named cell)} for every row with this data-testid."""
    return page.eval_on_selector_all(
        f"[data-testid={testid}]",
        """(rows, cells) => Object.fromEntries(rows.map(r => [r.dataset.key,
            cells.map(c => r.querySelector(`[data-testid=${c}]`).textContent)]))""",
        list(cells),
    )


def _text(page: Any, testid: str) -> str:
    return page.text_content(f"[data-testid={testid}]") or ""


def _check_against_api(page: Any, served: Served, params: dict[str, str]) -> dict[str, Any]:
    """Every figure on the page equals the corresponding spend-API figure."""
    spend = {
        dim: served.api("/v1/spend", group_by=dim, **params)
        for dim in ("day", "team", "expert", "domain")
    }
    total = spend["team"]["total"]
    assert _money(_text(page, "total-cost")) == _plain(total["cost_usd"])
    assert _money(_text(page, "total-baseline")) == _plain(total["baseline_usd"])
    assert _money(_text(page, "total-savings")) == _plain(total["savings_usd"])
    assert _text(page, "total-savings-pct") == f"{total['savings_pct']}%"
    assert _int(_text(page, "total-requests")) == total["requests"]
    assert _int(_text(page, "total-errors")) == total["errors"]
    assert _int(_text(page, "total-input-tokens")) == total["input_tokens"]
    assert _int(_text(page, "total-output-tokens")) == total["output_tokens"]
    assert float(_text(page, "total-mean-latency")) == total["mean_latency_ms"]
    for dim in ("team", "expert", "domain"):
        shown = _rows(page, f"{dim}-row", f"{dim}-cost", f"{dim}-requests", f"{dim}-savings")
        want = {
            r[dim]: (_plain(r["cost_usd"]), r["requests"], _plain(r["savings_usd"]))
            for r in spend[dim]["data"]
        }
        got = {k: (_money(c), _int(n), _money(s)) for k, (c, n, s) in shown.items()}
        assert got == want, dim
    days = _rows(page, "day-row", "day-cost", "day-baseline", "day-requests")
    assert {k: (_money(c), _money(b), _int(n)) for k, (c, b, n) in days.items()} == {
        r["day"]: (_plain(r["cost_usd"]), _plain(r["baseline_usd"]), r["requests"])
        for r in spend["day"]["data"]
    }
    top = served.api("/v1/spend/requests", limit="20", **params)["data"]
    shown_top = page.eval_on_selector_all(
        "[data-testid=top-row]",
        "rows => rows.map(r => [r.dataset.key,"
        " r.querySelector('[data-testid=top-cost]').textContent])",
    )
    assert [(k, _money(c)) for k, c in shown_top] == [
        (r["request_id"], _plain(r["cost_usd"])) for r in top
    ]
    lat = served.api("/v1/spend/latency", **{k: v for k, v in params.items() if k != "team"})
    shown_lat = _rows(page, "latency-row", "latency-p50", "latency-p95", "latency-samples")
    assert {k: (float(a), float(b), _int(n)) for k, (a, b, n) in shown_lat.items()} == {
        r["expert"]: (r["p50_ms"], r["p95_ms"], r["samples"]) for r in lat["data"]
    }
    return spend


# ---- the tests ---------------------------------------------------------------------------------


def test_rendered_numbers_equal_the_spend_api(page: Any, served: Served) -> None:
    page.goto(f"{served.url}/dashboard")
    _wait_loaded(page)
    spend = _check_against_api(page, served, {})
    # And the API itself against sums computed here from the records we wrote.
    want = fx.total(RECORDS)
    assert spend["team"]["total"]["cost_nano"] == want.cost_nano
    assert _money(_text(page, "total-cost")) == fx.usd9(want.cost_nano)
    assert _money(_text(page, "total-savings")) == fx.usd9(want.savings_nano)

    budgets = {b["team"]: b for b in served.api("/v1/spend/budgets")["data"]}
    shown = _rows(
        page, "budget-row", "budget-spent", "budget-limit", "budget-inflight", "budget-burn"
    )
    assert set(shown) == set(budgets) == {"finance", "alpha", "beta", "gamma"}
    for team, (spent, limit, inflight, burn) in shown.items():
        b = budgets[team]
        assert _money(spent) == _plain(b["spent_usd"])
        assert _money(inflight) == _plain(b["in_flight_usd"])
        if b["budget_usd"] is None:
            assert limit == "no budget" and burn == "—"
        else:
            assert _money(limit) == _plain(b["budget_usd"])
            assert burn == f"{b['burn'] * 100:.2f}%"
    assert shown["alpha"][3] == "30.00%" and shown["gamma"][3] == "120.00%"
    assert _money(shown["beta"][2]) == "0.050000000"
    assert "over" in (
        page.get_attribute("[data-testid=budget-row][data-key=gamma] .fill", "class") or ""
    )

    options = page.eval_on_selector_all("#f-team option", "os => os.map(o => o.value)")
    assert options == ["", "alpha", "beta", "finance", "gamma"]
    assert page.locator("#chart-day svg rect.bar").count() == 4  # 03-01..03-04, 03-03 empty
    assert page.locator("#chart-latency svg rect").count() == 2 * len(fx.EXPERTS)
    page.click("details summary")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)


def test_filters_change_the_numbers(page: Any, served: Served) -> None:
    page.goto(f"{served.url}/dashboard")
    _wait_loaded(page)
    everything = _money(_text(page, "total-cost"))

    before = _loads(page)
    page.select_option("#f-team", "beta")  # a change reloads at once
    _wait_loaded(page, before)
    _check_against_api(page, served, {"team": "beta"})
    beta = fx.total(fx.select(RECORDS, team="beta"))
    assert _money(_text(page, "total-cost")) == fx.usd9(beta.cost_nano) != everything
    assert list(_rows(page, "team-row")) == ["beta"]
    assert list(_rows(page, "budget-row")) == ["beta"]

    before = _loads(page)
    page.fill("#f-from", "2025-03-02")
    page.fill("#f-to", "2025-03-04")
    page.click("#f-apply")
    _wait_loaded(page, before)
    params = {"from": "2025-03-02", "to": "2025-03-04", "team": "beta"}
    _check_against_api(page, served, params)
    mine = fx.select(RECORDS, date(2025, 3, 2), date(2025, 3, 4), "beta")
    assert _money(_text(page, "total-cost")) == fx.usd9(fx.total(mine).cost_nano)
    assert _int(_text(page, "total-requests")) == len(mine)
    assert sorted(_rows(page, "day-row")) == sorted({r.day for r in mine})
    assert "from=2025-03-02" in page.url and "team=beta" in page.url
    page.screenshot(path=str(ARTIFACTS / "dashboard-filtered.png"), full_page=True)

    # The filters live in the URL: a reload (or a shared link) shows the same figures.
    page.reload()
    _wait_loaded(page)
    assert page.input_value("#f-team") == "beta"
    assert _money(_text(page, "total-cost")) == fx.usd9(fx.total(mine).cost_nano)

    before = _loads(page)
    page.click("#f-reset")
    _wait_loaded(page, before)
    assert _money(_text(page, "total-cost")) == everything


def test_csv_download_matches_the_api(page: Any, served: Served, tmp_path: Path) -> None:
    page.goto(f"{served.url}/dashboard?team=alpha")
    _wait_loaded(page)
    with page.expect_download() as info:
        page.click("[data-testid=csv-download]")
    download = info.value
    assert download.suggested_filename == "spend-day-team-expert-domain-alpha.csv"
    target = tmp_path / "spend.csv"
    download.save_as(target)
    lines = target.read_text().splitlines()
    assert lines[0].startswith("day,team,expert,domain,requests")
    total = sum(Decimal(line.split(",")[8]) for line in lines[1:])
    assert total == Decimal(fx.total(fx.select(RECORDS, team="alpha")).cost_nano) / 10**9


def test_admin_key_is_asked_for_and_checked(browser_context: Any, served: Served) -> None:
    page = browser_context.new_page()  # no key in this tab
    try:
        page.goto(f"{served.url}/dashboard")
        page.wait_for_selector("[data-testid=auth-panel]", state="visible")
        assert page.get_attribute("#main", "data-state") == "error"
        before = _loads(page)
        page.fill("[data-testid=auth-key]", served.user_key)  # a valid key, but not an admin's
        page.click("[data-testid=auth-submit]")
        page.wait_for_function(
            "n => Number(document.querySelector('#main').dataset.loads) > n", arg=before
        )
        assert "admin" in _text(page, "auth-error")
        before = _loads(page)
        page.fill("[data-testid=auth-key]", served.admin_key)
        page.click("[data-testid=auth-submit]")
        _wait_loaded(page, before)
        assert page.is_hidden("[data-testid=auth-panel]")
        assert _money(_text(page, "total-cost")) == fx.usd9(fx.total(RECORDS).cost_nano)
    finally:
        page.close()
