"""Reliability under faults, on a real Serve app of its own (`slm-router-reliability` under
/reliability, beside the session gateway on the same Serve): a replica killed during load, a
remote expert that hangs or fails, Redis stopped and restarted mid-load, a hot reload (valid
and invalid) during load, the request limits and a saturated deployment.

Every request has a bound; every test is bounded in time; loopback only.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from router.config import AppConfig
from router.finance.redis_server import EmbeddedRedis
from router.serving.server import wait_ready
from tests.integration.conftest import _run_with_timeout, free_port
from tests.integration.reliability_support import FaultServer, Load, Result, chat

pytestmark = pytest.mark.integration

APP = "slm-router-reliability"
PREFIX = "/reliability"
SLOW_TIMEOUT_S = 1.5  # remote-slow's timeout_s
SLACK_S = 2.5  # a loaded 2-core machine: the fallback's own time plus scheduling noise
KILL_TIMEOUT_S = 6.0  # local-tiny's timeout_s
RELOAD_BOUND_S = 30.0  # a request may wait while the new ingress replica takes over

POLICY = """
version: 1
classifier: {{kind: examples, placement: ingress, oos_threshold: 0.3}}
experts:
  local-tiny:
    backend: local
    model: {tiny}
    max_tokens_default: 16
    timeout_s: {kill_timeout}
    replicas: {{min: 2, max: 2}}
    resources: {{num_cpus: 0.1}}
  sat:
    backend: local
    model: {tiny}
    max_tokens_default: 48
    max_ongoing_requests: 1
    timeout_s: 30
    resources: {{num_cpus: 0.1}}
  remote-slow:
    {{backend: remote, model: openai/x, api_base: "{fault}/slow/v1", timeout_s: {slow_timeout}}}
  remote-500: {{backend: remote, model: openai/x, api_base: "{fault}/err/v1", timeout_s: 5}}
  ledger-fake: {{backend: fake}}
  fallback: {{backend: fake}}
routing:
  fallback: fallback
  overrides:
    - {{name: replica, expert: local-tiny, keywords: [replicatest]}}
    - {{name: slow, expert: remote-slow, keywords: [slowtest]}}
    - {{name: err, expert: remote-500, keywords: [errtest]}}
    - {{name: sat, expert: sat, keywords: [sattest]}}
    {extra_override}
  routes:
    - domain: code
      experts: [fallback]
      examples: [write a python function, fix this javascript bug, explain this SQL query]
gateway: {{max_ongoing_requests: 64, max_body_bytes: 65536, max_messages: 8}}
"""
MAX_QUEUED = {"expert-sat": 1}  # Serve's max_queued_requests (not in ExpertSpec yet)


@dataclass
class Rel:
    url: str
    redis: EmbeddedRedis
    fault: FaultServer
    policy_text: str  # the running policy
    tiny: Path

    def policy(self, extra_override: str = "") -> str:
        return POLICY.format(
            tiny=self.tiny,
            fault=self.fault.url,
            slow_timeout=SLOW_TIMEOUT_S,
            kill_timeout=KILL_TIMEOUT_S,
            extra_override=extra_override,
        )


def deploy(config: AppConfig, redis_url: str) -> None:
    from experts import deployment
    from router.serving.reload import apply_config

    original = deployment.deployment_options

    def with_queue_limit(name: str, spec: Any) -> dict[str, object]:
        opts = original(name, spec)
        if opts["name"] in MAX_QUEUED:
            opts["max_queued_requests"] = MAX_QUEUED[str(opts["name"])]
        return opts

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(deployment, "deployment_options", with_queue_limit)
        _run_with_timeout(
            lambda: apply_config(config, redis_url, name=APP, route_prefix=PREFIX), 240
        )


@pytest.fixture(scope="module")
def fault() -> Iterator[FaultServer]:
    server = FaultServer(free_port()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def rel_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    from tests.conftest_redis import _binary

    binary = _binary()
    if binary is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    server = EmbeddedRedis(tmp_path_factory.mktemp("rel-redis"), binary=binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def rel(
    gateway_url: str, tiny_model: Path, fault: FaultServer, rel_redis: EmbeddedRedis
) -> Iterator[Rel]:
    """Our own app on the session's Serve (the session gateway owns Ray and Serve)."""
    from ray import serve

    from router.config import parse_policy

    state = Rel(f"{gateway_url}{PREFIX}", rel_redis, fault, "", tiny_model)
    state.policy_text = state.policy()
    t0 = time.monotonic()
    deploy(parse_policy(state.policy_text, "reliability.yaml"), rel_redis.url)
    try:
        wait_ready(state.url, timeout_s=60)
        print(f"reliability app up in {time.monotonic() - t0:.1f}s")
        yield state
    finally:
        serve.delete(APP)


def assert_all_ok(results: list[Result], bound_s: float) -> None:
    assert results, "no request was made"
    bad = [(r.status, r.body) for r in results if r.status != 200]
    assert not bad, f"{len(bad)} of {len(results)} failed: {bad[:3]}"
    slowest = max(r.latency_s for r in results)
    assert slowest < bound_s, f"a request took {slowest:.1f}s (bound {bound_s}s)"


# ---- an expert replica killed during load ----------------------------------------------------


def _replicas(deployment: str) -> list[str]:
    """Names of the deployment's live replica actors (core API: no dashboard address needed,
    which matters on a machine where several Ray clusters run)."""
    import ray

    prefix = f"SERVE_REPLICA::{APP}#{deployment}#"
    named = ray.util.list_named_actors(all_namespaces=True)
    return sorted(a["name"] for a in named if a["name"].startswith(prefix))


def _running(deployment: str) -> int:
    from ray import serve

    status = serve.status().applications[APP].deployments[deployment]
    return int(status.replica_states.get("RUNNING", 0))


def test_replica_killed_during_load_fails_over_and_is_replaced(rel: Rel) -> None:
    import ray

    dep = "expert-local-tiny"
    before = _replicas(dep)
    assert len(before) == 2 and _running(dep) == 2
    victim = before[0]
    # Long enough answers, and enough of them, that the victim has requests in flight when it dies.
    body = lambda i: chat(f"replicatest {i}", max_tokens=48)  # noqa: E731
    with Load(rel.url, body, concurrency=6) as load:
        time.sleep(2.0)
        killed_at = time.monotonic()
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        deadline = killed_at + 45
        while time.monotonic() < deadline:
            now = _replicas(dep)
            if victim not in now and len(now) == 2 and _running(dep) == 2:
                break
            time.sleep(0.5)
        replaced_at = time.monotonic()
        time.sleep(1.0)
    after = _replicas(dep)
    assert victim not in after and len(after) == 2, f"not replaced: {after}"
    assert _running(dep) == 2
    print(f"replica replaced in {replaced_at - killed_at:.1f}s; {len(load.results)} requests")
    # None failed, none hung. A request caught on the dead replica either moves to the fallback
    # or is retried by Serve on the live one; which happens is a race, so both are fine.
    assert_all_ok(load.results, KILL_TIMEOUT_S + SLACK_S + 3)
    experts = {r.expert for r in load.results}
    assert experts <= {"local-tiny", "fallback"}, experts
    print(f"{sum(r.expert == 'fallback' for r in load.results)} answered by the fallback")
    assert any(r.expert == "local-tiny" for r in load.results if r.started < killed_at)
    # Serve's replacement serves again (the tripped expert is retried after its 10 s pause).
    with httpx.Client(timeout=30) as client:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            r = client.post(f"{rel.url}/v1/chat/completions", json=chat("replicatest again"))
            assert r.status_code == 200
            if r.headers["x-slm-router-expert"] == "local-tiny":
                break
            time.sleep(0.5)
        assert r.headers["x-slm-router-expert"] == "local-tiny"


# ---- a remote expert that hangs or fails ---------------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "calls", "timeout_s"),
    [("slowtest", "slow", SLOW_TIMEOUT_S), ("errtest", "err", 5.0)],
)
def test_remote_expert_timeout_or_500_falls_back_in_time(
    rel: Rel, keyword: str, calls: str, timeout_s: float
) -> None:
    seen = rel.fault.calls[calls]
    with Load(rel.url, lambda i: chat(f"{keyword} {i}"), concurrency=3) as load:
        time.sleep(2 * timeout_s if keyword == "slowtest" else 2.0)
    assert rel.fault.calls[calls] > seen, "the remote expert was never called"
    assert_all_ok(load.results, timeout_s + SLACK_S)
    assert {r.expert for r in load.results} == {"fallback"}
    assert all(f"{keyword}" in r.body["choices"][0]["message"]["content"] for r in load.results)


# ---- Redis stopped mid-load and restarted -----------------------------------------------------


def _ledger_requests(url: str, expert: str) -> int:
    import redis

    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2)
    try:
        total = 0
        for day in client.zrange("slm:days", 0, -1):
            for cell, value in client.hgetall(f"slm:agg:{day}").items():
                _, e, _, metric = cell.split("\x1f")
                if e == expert and metric == "requests":
                    total += int(value)
        return total
    finally:
        client.close()


def test_redis_stopped_and_restarted_mid_load_loses_nothing(rel: Rel) -> None:
    assert _ledger_requests(rel.redis.url, "ledger-fake") == 0
    body = lambda i: chat(f"ledger {i}", model="ledger-fake")  # noqa: E731
    with Load(rel.url, body, concurrency=3) as load:
        time.sleep(1.5)
        rel.redis.stop()
        down_at = time.monotonic()
        time.sleep(3.0)
        rel.redis.start()  # same port, same append-only file
        up_at = time.monotonic()
        time.sleep(1.5)
    during = [r for r in load.results if down_at <= r.started < up_at]
    assert during, "no request while Redis was down"
    assert_all_ok(load.results, 5.0)
    served = len(load.results)
    deadline = time.monotonic() + 30  # the spool replays every 5 s
    counted = 0
    while time.monotonic() < deadline:
        counted = _ledger_requests(rel.redis.url, "ledger-fake")
        if counted >= served:
            break
        time.sleep(0.5)
    print(f"{served} served, {len(during)} while Redis was down; ledger counted {counted}")
    assert counted == served
    time.sleep(1.0)  # nothing is counted twice, however often the spool is replayed
    assert _ledger_requests(rel.redis.url, "ledger-fake") == served


# ---- hot reload during load: invalid (rejected) and valid (applied) -------------------------


def test_invalid_policy_during_load_is_rejected_and_changes_nothing(
    rel: Rel, tmp_path: Path
) -> None:
    from router.errors import PolicyLoadError
    from router.serving.reload import apply_file

    bad = tmp_path / "bad.yaml"
    bad.write_text(rel.policy().replace("fallback: fallback", "fallback: fallbak"))
    body = lambda i: chat(f"write a python function {i}")  # noqa: E731
    with Load(rel.url, body, concurrency=3) as load:
        time.sleep(1.0)
        t_apply = time.monotonic()
        with pytest.raises(PolicyLoadError) as err:
            apply_file(bad)
        time.sleep(1.5)
    text = "\n".join(err.value.issues)
    where = re.escape(str(bad))
    assert re.search(rf"{where}:\d+:\d+: error: routing\.fallback: unknown expert 'fallbak'", text)
    assert_all_ok(load.results, 10.0)
    after = load.since(t_apply)
    assert after and {r.expert for r in after} == {"fallback"}


def test_valid_policy_during_load_is_applied_without_failures(rel: Rel, tmp_path: Path) -> None:
    from router.config import load_policy

    good = tmp_path / "good.yaml"
    text = rel.policy("- {name: zebra, expert: ledger-fake, keywords: [zebra]}")
    good.write_text(text)
    config = load_policy(good)
    body = lambda i: chat(f"zebra crossing {i}")  # noqa: E731
    replicas = _ingress_replicas()
    with Load(rel.url, body, concurrency=3) as load:
        time.sleep(1.0)
        t0 = time.monotonic()
        deploy(config, rel.redis.url)  # router.serving.reload.apply_config onto this app
        applied = time.monotonic()
        rel.policy_text = text  # the zebra override stays: no other test says "zebra"
        deadline = applied + 30
        while time.monotonic() < deadline and not any(
            r.expert == "ledger-fake" for r in load.since(applied)
        ):
            time.sleep(0.3)
        time.sleep(1.0)
    slow = sorted(load.results, key=lambda r: -r.latency_s)[:3]
    print(
        f"reload applied in {applied - t0:.1f}s; {len(load.results)} requests; slowest "
        + ", ".join(f"{r.latency_s:.1f}s at t0{r.started - t0:+.1f}s" for r in slow)
    )
    assert_all_ok(load.results, RELOAD_BOUND_S)
    assert {r.expert for r in load.results if r.started < t0} == {"fallback"}
    newest = sorted(load.results, key=lambda r: r.started)[-3:]
    assert {r.expert for r in newest} == {"ledger-fake"}
    # Applied in place (Serve's user_config -> reconfigure): the same ingress replicas serve it.
    assert _ingress_replicas() == replicas


def _ingress_replicas() -> set[str]:
    from ray.util.state import list_actors

    name = f"ServeReplica:{APP}:ingress"
    actors = list_actors(filters=[("class_name", "=", name)])
    return {a.actor_id for a in actors if a.state == "ALIVE"}


# ---- limits -------------------------------------------------------------------------------------


def _envelope(r: httpx.Response) -> dict[str, Any]:
    assert r.headers["content-type"].startswith("application/json")
    err: dict[str, Any] = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def test_body_messages_and_token_limits(rel: Rel) -> None:
    url = f"{rel.url}/v1/chat/completions"
    with httpx.Client(timeout=30) as client:
        big = chat("x" * 70_000)
        r = client.post(url, json=big)
        assert r.status_code == 413 and _envelope(r)["code"] == "payload_too_large"

        def chunks() -> Iterator[bytes]:  # no content-length: the byte count must catch it
            yield b'{"model": "auto", "messages": [{"role": "user", "content": "'
            for _ in range(20):
                yield b"y" * 4096
            yield b'"}]}'

        r = client.post(url, content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and _envelope(r)["code"] == "payload_too_large"

        many = {"model": "auto", "messages": [{"role": "user", "content": "hi"}] * 9}
        r = client.post(url, json=many)
        assert r.status_code == 400 and _envelope(r)["param"] == "messages"
        many["messages"] = many["messages"][:8]
        assert client.post(url, json=many).status_code == 200

        # max_tokens beyond the window is clamped to the room left (experts/local.py's design,
        # tests/unit/test_experts_local.py), not refused: the answer stops at the window.
        r = client.post(url, json=chat("hello", model="local-tiny", max_tokens=100_000))
        assert r.status_code == 200, r.text
        usage = r.json()["usage"]
        assert usage["prompt_tokens"] + usage["completion_tokens"] <= 256
        r = client.post(url, json=chat("word " * 400, model="local-tiny"))
        assert r.status_code == 400 and _envelope(r)["code"] == "context_length_exceeded"
        r = client.post(url, json=chat("hello", model="local-tiny", max_tokens=4))
        assert r.status_code == 200


def test_saturated_deployment_answers_429_with_retry_after(rel: Rel) -> None:
    def burst(model: str, n: int = 16) -> list[Result]:
        import concurrent.futures

        load = Load(rel.url, lambda i: {}, timeout_s=30)
        with httpx.Client(timeout=30) as client, concurrent.futures.ThreadPoolExecutor(n) as pool:
            body = chat("sattest tell me a long story", model=model, max_tokens=48)
            return list(pool.map(lambda _: load.one(client, body), range(n)))

    pinned = burst("sat")
    statuses = [r.status for r in pinned]
    assert set(statuses) <= {200, 429}, [(r.status, r.body) for r in pinned if r.status != 200]
    assert 429 in statuses and 200 in statuses, statuses
    for r in pinned:
        if r.status == 429:
            assert r.retry_after is not None and int(r.retry_after) >= 1
            assert r.body["error"]["code"] == "expert_overloaded"
            assert r.latency_s < 5.0  # refused at once, not after a queue wait
    # Routed (not pinned): the saturated expert's turn passes to the fallback.
    routed = burst("auto")
    assert {r.status for r in routed} == {200}
    assert {r.expert for r in routed} >= {"fallback"}
