"""Per-expert autoscaling on a small Serve app of its own (bounded: well under 90 s).

Two `backend: local` experts on a tiny random Llama, each in its own deployment with autoscaling
(min 1, max 2, target 1 ongoing request). A closed loop of pinned requests keeps `busy` loaded;
its RUNNING replicas, read from serve.status(), must grow above 1 while `idle` stays at 1.

The scenario runs in a child process with a Ray of its own, under its own app name and route
prefix (which also checks that the FastAPI ingress answers under a prefix). Why a child: the
session gateway (conftest) calls ray.init from a worker thread, and a later `serve.run` from
this process's main thread then ends the whole pytest process silently (exit 1, seen with
Ray 2.60 while the deployment arguments are serialised). A child process sidesteps that and
leaves the session gateway untouched.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

APP = "autoscale-test"
PREFIX = "/autoscale"
LOAD_TIMEOUT_S = 45.0
ROOT = Path(__file__).resolve().parents[2]

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
    # target 3: the ingress's own periodic calls (health, info) can keep ~1 call in flight on a
    # starved CPU and scaled idle at target 1 in CI; busy's six clients would still scale it.
    replicas: {{min: 1, max: 2, target_ongoing_requests: 3, upscale_delay_s: 1,
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


def test_loaded_expert_scales_while_idle_one_stays(tiny_model: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)  # always a Ray of its own
    log = tmp_path / "scenario.log"
    with log.open("w") as err:
        # Own session: the child's Ray never shares a process group with pytest.
        proc = subprocess.run(
            [sys.executable, "-m", "tests.integration.test_autoscaling", str(tiny_model)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            timeout=150,
            start_new_session=True,
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    tail = log.read_text(errors="replace")[-3000:]
    assert proc.returncode == 0 and lines, f"scenario failed (rc {proc.returncode}):\n{tail}"
    result = json.loads(lines[-1].removeprefix("RESULT "))

    assert result["ready_status"] == 200, result
    assert result["before"] == {"ingress": 1, "expert-busy": 1, "expert-idle": 1}
    samples = result["samples"]
    assert result["errors"] == [], result["errors"][:3]
    assert result["experts"] and set(result["experts"]) == {"busy"}
    assert samples[-1]["expert-busy"] > 1, f"busy never scaled: {samples}"
    assert all(s["expert-idle"] == 1 for s in samples), f"idle moved: {samples}"


# ---- the scenario, run in the child process --------------------------------------------------


def running(app: str) -> dict[str, int]:
    from ray import serve

    deps = serve.status().applications[app].deployments
    return {
        name: sum(
            n for s, n in d.replica_states.items() if str(getattr(s, "value", s)) == "RUNNING"
        )
        for name, d in deps.items()
    }


async def load_until_scaled(url: str, concurrency: int) -> dict[str, Any]:
    """Pinned requests on `busy` until its replicas grow (or time runs out)."""
    out: dict[str, Any] = {"samples": [], "experts": [], "errors": []}
    stop = asyncio.Event()
    body = {
        "model": "busy",
        "messages": [{"role": "user", "content": "what is 17 times 23"}],
        "max_tokens": 32,
    }

    async def client(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            resp = await http.post(f"{url}/v1/chat/completions", json=body)
            if resp.status_code != 200:
                out["errors"].append(f"{resp.status_code}: {resp.text[:200]}")
                continue
            out["experts"].append(resp.headers["x-slm-router-expert"])

    async def watch() -> None:
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while time.monotonic() < deadline:
            out["samples"].append(await asyncio.to_thread(running, APP))
            if out["samples"][-1].get("expert-busy", 0) > 1:
                break
            await asyncio.sleep(1.0)
        stop.set()

    async with httpx.AsyncClient(timeout=60, trust_env=False) as http:
        workers = [asyncio.create_task(client(http)) for _ in range(concurrency)]
        await watch()
        await asyncio.gather(*workers)
    return out


def scenario(tiny: Path) -> dict[str, Any]:
    import ray
    from ray import serve

    from router.config import parse_policy
    from router.serving.app import build_app
    from router.serving.runtime import start_ray
    from tests.integration.conftest import free_port

    start_ray()
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        config = parse_policy(POLICY.format(tiny=tiny), "autoscale-test.yaml")
        serve.run(build_app(config), name=APP, route_prefix=PREFIX)
        url = f"http://127.0.0.1:{port}{PREFIX}"
        ready = httpx.get(f"{url}/readyz", timeout=30, trust_env=False)
        result = {"ready_status": ready.status_code, "before": running(APP)}
        result.update(asyncio.run(load_until_scaled(url, concurrency=6)))
        serve.delete(APP)
        return result
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    print("RESULT " + json.dumps(scenario(Path(sys.argv[1]))), flush=True)
