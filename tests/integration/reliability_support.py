"""Helpers for the reliability tests: a closed-loop load of threads, and an OpenAI-compatible
server on loopback that misbehaves on purpose (slow, or 500)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx


@dataclass(frozen=True)
class Result:
    started: float  # monotonic
    latency_s: float
    status: int  # -1: no HTTP answer at all (timeout, connection error)
    expert: str
    retry_after: str | None
    body: Any


class Load:
    """`with Load(url, body) as load:` keeps `concurrency` requests in flight until exit."""

    def __init__(
        self,
        url: str,
        body: Callable[[int], dict[str, Any]],
        *,
        concurrency: int = 4,
        timeout_s: float = 30.0,
    ) -> None:
        self.url = url
        self.body = body
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.results: list[Result] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._n = 0

    def _next(self) -> int:
        with self._lock:
            self._n += 1
            return self._n

    def _worker(self) -> None:
        with httpx.Client(timeout=self.timeout_s) as client:
            while not self._stop.is_set():
                self.results.append(self.one(client, self.body(self._next())))

    def one(self, client: httpx.Client, body: dict[str, Any]) -> Result:
        t0 = time.monotonic()
        try:
            r = client.post(f"{self.url}/v1/chat/completions", json=body)
        except httpx.HTTPError as exc:
            return Result(t0, time.monotonic() - t0, -1, "", None, repr(exc))
        try:
            doc = r.json()
        except ValueError:
            doc = r.text
        return Result(
            t0,
            time.monotonic() - t0,
            r.status_code,
            r.headers.get("x-slm-router-expert", ""),
            r.headers.get("retry-after"),
            doc,
        )

    def __enter__(self) -> Load:
        self._threads = [
            threading.Thread(target=self._worker, daemon=True, name=f"load-{i}")
            for i in range(self.concurrency)
        ]
        for t in self._threads:
            t.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout_s + 5)
        assert not any(t.is_alive() for t in self._threads), "a load thread hung"

    def since(self, t: float) -> list[Result]:
        return [r for r in self.results if r.started >= t]

    def failures(self) -> list[Result]:
        return [r for r in self.results if r.status != 200]


def chat(content: str, model: str = "auto", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


@dataclass
class FaultServer:
    """An OpenAI-compatible server: /slow/v1/... never answers in time, /err/v1/... says 500."""

    port: int
    hold_s: float = 20.0
    calls: dict[str, int] = field(default_factory=lambda: {"slow": 0, "err": 0})
    _server: Any = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def slow(request: Request) -> JSONResponse:
            self.calls["slow"] += 1
            await asyncio.sleep(self.hold_s)
            return JSONResponse({"error": {"message": "too late"}}, status_code=504)

        async def err(request: Request) -> JSONResponse:
            self.calls["err"] += 1
            body = {"error": {"message": "boom", "type": "server_error", "code": None}}
            return JSONResponse(body, status_code=500)

        return Starlette(
            routes=[
                Route("/slow/v1/chat/completions", slow, methods=["POST"]),
                Route("/err/v1/chat/completions", err, methods=["POST"]),
            ]
        )

    def start(self) -> FaultServer:
        import uvicorn

        config = uvicorn.Config(
            self._app(),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            timeout_graceful_shutdown=1,
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="fault-server")
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "fault server did not start"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
            assert not self._thread.is_alive(), "fault server did not stop"
