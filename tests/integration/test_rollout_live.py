"""A candidate classifier through shadow -> canary -> rollback on the running Serve app, all via
the rollout CLI and the hot-reload path (no restart)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from router.ops.cli import main

pytestmark = pytest.mark.integration

CODE = [
    "write a python function",
    "fix this javascript bug",
    "explain this sql query",
    "refactor my java class",
]
MATH = [
    "what is 17 times 23",
    "solve for x in 3x + 5 = 20",
    "derivative of x squared",
    "what is 12 plus 9",
]


@pytest.fixture(scope="module")
def flipped_candidate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tfidf artifact trained with code and math swapped: its routing is unmistakable."""
    from classifiers.train import train_artifact

    root = tmp_path_factory.mktemp("candidate")
    rows = [{"text": t, "domain": "math"} for t in CODE * 5] + [
        {"text": t, "domain": "code"} for t in MATH * 5
    ]
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train_artifact(data, root / "artifact", label_field="domain", kind="tfidf", holdout=0.25)
    return root / "artifact"


def _replicas(deployment: str) -> set[str]:
    import ray

    actors = ray.util.list_named_actors(all_namespaces=True)
    return {a["name"] for a in actors if f"#{deployment}#" in a["name"]}


def _route(url: str, user: str) -> str:
    body = {
        "model": "auto",
        "user": user,
        "messages": [{"role": "user", "content": "write a python function"}],
    }
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.headers["x-slm-router-domain"]


def test_shadow_canary_rollback(  # type: ignore[no-untyped-def]
    gateway_url: str,
    gateway_redis: str,
    gateway_policy_text: str,
    flipped_candidate: Path,
    tmp_path: Path,
    monkeypatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", gateway_redis)
    policy = tmp_path / "policy.yaml"
    policy.write_text(gateway_policy_text)
    common = ["--policy", str(policy), "--redis-url", gateway_redis, "--actor", "test"]
    users = [f"user-{i}" for i in range(6)]
    before = [_route(gateway_url, u) for u in users]
    assert set(before) == {"code"}
    experts_before = _replicas("expert-tiny")
    assert experts_before

    assert (
        main(["classifier-rollout", "shadow", *common, "--candidate", str(flipped_candidate)]) == 0
    )
    assert [_route(gateway_url, u) for u in users] == before  # shadow never changes an answer
    status = httpx.get(f"{gateway_url}/v1/router/status", timeout=30).json()
    assert status["rollout"]["mode"] == "shadow"

    assert main(["classifier-rollout", "canary", *common, "--percent", "100", "--force"]) == 0
    assert {_route(gateway_url, u) for u in users} == {"math"}  # every user on the candidate

    assert main(["classifier-rollout", "rollback", *common]) == 0
    assert policy.read_text() == gateway_policy_text  # byte for byte
    # Three applies rolled the ingress only: the unchanged expert kept its replicas.
    assert _replicas("expert-tiny") == experts_before
    assert [_route(gateway_url, u) for u in users] == before
    status = httpx.get(f"{gateway_url}/v1/router/status", timeout=30).json()
    assert status["rollout"] is None
