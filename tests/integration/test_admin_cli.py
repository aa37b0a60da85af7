"""`slm-router keys ...` / `spend report` against a real redis-server (and the embedded one)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from router.finance import access, spend_api
from router.finance.access import Access
from router.finance.keys import KeyStore, hash_key
from router.finance.ledger import Ledger
from router.finance.redis_server import EmbeddedRedis, make_client
from router.finance.spend_api import SpendReader
from router.ops.admin_cli import main
from router.serving.http.api import new_app
from tests.integration import spend_fixtures as fx

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _with_redis(url: str, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        client = make_client(url)
        try:
            return await fn(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def conn(redis_url: str, redis_prefix: str) -> list[str]:
    return ["--redis-url", redis_url, "--prefix", redis_prefix]


def test_create_prints_the_key_once_and_stores_only_its_hash(
    capsys: pytest.CaptureFixture[str], conn: list[str], redis_url: str, redis_prefix: str
) -> None:
    code, out, err = _cli(
        capsys, "keys", "create", "--team", "alpha", "--budget-usd", "12.5",
        "--period", "day", "--rpm", "7", "--tpm", "900", *conn,
    )  # fmt: skip
    assert code == 0
    key = out.strip()
    assert key.startswith("sk-slm-") and "\n" not in key
    assert "alpha" in err and key not in err

    async def check(redis: Any) -> None:
        store = KeyStore(redis, prefix=redis_prefix, cache_ttl_s=0)
        info = await store.authenticate(key)
        assert info is not None
        assert (info.team, info.rpm, info.tpm, info.admin) == ("alpha", 7, 900, False)
        budget = await store.budget("alpha")
        assert budget is not None and (budget.budget_nano, budget.period) == (12_500_000_000, "day")
        values = []
        async for k in redis.scan_iter(f"{redis_prefix}:*"):
            values.append(k)
            if await redis.type(k) == "hash":
                values += list((await redis.hgetall(k)).values())
        assert key not in " ".join(values)
        assert f"{redis_prefix}:key:{hash_key(key)}" in values

    _with_redis(redis_url, check)


def test_list_and_revoke(
    capsys: pytest.CaptureFixture[str], conn: list[str], redis_url: str, redis_prefix: str
) -> None:
    keys = {}
    for team, extra in (("alpha", []), ("beta", ["--admin", "--name", "ops laptop"])):
        code, out, _ = _cli(capsys, "keys", "create", "--team", team, *extra, *conn)
        assert code == 0
        keys[team] = out.strip()
    code, out, _ = _cli(capsys, "keys", "list", "--json", *conn)
    rows = {r["team"]: r for r in json.loads(out)}
    assert set(rows) == {"alpha", "beta"}
    assert rows["beta"]["admin"] is True and rows["beta"]["name"] == "ops laptop"
    assert all(k not in out for k in keys.values())
    code, table, _ = _cli(capsys, "keys", "list", *conn)
    assert rows["alpha"]["key_id"] in table and "ops laptop" in table

    alpha_id = rows["alpha"]["key_id"]
    code, out, _ = _cli(capsys, "keys", "revoke", alpha_id, *conn)
    assert code == 0 and alpha_id in out
    _, out, _ = _cli(capsys, "keys", "list", "--json", *conn)
    assert [r["team"] for r in json.loads(out)] == ["beta"]
    _, out, _ = _cli(capsys, "keys", "list", "--json", "--all", *conn)
    assert {r["team"]: r["revoked"] for r in json.loads(out)} == {"alpha": True, "beta": False}

    async def authenticate(redis: Any) -> Any:
        return await KeyStore(redis, prefix=redis_prefix, cache_ttl_s=0).authenticate(keys["alpha"])

    assert _with_redis(redis_url, authenticate) is None
    code, _, err = _cli(capsys, "keys", "revoke", "key_nope", *conn)
    assert code == 1 and "key_nope" in err


def test_budget_set_and_clear(
    capsys: pytest.CaptureFixture[str], conn: list[str], redis_url: str, redis_prefix: str
) -> None:
    code, out, _ = _cli(capsys, "keys", "budget", "--team", "gamma", "--budget-usd", "0.1", *conn)
    assert code == 0 and "0.1" in out

    async def budget(redis: Any) -> Any:
        return await KeyStore(redis, prefix=redis_prefix).budget("gamma")

    assert _with_redis(redis_url, budget).budget_nano == 100_000_000
    code, out, _ = _cli(capsys, "keys", "budget", "--team", "gamma", "--clear", *conn)
    assert code == 0 and _with_redis(redis_url, budget) is None


@pytest.mark.parametrize(
    "argv",
    [
        ["keys", "create", "--team", "a", "--budget-usd", "-1"],
        ["keys", "create", "--team", "a", "--budget-usd", "lots"],
        ["keys", "create", "--team", "a", "--rpm", "-3"],
        ["keys", "create", "--team", "a", "--period", "week"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


RECORDS = fx.make_records(150, seed=33, prefix="cli-")


@pytest.fixture
def ledger_data(redis_url: str, redis_prefix: str, tmp_path: Path) -> None:
    async def write(redis: Any) -> None:
        ledger = Ledger(redis_url, tmp_path / "spool.jsonl", prefix=redis_prefix, client=redis)
        for rec in RECORDS:
            await ledger.write(rec)

    _with_redis(redis_url, write)


def _table(text: str) -> dict[str, list[str]]:
    """The fixed-width report -> {first cell: cells} (header, rows and TOTAL)."""
    lines = [line for line in text.splitlines() if line and not line.startswith("-")]
    return {line.split()[0]: line.split() for line in lines}


@pytest.mark.usefixtures("ledger_data")
def test_spend_report_table_is_exact(capsys: pytest.CaptureFixture[str], conn: list[str]) -> None:
    code, out, _ = _cli(
        capsys, "spend", "report", "--group-by", "expert", "--from", "2025-03-02", *conn
    )
    assert code == 0
    table = _table(out)
    cost_col = table["expert"].index("cost_usd")
    mine = fx.select(RECORDS, lo=date(2025, 3, 2))
    for expert, sums in fx.group(mine, "expert").items():
        assert table[expert][cost_col] == fx.usd9(sums.cost_nano)
        assert int(table[expert][1]) == sums.requests
    total = fx.total(mine)
    assert table["TOTAL"][cost_col] == fx.usd9(total.cost_nano)
    assert int(table["TOTAL"][1]) == total.requests


@pytest.mark.usefixtures("ledger_data")
def test_spend_report_csv_equals_the_api(
    capsys: pytest.CaptureFixture[str],
    conn: list[str],
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    params = {"group_by": "day,team", "to": "2025-03-02", "team": "beta"}
    code, out, _ = _cli(
        capsys, "spend", "report", "--group-by", "day,team", "--to", "2025-03-02",
        "--team", "beta", "--csv", *conn,
    )  # fmt: skip
    assert code == 0

    async def api(redis: Any) -> str:
        app = new_app()
        ledger = Ledger(redis_url, tmp_path / "spool.jsonl", prefix=redis_prefix, client=redis)
        access.install(app, Access(auth=False))
        spend_api.install(app, SpendReader(ledger, None, None))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return (await client.get("/v1/spend.csv", params=params)).text

    assert out == _with_redis(redis_url, api)
    rows = list(csv.DictReader(io.StringIO(out)))
    mine = fx.select(RECORDS, hi=date(2025, 3, 2), team="beta")
    assert sum(Decimal(r["cost_usd"]) for r in rows) * 10**9 == fx.total(mine).cost_nano


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--group-by", "model"], "group_by"),
        (["--from", "2025-02-30"], "ISO"),
        (["--from", "2025-03-04", "--to", "2025-03-01"], "after"),
    ],
)
def test_spend_report_bad_input(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], conn: list[str]
) -> None:
    code, _, err = _cli(capsys, "spend", "report", *argv, *conn)
    assert code == 2 and needle in err


def test_embedded_server_is_found_or_started(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No URL: the CLI uses the gateway's embedded server, or runs one just for the command."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    data_dir = tmp_path / "xdg" / "slm-router" / "redis"

    # Nothing running: the command starts the server, writes, and stops it again.
    code, out, _ = _cli(capsys, "keys", "create", "--team", "solo")
    assert code == 0
    first_key = out.strip()
    assert not (data_dir / "embedded.json").exists()  # stopped: it was ours

    # The gateway's server (what `slm-router serve` starts without REDIS_URL) is reused live.
    gateway = EmbeddedRedis()
    url = gateway.start()
    try:
        assert gateway.data_dir == data_dir
        code, out, _ = _cli(capsys, "keys", "create", "--team", "live")
        second_key = out.strip()

        async def teams(redis: Any) -> tuple[list[str], Any, Any]:
            store = KeyStore(redis, cache_ttl_s=0)
            first = await store.authenticate(first_key)  # persisted by the earlier run
            second = await store.authenticate(second_key)
            return await store.teams(), first, second

        names, first, second = _with_redis(url, teams)
        assert names == ["live", "solo"]
        assert first.team == "solo" and second.team == "live"
        assert gateway.running  # the CLI did not stop the gateway's server
    finally:
        gateway.stop()


def test_module_entry_point_prints_only_the_key(redis_url: str, redis_prefix: str) -> None:
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "router.ops.admin_cli", "keys", "create", "--team", "sub",
         "--prefix", redis_prefix],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1 and proc.stdout.startswith("sk-slm-")
