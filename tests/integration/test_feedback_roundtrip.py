"""Feedback over a real redis-server: routed request -> POST /v1/feedback -> export rows."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from router.continuous import feedback_api
from router.continuous.feedback import FeedbackStore, RequestNote
from router.continuous.rollout_log import ArtifactRef, RedisRolloutLog, RolloutLogEntry
from router.continuous.spec import FeedbackPolicy
from router.finance import access
from router.finance.access import Access
from router.finance.keys import KeyStore
from router.finance.ledger import Ledger
from router.finance.ledger_types import CostRecord
from router.finance.redis_server import make_client
from router.ops.cli import main
from router.serving.http.api import new_app

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[object]:
    client = make_client(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def env(redis, redis_prefix: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    ledger = Ledger("", tmp_path / "spool.jsonl", prefix=redis_prefix, client=redis)
    keys = KeyStore(redis, prefix=redis_prefix)
    store = FeedbackStore(
        redis, ledger.get, prefix=redis_prefix, policy=FeedbackPolicy(keep_prompts=True)
    )

    app = new_app()
    access.install(app, Access(auth=True, keys=keys))
    feedback_api.install(
        app, store, domains={"math", "cooking", "out_of_scope"}, experts={"m", "c"}
    )
    team_a = await keys.create_key("team-a")
    team_b = await keys.create_key("team-b")
    # Two routed requests of team-a as the gateway records them: ledger + routing note.
    now = time.time()
    for rid, domain, expert, text in (
        ("req-1", "cooking", "c", "what is the integral of x squared"),
        ("req-2", "math", "m", "solve 3x + 5 = 20"),
        ("req-3", "math", "m", "derivative of sin x"),
    ):
        rec = CostRecord(
            rid,
            now,
            "team-a",
            expert,
            domain,
            10,
            5,
            key_id=team_a.info.key_id,
            route_reason=f"domain {domain}",
        )
        assert await ledger.write(rec)
        store.note(RequestNote(rid, text, domain, 0.81, False, "v-live", "current"))
    await store.drain()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client, store, team_a.plaintext, team_b.plaintext


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_feedback_round_trip_to_training_rows(
    env, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    client, store, key_a, _ = env
    # A correction: routed to cooking, should have been maths.
    r = await client.post(
        "/v1/feedback",
        headers=auth(key_a),
        json={"request_id": "req-1", "rating": -1, "correct_domain": "math", "note": "misrouted"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["routed"] == {"domain": "cooking", "expert": "c", "reason": "domain cooking"}
    assert (body["label"], body["label_source"], body["has_text"]) == ("math", "correction", True)
    # A confirmation, and a complaint that teaches nothing (no correction).
    r = await client.post(
        "/v1/feedback", headers=auth(key_a), json={"request_id": "req-2", "rating": 1}
    )
    assert r.status_code == 200 and r.json()["label"] == "math"
    r = await client.post(
        "/v1/feedback", headers=auth(key_a), json={"request_id": "req-3", "rating": -1}
    )
    assert r.status_code == 200 and r.json()["label"] is None

    out = tmp_path / "fb.jsonl"
    code = await asyncio.to_thread(
        main,
        [
            "feedback",
            "export",
            "--out",
            str(out),
            "--redis-url",
            redis_url,
            "--prefix",
            redis_prefix,
        ],
    )
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["request_id"], r["text"], r["domain"], r["label_source"]) for r in rows] == [
        ("req-1", "what is the integral of x squared", "math", "correction"),
        ("req-2", "solve 3x + 5 = 20", "math", "confirmed"),
    ]
    assert rows[0]["routed_domain"] == "cooking" and rows[0]["classifier_version"] == "v-live"
    assert rows[0]["confidence"] == pytest.approx(0.81) and rows[0]["team"] == "team-a"
    everything = tmp_path / "all.jsonl"
    assert (
        await asyncio.to_thread(
            main,
            [
                "feedback",
                "export",
                "--out",
                str(everything),
                "--all",
                "--redis-url",
                redis_url,
                "--prefix",
                redis_prefix,
            ],
        )
        == 0
    )
    assert len(everything.read_text().splitlines()) == 3

    # A second feedback on the same request replaces the first.
    r = await client.post(
        "/v1/feedback",
        headers=auth(key_a),
        json={"request_id": "req-1", "correct_domain": "out_of_scope"},
    )
    rec = await store.get("req-1")
    assert rec is not None and rec.correct_domain == "out_of_scope" and rec.rating is None
    got = await client.get("/v1/feedback/req-1", headers=auth(key_a))
    assert got.status_code == 200 and got.json()["correct_domain"] == "out_of_scope"


async def test_feedback_errors_leave_in_openai_envelope(env) -> None:  # type: ignore[no-untyped-def]
    client, _, key_a, key_b = env
    cases = [
        (auth(key_a), {"request_id": "nope", "rating": 1}, 404, "unknown_request_id"),
        # another team's request looks exactly like an unknown one
        (auth(key_b), {"request_id": "req-1", "rating": 1}, 404, "unknown_request_id"),
        (auth(key_a), {"request_id": "req-1", "correct_domain": "maths"}, 400, "unknown_domain"),
        (auth(key_a), {"request_id": "req-1"}, 400, "invalid_request"),
        (auth(key_a), {"request_id": "req-1", "rating": 5}, 400, "invalid_request"),
        ({}, {"request_id": "req-1", "rating": 1}, 401, "invalid_api_key"),
    ]
    for headers, payload, status, code in cases:
        r = await client.post("/v1/feedback", headers=headers, json=payload)
        assert r.status_code == status, (payload, r.text)
        err = r.json()["error"]
        assert err["code"] == code and err["type"] and err["message"]
    r = await client.post(
        "/v1/feedback", headers=auth(key_a), json={"request_id": "req-1", "correct_domain": "maths"}
    )
    assert "did you mean 'math'" in r.json()["error"]["message"]
    r = await client.post("/v1/feedback", headers=auth(key_a), content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


async def test_rollout_log_round_trips_through_redis(redis, redis_prefix: str) -> None:  # type: ignore[no-untyped-def]
    log = RedisRolloutLog(redis, redis_prefix)
    for i, action in enumerate(("shadow", "canary", "promote")):
        await log.append(
            RolloutLogEntry(
                ts=1000.0 + i,
                actor="ops@host",
                action=action,
                policy_file="p.yaml",  # type: ignore[arg-type]
                current=ArtifactRef(kind="artifact", path="a", version="v1", data_sha256="d1"),
                candidate=ArtifactRef(kind="artifact", path="b", version="v2", data_sha256="d2"),
                policy_sha256_before=f"s{i}",
                policy_sha256_after=f"s{i + 1}",
                previous_policy=f"t{i}",
            )
        )
    entries = await log.entries()
    assert [e.action for e in entries] == ["promote", "canary", "shadow"]
    assert entries[-1].candidate is not None and entries[-1].candidate.version == "v2"
    assert entries[0].previous_policy == "t2"
