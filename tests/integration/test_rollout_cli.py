"""`slm-router classifier-rollout` against a real redis-server: steps recorded, log read back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from router.continuous.rollout import current_rollout
from router.ops.cli import main

pytestmark = pytest.mark.integration

FAKE_POLICY = Path(__file__).resolve().parents[1] / "policies" / "fake.yaml"


def test_shadow_then_rollback_through_the_cli(
    redis_url: str, redis_prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.yaml"
    shutil.copy(FAKE_POLICY, policy)
    original = policy.read_text()
    common = [
        "--policy",
        str(policy),
        "--no-apply",
        "--redis-url",
        redis_url,
        "--prefix",
        redis_prefix,
        "--actor",
        "ops@test",
    ]
    cand = str(tmp_path / "candidate")
    assert (
        main(["classifier-rollout", "shadow", "--candidate", cand, "--percent", "25", *common]) == 0
    )
    ro = current_rollout(policy.read_text())
    assert ro is not None and (ro.mode, ro.percent, ro.candidate.path) == ("shadow", 25, cand)
    # No comparison report next to the candidate: the canary is refused, nothing changes.
    before = policy.read_text()
    assert main(["classifier-rollout", "canary", "--percent", "5", *common]) == 1
    assert policy.read_text() == before
    assert main(["classifier-rollout", "rollback", *common]) == 0
    assert policy.read_text() == original
    capsys.readouterr()
    log_args = ["--redis-url", redis_url, "--prefix", redis_prefix, "--json"]
    assert main(["classifier-rollout", "log", *log_args]) == 0
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["action"] for e in entries] == ["rollback", "shadow"]
    assert all(e["actor"] == "ops@test" and not e["applied"] for e in entries)
    assert entries[1]["current"]["kind"] == "examples" and entries[1]["current"]["version"]
    assert "previous_policy" not in entries[0]
