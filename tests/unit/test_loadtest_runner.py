"""The runner and CLI against a real OpenAI-compatible server on 127.0.0.1 (FastAPI + uvicorn).

The server plays a gateway: it sets the routing headers, keeps a spend total, answers Serve's
status API, and fails on purpose for some prompts, so counts, error types, header mix and the
spend difference are checked end to end.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from loadtest import cli
from loadtest.arrivals import poisson_arrivals
from loadtest.config import LoadConfig, constant_profile
from loadtest.runner import run_load
from loadtest.workload import WorkItem

PRICE_PER_REQUEST = 0.002
ROUTES = {"code": ("coder", "code"), "math": ("mathy", "math")}


class FakeGateway:
    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.spend_usd = 0.0
        self.served = 0
        self.app = self._build()

    def _route(self, text: str) -> tuple[str, str]:
        return ROUTES.get(text.split(":", 1)[0], ("general", "general"))

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = await request.json()
            text = body["messages"][-1]["content"]
            self.received[text] += 1
            if text.startswith("boom"):
                return JSONResponse({"error": {"message": "x", "type": "server_error"}}, 500)
            if text.startswith("busy"):
                return JSONResponse({"error": {"message": "x", "type": "rate_limit"}}, 429)
            if text.startswith("slow"):
                await asyncio.sleep(1.0)
            expert, domain = self._route(text)
            headers = {"x-slm-router-expert": expert, "x-slm-router-domain": domain}
            self.served += 1
            self.spend_usd += PRICE_PER_REQUEST
            usage = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
            if body.get("stream"):
                return StreamingResponse(
                    self._sse(body, usage), media_type="text/event-stream", headers=headers
                )
            msg = {"role": "assistant", "content": "hello"}
            return JSONResponse(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "model": expert,
                    "usage": usage,
                    "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}],
                },
                headers=headers,
            )

        @app.get("/v1/spend")
        async def spend() -> Any:
            return {
                "group_by": "team",
                "rows": [{"team": "t", "cost_usd": self.spend_usd, "requests": self.served}],
            }

        @app.get("/api/serve/applications/")
        async def serve_status() -> Any:
            coder = 1 + min(self.served // 10, 2)
            reps = [{"state": "RUNNING"}] * coder + [{"state": "STARTING"}]
            return {
                "applications": {
                    "slm": {
                        "deployments": {
                            "coder": {"target_num_replicas": coder + 1, "replicas": reps},
                            "general": {
                                "target_num_replicas": 1,
                                "replicas": [{"state": "RUNNING"}],
                            },
                        }
                    }
                }
            }

        return app

    async def _sse(self, body: dict[str, Any], usage: dict[str, int]) -> AsyncIterator[str]:
        for piece in ("hel", "lo"):
            await asyncio.sleep(0.01)
            yield "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": piece}}]})
            yield "\n\n"
        if (body.get("stream_options") or {}).get("include_usage"):
            yield "data: " + json.dumps({"choices": [], "usage": usage}) + "\n\n"
        yield "data: [DONE]\n\n"


@pytest.fixture()
def gateway() -> Iterator[tuple[FakeGateway, str]]:
    fake = FakeGateway()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(fake.app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "test server did not start"
    yield fake, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def items(*texts: str) -> list[WorkItem]:
    return [
        WorkItem(messages=({"role": "user", "content": t},), domain=t.split(":")[0]) for t in texts
    ]


def closed(url: str, **kw: Any) -> LoadConfig:
    base: dict[str, Any] = {
        "url": url,
        "mode": "closed",
        "concurrency": 2,
        "duration_s": 20.0,
        "max_requests": 20,
        "timeout_s": 5.0,
    }
    return LoadConfig(**{**base, **kw})


async def test_closed_loop_counts_errors_and_routing(gateway: tuple[FakeGateway, str]) -> None:
    fake, url = gateway
    work = items("code: sort a list", "math: 2+2", "boom", "busy", "hello")
    result = await run_load(closed(url, max_requests=20), work, progress=None)
    recs = result.records
    assert len(recs) == 20 and result.stopped_by == "max_requests"
    assert sum(fake.received.values()) == 20
    assert all(n == 4 for n in fake.received.values())  # round robin over the 5 prompts
    assert Counter(r.error for r in recs) == {None: 12, "http_500": 4, "http_429": 4}
    assert Counter(r.expert for r in recs if r.ok) == {"coder": 4, "mathy": 4, "general": 4}
    assert Counter(r.domain for r in recs if r.ok) == {"code": 4, "math": 4, "general": 4}
    assert all(r.completion_tokens == 5 for r in recs if r.ok)
    # spend API: before 0, after 12 served requests
    assert result.spend_before is not None and result.spend_before.cost_usd == 0
    assert result.spend_after is not None
    assert result.spend_after.cost_usd == pytest.approx(12 * PRICE_PER_REQUEST)
    assert result.spend_after.requests == 12


async def test_timeouts_and_connection_errors(gateway: tuple[FakeGateway, str]) -> None:
    _, url = gateway
    cfg = closed(url, max_requests=4, timeout_s=0.3, spend=False)
    t0 = time.perf_counter()
    result = await run_load(cfg, items("slow", "hello"), progress=None)
    assert Counter(r.error for r in result.records) == {"timeout": 2, None: 2}
    assert all(0.3 <= r.latency_s < 1.5 for r in result.records if r.error == "timeout")
    assert time.perf_counter() - t0 < 5
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: refused
        down = await run_load(closed(dead, max_requests=3), items("hello"), progress=None)
    assert [r.error for r in down.records] == ["connection"] * 3
    assert down.spend_before is None


async def test_streaming_records_ttft_and_usage(gateway: tuple[FakeGateway, str]) -> None:
    _, url = gateway
    cfg = closed(url, max_requests=6, stream=True, spend=False)
    result = await run_load(cfg, items("code: a", "hello", "boom"), progress=None)
    ok = [r for r in result.records if r.ok]
    assert len(ok) == 4 and Counter(r.error for r in result.records)["http_500"] == 2
    for r in ok:
        assert r.ttft_s is not None and 0.005 < r.ttft_s < r.latency_s
        assert (r.prompt_tokens, r.completion_tokens) == (3, 5)
    assert {r.expert for r in ok} == {"coder", "general"}


async def test_open_loop_rate_and_hard_cap(gateway: tuple[FakeGateway, str]) -> None:
    fake, url = gateway
    cfg = LoadConfig(
        url=url,
        mode="open",
        profile=constant_profile(100, 1.0),
        duration_s=1.0,
        max_requests=10_000,
        spend=False,
    )
    result = await run_load(cfg, items("hello"), progress=None)
    # The arrivals are seeded, so their number is exact; a busy CI machine can only delay
    # sends, never add or drop them (wall-clock bounds here were flaky under load).
    planned = poisson_arrivals(cfg.profile, random.Random(cfg.seed), cfg.max_requests)
    n = len(result.records)
    assert n == len(planned) and 50 < n < 150  # Poisson(100): sd 10
    assert fake.received["hello"] == n and all(r.ok for r in result.records)
    starts = sorted(r.start_s for r in result.records)
    assert all(s >= at - 1e-3 for s, at in zip(starts, planned, strict=True))  # never early
    assert result.stopped_by == "duration"
    capped = LoadConfig(
        url=url,
        mode="open",
        profile=constant_profile(500, 60.0),
        duration_s=60.0,
        max_requests=25,
        spend=False,
    )
    t0 = time.perf_counter()
    result = await run_load(capped, items("hello"), progress=None)
    assert len(result.records) == 25 and result.stopped_by == "max_requests"
    assert time.perf_counter() - t0 < 30  # far below the 60 s profile it was cut from


async def test_open_loop_sheds_beyond_max_in_flight(gateway: tuple[FakeGateway, str]) -> None:
    fake, url = gateway
    cfg = LoadConfig(
        url=url,
        mode="open",
        profile=constant_profile(200, 0.3),
        duration_s=0.3,
        max_requests=10_000,
        spend=False,
        max_in_flight=4,
        timeout_s=5.0,
    )
    result = await run_load(cfg, items("slow"), progress=None)
    errors = Counter(r.error for r in result.records)
    assert errors[None] == 4 == fake.received["slow"]  # the slow ones hold every slot
    assert errors["client_overload"] == len(result.records) - 4 > 20


async def test_closed_loop_stops_at_duration(gateway: tuple[FakeGateway, str]) -> None:
    _, url = gateway
    cfg = closed(url, duration_s=0.5, max_requests=1_000_000, spend=False)
    t0 = time.perf_counter()
    result = await run_load(cfg, items("hello"), progress=None)
    assert result.stopped_by == "duration" and len(result.records) > 5
    assert time.perf_counter() - t0 < 3


def test_cli_writes_reports(gateway: tuple[FakeGateway, str], tmp_path: Path) -> None:
    fake, url = gateway
    workload = tmp_path / "w.jsonl"
    workload.write_text(
        "\n".join(
            json.dumps({"prompt": p, "domain": p.split(":")[0]})
            for p in ("code: x", "math: y", "hello", "boom")
        )
        + "\n"
    )
    out = tmp_path / "out"
    rc = cli.main(
        [
            "--url",
            url,
            "--workload",
            str(workload),
            "--concurrency",
            "2",
            "--max-requests",
            "40",
            "--duration",
            "20",
            "--serve-status-url",
            url,
            "--poll-interval",
            "0.05",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["requests"] == 40 and rep["errors_by_type"] == {"http_500": 10}
    assert rep["routing"]["by_expert"] == {"coder": 10, "general": 10, "mathy": 10}
    assert rep["routing"]["workload_vs_routed_domain"]["code"] == {"code": 10}
    assert rep["cost"]["per_1k_requests_usd"] == pytest.approx(PRICE_PER_REQUEST * 1000)
    assert rep["cost"]["ledger_requests_delta"] == 30
    assert rep["replicas"]["available"] and rep["replicas"]["range"]["general"] == {
        "min": 1,
        "max": 1,
    }
    assert rep["replicas"]["range"]["coder"]["max"] > rep["replicas"]["range"]["coder"]["min"]
    assert sum(fake.received.values()) == 40
    md = (out / "report.md").read_text()
    assert "| coder | 10 | 33.3% |" in md and "$2.000000" in md
    for png in ("latency_over_time.png", "replicas_over_time.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ctrl_c_still_writes_a_report(gateway: tuple[FakeGateway, str], tmp_path: Path) -> None:
    _, url = gateway
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "loadtest",
        "--url",
        url,
        "--concurrency",
        "2",
        "--duration",
        "60",
        "--no-spend",
        "--serve-status-url",
        "none",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "sent" not in (proc.stderr.read(64) or ""):  # type: ignore[union-attr]
            pass
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["stopped_by"] == "interrupted" and rep["ok"] > 0 and rep["elapsed_s"] < 30


def test_cli_rejects_bad_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--url", "ftp://x", "--out", str(tmp_path)]) == 2
    assert cli.main(["--serve-status-url", "http://example.com:8265", "--out", str(tmp_path)]) == 2
    assert cli.main(["--profile", "step:oops", "--out", str(tmp_path)]) == 2
    assert cli.main(["--workload", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path)]) == 2
    assert "loadtest:" in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()
