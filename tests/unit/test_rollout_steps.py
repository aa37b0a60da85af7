"""Rollout steps on a real policy file: edit, gate, apply, log; rollback restores routing."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from classifiers import build_classifier
from classifiers.train import Dataset, save_classifier, train_datasets
from router.config import parse_policy
from router.continuous.arms import RolloutCaller, sticky_key
from router.continuous.rollout import (
    ROLLOUT_KEY,
    StepRefused,
    StepRequest,
    current_rollout,
    run_step,
    set_block,
    text_sha,
)
from router.continuous.rollout_log import MemoryRolloutLog
from router.serving.callers import InProcessClassifier
from router.serving.openai_types import ChatCompletionRequest
from router.serving.service import RouterService

WORDS = {
    "math": ["integral", "derivative", "equation", "algebra", "matrix", "prime"],
    "cooking": ["recipe", "bake", "oven", "flour", "simmer", "garlic"],
    "travel": ["flight", "hotel", "passport", "airport", "luggage", "visa"],
}
FILLER = ["please", "help", "me", "with", "the", "my", "how", "do", "i", "what"]

POLICY = """\
# A comment at the top that every step must keep.
version: 1
classifier:
  kind: artifact   # the live one
  path: {current}
experts:
  math-fake: {{backend: fake}}
  cooking-fake: {{backend: fake}}
  travel-fake: {{backend: fake}}
  general-fake: {{backend: fake}}
routing:
  fallback: general-fake
  routes:
    # one expert per domain, so a different label is a different plan
    - {{domain: math, experts: [math-fake]}}
    - {{domain: cooking, experts: [cooking-fake]}}
    - {{domain: travel, experts: [travel-fake]}}
"""


def rows(n: int, seed: int, swap: bool = False) -> Dataset:
    rng = random.Random(seed)
    texts, labels = [], []
    for label, words in WORDS.items():
        for _ in range(n):
            picked = rng.sample(words, 2) + rng.sample(FILLER, 3)
            rng.shuffle(picked)
            texts.append(" ".join(picked))
            # The candidate learned math and cooking the other way round: it must disagree.
            swapped = {"math": "cooking", "cooking": "math"}.get(label, label)
            labels.append(swapped if swap else label)
    return Dataset(texts, labels)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("artifacts")
    out = []
    for name, swap in (("current", False), ("candidate", True)):
        clf = train_datasets(rows(30, 1, swap), rows(8, 2, swap), kind="tfidf", seed=0)
        save_classifier(clf, base / name)
        out.append(base / name)
    return out[0], out[1]


@pytest.fixture
def policy(tmp_path: Path, artifacts: tuple[Path, Path]) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(current=artifacts[0]))
    return path


ALL_WORDS = [w for words in WORDS.values() for w in words]
PROMPTS = [" ".join(random.Random(i).sample(ALL_WORDS, 2)) for i in range(120)]
USERS = [f"u{i % 40}" for i in range(120)]


async def routing(text: str) -> list[tuple[str, dict[str, object]]]:
    """Every prompt's arm and plan, as the gateway would decide them under `text`."""
    config = parse_policy(set_block(text, ROLLOUT_KEY, None), "policy.yaml")
    live = InProcessClassifier(build_classifier(config.classifier, {}, Path.cwd()))
    ro = current_rollout(text)
    cand = InProcessClassifier(build_classifier(ro.candidate, {}, Path.cwd())) if ro else None
    caller = RolloutCaller(live, cand, ro)
    service = RouterService(config, live, {})
    out = []
    for i, (prompt, user) in enumerate(zip(PROMPTS, USERS, strict=True)):
        rid = f"req-{i}"
        req = ChatCompletionRequest(messages=[{"role": "user", "content": prompt}], user=user)
        key = sticky_key(ro, user=user, key_id=None, team=None, request_id=rid) if ro else ""
        choice = await caller.classify(prompt, key, rid)
        out.append((choice.arm, service.plan(req, choice.classification, rid).to_dict()))
    await caller.drain()
    return out


class Recorder:
    """The applier: remembers what was applied (the running app's view of the file)."""

    def __init__(self, fail: bool = False) -> None:
        self.applied: list[str] = []
        self.fail = fail

    def __call__(self, path: Path) -> None:
        if self.fail:
            raise RuntimeError("Serve refused the redeploy")
        self.applied.append(path.read_text())


def step(policy: Path, action: str, **kw: object) -> StepRequest:
    return StepRequest(action=action, policy=policy, actor="tester", **kw)  # type: ignore[arg-type]


async def test_rollback_after_canary_restores_the_previous_routing_exactly(
    policy: Path, artifacts: tuple[Path, Path]
) -> None:
    log, applied = MemoryRolloutLog(), Recorder()
    original = policy.read_text()
    before = await routing(original)
    assert {arm for arm, _ in before} == {"current"}

    await run_step(step(policy, "shadow", candidate=str(artifacts[1])), log, applier=applied)
    assert await routing(policy.read_text()) == before  # shadow changes no plan

    await run_step(step(policy, "canary", percent=50, force=True), log, applier=applied)
    during = await routing(policy.read_text())
    changed = [i for i, (b, d) in enumerate(zip(before, during, strict=True)) if b != d]
    assert changed, "the canary must route some users differently (else this test proves nothing)"
    assert all(during[i][0] == "candidate" for i in changed)

    entry = await run_step(step(policy, "rollback"), log, applier=applied)
    assert policy.read_text() == original  # byte for byte, comments included
    assert await routing(policy.read_text()) == before
    assert applied.applied[-1] == original
    assert entry.policy_sha256_after == text_sha(original)
    assert [e.action for e in await log.entries()] == ["rollback", "canary", "shadow"]


async def test_promote_then_rollback_and_the_log_names_versions(
    policy: Path, artifacts: tuple[Path, Path]
) -> None:
    from classifiers.artifact import read_metadata

    log, applied = MemoryRolloutLog(), Recorder()
    original = policy.read_text()
    before = await routing(original)
    await run_step(step(policy, "shadow", candidate=str(artifacts[1])), log, applier=applied)
    promoted = await run_step(step(policy, "promote", force=True), log, applier=applied)
    text = policy.read_text()
    assert ROLLOUT_KEY not in text and str(artifacts[1]) in text
    assert text.startswith("# A comment at the top")
    after_promote = await routing(text)
    assert after_promote != before
    cur, cand = read_metadata(artifacts[0]), read_metadata(artifacts[1])
    assert promoted.current.version == cur.version
    assert promoted.candidate is not None and promoted.candidate.version == cand.version
    assert promoted.candidate.data_sha256 == cand.data_sha256
    assert promoted.forced and promoted.actor == "tester"

    await run_step(step(policy, "rollback"), log, applier=applied)
    assert policy.read_text() == original
    assert await routing(original) == before
    with pytest.raises(StepRefused, match="nothing to roll back"):
        await run_step(step(policy, "rollback"), log, applier=applied)


async def test_canary_and_promote_need_a_promotable_report(
    policy: Path, artifacts: tuple[Path, Path], tmp_path: Path
) -> None:
    log = MemoryRolloutLog()
    await run_step(step(policy, "shadow", candidate=str(artifacts[1])), log, applier=None)
    report = artifacts[1] / "comparison.json"
    report.unlink(missing_ok=True)
    with pytest.raises(StepRefused, match=r"no comparison\.json"):
        await run_step(step(policy, "canary", percent=5), log, applier=None)
    report.write_text(json.dumps({"verdict": "worse", "promotable": False}))
    try:
        with pytest.raises(StepRefused, match="'worse'"):
            await run_step(step(policy, "promote"), log, applier=None)
        report.write_text(json.dumps({"verdict": "better", "promotable": True}))
        entry = await run_step(step(policy, "canary", percent=5), log, applier=None)
        assert entry.percent == 5 and entry.mode == "canary" and not entry.forced
    finally:
        report.unlink(missing_ok=True)
    ro = current_rollout(policy.read_text())
    assert ro is not None and ro.mode == "canary" and ro.percent == 5


async def test_a_failed_apply_puts_the_file_back_and_records_nothing(
    policy: Path, artifacts: tuple[Path, Path]
) -> None:
    log = MemoryRolloutLog()
    original = policy.read_text()
    with pytest.raises(RuntimeError, match="redeploy"):
        await run_step(
            step(policy, "shadow", candidate=str(artifacts[1])), log, applier=Recorder(fail=True)
        )
    assert policy.read_text() == original
    assert await log.entries() == []


async def test_rollback_refuses_to_discard_a_hand_edit(
    policy: Path, artifacts: tuple[Path, Path]
) -> None:
    log = MemoryRolloutLog()
    original = policy.read_text()
    await run_step(step(policy, "shadow", candidate=str(artifacts[1])), log, applier=None)
    policy.write_text(policy.read_text() + "# someone else's edit\n")
    with pytest.raises(StepRefused, match="changed since the last rollout step"):
        await run_step(step(policy, "rollback"), log, applier=None)
    await run_step(step(policy, "rollback", force=True), log, applier=None)
    assert policy.read_text() == original


async def test_an_invalid_step_changes_nothing(policy: Path) -> None:
    log = MemoryRolloutLog()
    original = policy.read_text()
    with pytest.raises(StepRefused, match="no rollout in progress"):
        await run_step(step(policy, "promote"), log, applier=None)
    with pytest.raises(StepRefused, match="less than or equal to 100"):
        await run_step(step(policy, "shadow", candidate="x", percent=150), log, applier=None)
    assert policy.read_text() == original and await log.entries() == []


def test_examples_identity_is_what_the_examples_classifier_reports() -> None:
    from classifiers.text import sha256_json
    from router.config import load_policy
    from router.continuous.live import classifier_identity
    from router.continuous.rollout import artifact_ref, read_doc

    path = Path(__file__).resolve().parents[2] / "policies" / "default.yaml"
    config = load_policy(path)
    # ExamplesClassifier.info().version is this hash of the examples it is built from.
    want = sha256_json({k: list(v) for k, v in config.route_examples().items()})[:12]
    doc = read_doc(path.read_text())
    assert artifact_ref(doc["classifier"], doc, Path.cwd()).version == want
    assert classifier_identity(config.classifier, config.route_examples())["version"] == want
