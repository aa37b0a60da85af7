"""The overhead benchmark's parts: the instant backend, the RPS search, the comparison."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from loadtest import backend
from loadtest.gateways import (
    litellm_config,
    slm_router_policy_yaml,
    start_backend,
)
from loadtest.overhead import (
    Settings,
    StepResult,
    Target,
    compare,
    measure_latency,
    render_table,
    search_max_rps,
)
from loadtest.workload import builtin_workload


def _split(resp: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = resp.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return lines[0], headers, body


def test_backend_answers_chat_completions() -> None:
    req = {"model": "m", "messages": [{"role": "user", "content": "one two three"}]}
    status, headers, body = _split(
        backend.route("POST", "/v1/chat/completions", json.dumps(req).encode())
    )
    assert status == "HTTP/1.1 200 OK" and int(headers["content-length"]) == len(body)
    doc = json.loads(body)
    assert doc["model"] == "m" and doc["choices"][0]["message"]["content"] == backend.REPLY
    assert doc["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}


def test_backend_streams_with_usage_and_done() -> None:
    req = {
        "model": "m",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "a b"}],
    }
    _, headers, body = _split(
        backend.route("POST", "/v1/chat/completions", json.dumps(req).encode())
    )
    assert headers["content-type"] == "text/event-stream"
    events = [e.removeprefix("data: ") for e in body.decode().split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert (
        "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        == backend.REPLY
    )
    assert chunks[-1]["usage"]["prompt_tokens"] == 2
    no_usage = dict(req, stream_options={})
    _, _, body = _split(
        backend.route("POST", "/v1/chat/completions", json.dumps(no_usage).encode())
    )
    assert b'"usage"' not in body


def test_backend_errors() -> None:
    assert _split(backend.route("GET", "/nope", b""))[0].startswith("HTTP/1.1 404")
    assert _split(backend.route("POST", "/v1/chat/completions", b"{bad"))[0].startswith(
        "HTTP/1.1 400"
    )
    assert _split(backend.route("POST", "/v1/chat/completions", b"[1]"))[0].startswith(
        "HTTP/1.1 400"
    )
    assert _split(backend.route("GET", "/health", b""))[0] == "HTTP/1.1 200 OK"


def test_backend_process_serves_keepalive_and_stops() -> None:
    started = start_backend()
    try:
        with httpx.Client(base_url=started.url, trust_env=False) as client:
            for _ in range(3):  # one connection, several requests
                r = client.post("/v1/chat/completions", json={"messages": []})
                assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 1
        result = measure_latency(
            Target("direct", started.url, "instant"), builtin_workload(), concurrency=2, seconds=0.3
        )
        assert result["errors"] == 0 and result["requests"] > 10
        assert 0 < result["p50_ms"] <= result["p99_ms"] < 1000
    finally:
        started.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(started.url + "/health", trust_env=False)


def test_search_max_rps_doubles_then_bisects() -> None:
    capacity = 300.0

    def probe(rps: float) -> StepResult:  # a server that keeps up to its capacity
        ok = rps <= capacity
        return StepResult(rps, rps if ok else capacity, 5.0 if ok else 900.0, 0, ok)

    s = Settings(start_rps=25, refine_steps=2, max_rps_cap=5000, retries=0)
    out = search_max_rps(probe, s)
    offered = [st["offered_rps"] for st in out["steps"]]
    # 25, 50, 100, 200 pass; 400 fails; 300 passes; 350 fails
    assert offered == [25, 50, 100, 200, 400, 300, 350]
    assert out["max_rps"] == 300
    # with a retry, each failing rate is probed twice
    retried = search_max_rps(probe, Settings(start_rps=25, refine_steps=2, max_rps_cap=5000))
    assert [st["offered_rps"] for st in retried["steps"]] == [
        25,
        50,
        100,
        200,
        400,
        400,
        300,
        350,
        350,
    ]
    assert retried["max_rps"] == 300
    flaky = iter([True, False, True, False, False])  # 10 ok; 20 fails then passes; 40 fails twice
    out = search_max_rps(
        lambda r: StepResult(r, r, 1.0, 0, next(flaky)),
        Settings(start_rps=10, refine_steps=0, max_rps_cap=1000),
    )
    assert out["max_rps"] == 20 and len(out["steps"]) == 5
    assert search_max_rps(lambda r: StepResult(r, 0, None, 3, False), s)["max_rps"] == 0
    capped = search_max_rps(
        lambda r: StepResult(r, r, 1.0, 0, True), Settings(start_rps=10, max_rps_cap=80)
    )
    assert capped["max_rps"] == 80 and len(capped["steps"]) == 4


def test_compare_adds_and_ratios() -> None:
    results = {
        "direct": {
            "available": True,
            "p50_ms": 1.0,
            "p99_ms": 4.0,
            "max_rps": 400.0,
            "loaded_p50_ms": 2.0,
            "loaded_p99_ms": 8.0,
        },
        "slm_router": {
            "available": True,
            "p50_ms": 9.0,
            "p99_ms": 20.0,
            "max_rps": 120.0,
            "loaded_p50_ms": 30.0,
            "loaded_p99_ms": 60.0,
        },
        "litellm_proxy": {
            "available": True,
            "p50_ms": 14.0,
            "p99_ms": 28.0,
            "max_rps": 60.0,
            "loaded_p50_ms": 100.0,
            "loaded_p99_ms": 200.0,
        },
    }
    c = compare(results)
    assert c["added"]["slm_router"] == {
        "p50_ms": 8.0,
        "p99_ms": 16.0,
        "loaded_p50_ms": 28.0,
        "loaded_p99_ms": 52.0,
    }
    assert c["added"]["litellm_proxy"]["p50_ms"] == 13.0
    assert c["ratios"]["slm_vs_litellm_added_p50"] == pytest.approx(8 / 13, abs=1e-3)
    assert c["ratios"]["slm_vs_litellm_rps"] == 2.0
    assert c["ratios"]["slm_router_vs_direct_rps"] == 0.3
    assert c["slm_router_no_worse_than_litellm"] is True
    results["slm_router"]["max_rps"] = 50.0
    assert compare(results)["slm_router_no_worse_than_litellm"] is False
    results["slm_router"] = {"available": False, "reason": "not started"}
    c = compare(results)
    assert "slm_router" not in c["added"] and c["slm_router_no_worse_than_litellm"] is None
    table = render_table({**results, "slm_router": {"available": False, "reason": "down"}}, c)
    assert "unavailable: down" in table and "13.0" in table


def test_generated_configs_are_valid_yaml(tmp_path: Path) -> None:
    lite = yaml.safe_load(litellm_config("http://127.0.0.1:9"))
    assert lite["model_list"][0]["litellm_params"]["api_base"] == "http://127.0.0.1:9/v1"
    assert lite["general_settings"]["master_key"].startswith("sk-")
    doc = yaml.safe_load(slm_router_policy_yaml("http://127.0.0.1:9"))
    assert doc["experts"]["instant"]["backend"] == "remote"
    assert {r["domain"] for r in doc["routing"]["routes"]} == {"code", "math", "general"}


def test_slm_router_policy_loads_in_the_gateway(tmp_path: Path) -> None:
    policy_file = pytest.importorskip("router.config", reason="gateway not importable")
    path = tmp_path / "policy.yaml"
    path.write_text(slm_router_policy_yaml("http://127.0.0.1:9"))
    config = policy_file.load_policy(path)
    assert config.routing.fallback == "instant"


def test_overhead_cli_help_runs() -> None:
    out = subprocess.run(
        [__import__("sys").executable, "-m", "loadtest.overhead", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "--slm-router-url" in out.stdout


def test_run_benchmark_writes_overhead_json(tmp_path: Path) -> None:
    from loadtest.gateways import Started
    from loadtest.overhead import run_benchmark

    def direct(url: str) -> Started:
        return Started(url, "instant", None, lambda: None, 0.0)

    def broken(url: str) -> Started:
        raise RuntimeError("gateway did not start")

    s = Settings(
        latency_s=0.2,
        step_s=0.3,
        start_rps=20,
        max_rps_cap=40,
        warmup_requests=5,
        loaded_concurrency=2,
        refine_steps=0,
        retries=0,
        repeats=2,
    )
    doc = run_benchmark(
        tmp_path,
        s,
        ("direct", "slm_router"),
        {"direct": direct, "slm_router": broken, "litellm_proxy": broken},
    )
    saved = json.loads((tmp_path / "overhead.json").read_text())
    assert saved["direct"] == doc["direct"]
    assert len(saved["direct"]["runs"]) == 2
    for key in ("p50_ms", "p99_ms", "max_rps"):
        assert (
            key in saved["direct"] and key in saved["slm_router"] and key in saved["litellm_proxy"]
        )
    assert saved["direct"]["p50_ms"] > 0 and saved["direct"]["max_rps"] > 0
    assert saved["slm_router"] == {
        "available": False,
        "reason": "gateway did not start",
        "p50_ms": None,
        "p99_ms": None,
        "max_rps": None,
    }
    assert saved["litellm_proxy"]["reason"] == "not selected"
    assert saved["comparison"]["slm_router_no_worse_than_litellm"] is None


def test_compare_pairs_turns() -> None:
    def runs(*pairs: tuple[float, float]) -> list[dict[str, float]]:
        return [{"p50_ms": a, "p99_ms": b} for a, b in pairs]

    direct = {
        "available": True,
        "p50_ms": 2.0,
        "p99_ms": 10.0,
        "max_rps": 100.0,
        "runs": runs((1, 5), (2, 10), (9, 90)),
    }
    gw = {
        "available": True,
        "p50_ms": 12.0,
        "p99_ms": 30.0,
        "max_rps": 50.0,
        "runs": runs((11, 25), (12, 30), (40, 200)),
    }
    added = compare({"direct": direct, "slm_router": gw})["added"]["slm_router"]
    # per turn: p50 +10, +10, +31 -> 10; p99 +20, +20, +110 -> 20
    assert added["p50_ms_paired"] == 10.0 and added["p99_ms_paired"] == 20.0
    gw["runs"] = gw["runs"][:2]  # unequal turns: no pairing
    assert (
        "p50_ms_paired" not in compare({"direct": direct, "slm_router": gw})["added"]["slm_router"]
    )
