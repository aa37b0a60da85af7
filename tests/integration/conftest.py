"""One real Ray Serve gateway per test session, talked to over loopback HTTP."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.openai_upstream import Upstream, serve_upstream
from tests.unit.test_experts_tune_tiny import build_tiny_llama

STARTUP_TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


POLICY = """
version: 1
classifier:
  {{kind: examples, placement: {placement}, oos_threshold: 0.3}}
experts:
  tiny:
    backend: local
    model: {tiny}
    description: tiny random Llama built by the tests
    max_tokens_default: 8
    replicas: {{min: 1, max: 1}}
    resources: {{num_cpus: 0.1}}
  smollm2:
    backend: local
    model: builtin:smollm2-135m-instruct
    max_tokens_default: 16
    resources: {{num_cpus: 0.1}}
  tiny-maths:
    backend: local
    model: {tiny}
    adapter: {maths}
    max_tokens_default: 8
    resources: {{num_cpus: 0.1}}
  tiny-echo:
    backend: local
    model: {tiny}
    adapter: {echo}
    max_tokens_default: 8
    resources: {{num_cpus: 0.1}}
  tiny-moe:
    backend: local
    model: {moe}
    max_tokens_default: 8
    resources: {{num_cpus: 0.1}}
  code-fake: {{backend: fake}}
  broken: {{backend: fake, fail: always}}
  general-fake: {{backend: fake, context_window: 64}}
  up-tools:
    backend: remote
    model: openai/tools
    api_base: {upstream}
    price: {{input_per_1m: 1.0, output_per_1m: 2.0}}
  minilm:
    backend: local
    kind: embedding
    model: builtin:all-minilm-l6-v2
    resources: {{num_cpus: 0.1}}
    price: {{per_replica_hour: 0.05}}
routing:
  fallback: general-fake
  routes:
    - domain: code
      experts: [code-fake]
      examples: [write a python function, fix this javascript bug, explain this SQL query]
    - domain: math
      experts: [broken, tiny]
      examples:
        [what is 17 times 23, solve for x in 3x + 5 = 20, compute the derivative of x squared]
gateway: {{max_ongoing_requests: 32}}
"""


def _run_with_timeout(fn, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    """serve.run hangs if a replica can't be placed; fail the session instead of hanging."""
    error: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # re-raised in the test thread
            error.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        from ray import serve

        raise TimeoutError(f"Serve app not ready in {timeout_s}s: {serve.status()}")
    if error:
        raise error[0]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two LoRA adapters trained a few steps on the tiny base (different data, different seeds)."""
    from experts.tune import TuneConfig, tune
    from tests.unit.test_experts_tune_tiny import arithmetic_rows, write_jsonl

    root = tmp_path_factory.mktemp("adapters")
    rows = {
        "maths": arithmetic_rows(24),
        "echo": [{"prompt": f"say {i}", "response": f"{i} {i} {i}"} for i in range(24)],
    }
    out = {}
    for seed, (name, data) in enumerate(rows.items()):
        out[name] = root / name
        cfg = TuneConfig(
            base=str(tiny_model),
            data=write_jsonl(root / f"{name}.jsonl", data),
            out=out[name],
            steps=6,
            holdout=4,
            lr=2e-2,
            warmup_steps=1,
            seed=seed,
            progress=False,
        )
        tune(cfg)
    return out


@pytest.fixture(scope="session")
def tiny_moe(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama sparse-upcycled into a 4-expert, top-2 Mixtral by the real code path."""
    from experts.upcycle import upcycle

    out = tmp_path_factory.mktemp("moe") / "tiny-moe"
    upcycle(str(tiny_model), out, experts=4, top_k=2)
    return out


@pytest.fixture(scope="session")
def gateway_redis(redis_server) -> str:  # type: ignore[no-untyped-def]
    return str(redis_server.url)


@pytest.fixture(scope="session")
def session_upstream() -> Iterator[Upstream]:
    """The OpenAI-compatible loopback server behind the session's remote expert `up-tools`."""
    yield from serve_upstream()


@pytest.fixture(scope="session")
def gateway_policy_text(
    tiny_model: Path,
    tiny_adapters: dict[str, Path],
    tiny_moe: Path,
    session_upstream: Upstream,
) -> str:
    """The session gateway's policy as YAML text (tests that apply policies restore it)."""
    return POLICY.format(
        tiny=tiny_model,
        maths=tiny_adapters["maths"],
        echo=tiny_adapters["echo"],
        moe=tiny_moe,
        placement="ingress",
        upstream=session_upstream.base_url,
    )


@pytest.fixture(scope="session")
def gateway_url(  # type: ignore[no-untyped-def]
    gateway_policy_text: str,
    gateway_redis: str,
    tmp_path_factory: pytest.TempPathFactory,
):
    from router.config import parse_policy
    from router.serving.server import start_gateway, stop_gateway, wait_ready

    config = parse_policy(gateway_policy_text, "test-policy.yaml")
    port = free_port()
    urls: list[str] = []
    t0 = time.monotonic()
    os.environ["SLM_ROUTER_SPOOL_DIR"] = str(tmp_path_factory.mktemp("spool"))
    # Ray in this (main) thread: its raylet and GCS are started with PR_SET_PDEATHSIG, which
    # Linux fires when the *thread* that forked them exits, so a Ray started inside
    # _run_with_timeout's thread is SIGKILLed seconds after the gateway is up.
    from router.serving import dataplane
    from router.serving.runtime import start_ray

    # The default data plane (HAProxy -> direct ingress) must be in the environment before Ray
    # starts, so that every integration test runs on the path users get (issue 11).
    _plane, plane_dir, line = dataplane.prepare()
    print(line)
    try:
        start_ray()
        _run_with_timeout(
            lambda: urls.append(start_gateway(config, "127.0.0.1", port, gateway_redis)),
            STARTUP_TIMEOUT_S,
        )
        print(f"gateway up in {time.monotonic() - t0:.1f}s")
        wait_ready(urls[0])
        yield urls[0]
    finally:
        stop_gateway()
        dataplane.cleanup(plane_dir)
