"""Per-expert autoscaling on a small Serve app of its own (bounded: well under 90 s).

Two `backend: local` experts on a tiny random Llama, each in its own deployment with autoscaling
(min 1, max 2, target 1 ongoing request). A closed loop of pinned requests keeps `busy` loaded;
its RUNNING replicas, read from serve.status(), must grow above 1 while `idle` stays at 1.

The app runs under its own name and route prefix so it can share a Serve instance with the
session gateway (app 'slm-router' at '/'), and is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import free_port

APP = "autoscale-test"
PREFIX = "/autoscale"
LOAD_TIMEOUT_S = 45.0

POLICY = """
version: 1
classifier: {{kind: examples, placement: ingress}}
experts:
  busy:
    backend: local
    model: {tiny}
    max_tokens_default: 32
    max_batch_size: 1
    max_ongoing_requests: 2
    resources: {{num_cpus: 0.1}}
    replicas: {{min: 1, max: 2, target_ongoing_requests: 1, upscale_delay_s: 1,
               downscale_delay_s: 30}}
  idle:
    backend: local
    model: {tiny}
    max_tokens_default: 32
    max_batch_size: 1
    max_ongoing_requests: 2
    resources: {{num_cpus: 0.1}}
    replicas: {{min: 1, max: 2, target_ongoing_requests: 1, upscale_delay_s: 1,
               downscale_delay_s: 30}}
routing:
  fallback: idle
  routes:
    - domain: math
      experts: [busy]
      examples: [what is 17 times 23, solve for x in 3x + 5 = 20]
    - domain: code
      experts: [idle]
      examples: [write a python function, fix this javascript bug]
gateway: {{max_ongoing_requests: 64}}
"""


@pytest.fixture
def serve_http() -> Iterator[str]:
    """Serve's HTTP base URL: the session's Serve if one runs, else one started (and stopped)."""
    import ray
    from ray import serve

    from router.runtime import start_ray

    started = start_ray()
    if started:
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    else:
        serve.start()  # no-op when the session gateway already started Serve
    client = serve.context._get_global_client()
    assert client is not None
    port = client.http_config.port
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        try:
            serve.delete(APP)
        finally:
            if started:
                serve.shutdown()
                ray.shutdown()


def running(app: str) -> dict[str, int]:
    from ray import serve

    deps = serve.status().applications[app].deployments
    return {
        name: sum(
            n for s, n in d.replica_states.items() if str(getattr(s, "value", s)) == "RUNNING"
        )
        for name, d in deps.items()
    }


async def load_until_scaled(url: str, concurrency: int) -> tuple[list[dict[str, int]], list[str]]:
    """Pinned requests on `busy` until its replicas grow (or time runs out); samples + experts."""
    samples: list[dict[str, int]] = []
    experts: list[str] = []
    stop = asyncio.Event()
    body = {
        "model": "busy",
        "messages": [{"role": "user", "content": "what is 17 times 23"}],
        "max_tokens": 32,
    }

    async def client(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            resp = await http.post(f"{url}/v1/chat/completions", json=body)
            assert resp.status_code == 200, resp.text
            experts.append(resp.headers["x-slm-router-expert"])

    async def watch() -> None:
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while time.monotonic() < deadline:
            samples.append(await asyncio.to_thread(running, APP))
            if samples[-1].get("expert-busy", 0) > 1:
                break
            await asyncio.sleep(1.0)
        stop.set()

    async with httpx.AsyncClient(timeout=60, trust_env=False) as http:
        workers = [asyncio.create_task(client(http)) for _ in range(concurrency)]
        await watch()
        await asyncio.gather(*workers)
    return samples, experts


def test_loaded_expert_scales_while_idle_one_stays(serve_http: str, tiny_model: Path) -> None:
    from ray import serve

    from router.app import build_app
    from router.policy_file import parse_policy

    config = parse_policy(POLICY.format(tiny=tiny_model), "autoscale-test.yaml")
    serve.run(build_app(config), name=APP, route_prefix=PREFIX)
    url = serve_http + PREFIX
    # The FastAPI ingress answers under a route prefix (Serve passes it as the ASGI root_path).
    ready = httpx.get(f"{url}/readyz", timeout=30, trust_env=False)
    assert ready.status_code == 200, ready.text
    assert running(APP) == {"ingress": 1, "expert-busy": 1, "expert-idle": 1}

    samples, experts = asyncio.run(load_until_scaled(url, concurrency=6))

    assert samples[-1]["expert-busy"] > 1, f"busy never scaled: {samples}"
    assert all(s["expert-idle"] == 1 for s in samples), f"idle moved: {samples}"
    assert experts and set(experts) == {"busy"}
