"""The ingress-side bundle: live reference from the artifact, drift states, canary arms, status.

`FutureConfig` is AppConfig with the three fields this work asks the lead to add, so the test
also checks that those sections load through the real policy loader.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from classifiers import build_classifier
from classifiers.artifact import read_metadata
from classifiers.train import Dataset, save_classifier, train_datasets
from policies.loader import validate_text
from router.config import AppConfig, cross_check
from router.continuous.arms import canary_arm, sticky_key
from router.continuous.live import Continuous
from router.continuous.spec import ClassifierRollout, DriftPolicy, FeedbackPolicy
from router.serving.callers import InProcessClassifier
from router.serving.wiring import build_candidate

WORDS = {
    "math": ["integral", "derivative", "equation", "algebra", "matrix", "prime"],
    "cooking": ["recipe", "bake", "oven", "flour", "simmer", "garlic"],
    "travel": ["flight", "hotel", "passport", "airport", "luggage", "visa"],
}
FILLER = ["please", "help", "me", "with", "the", "my", "how", "do", "i", "what"]


class FutureConfig(AppConfig):
    classifier_rollout: ClassifierRollout | None = None
    drift: DriftPolicy = DriftPolicy()
    feedback: FeedbackPolicy = FeedbackPolicy()


def data(n: int, seed: int, only: str | None = None) -> Dataset:
    rng = random.Random(seed)
    texts, labels = [], []
    for label, words in WORDS.items():
        for _ in range(n if only in (None, label) else 0):
            picked = rng.sample(words, 2) + rng.sample(FILLER, 3)
            rng.shuffle(picked)
            texts.append(" ".join(picked))
            labels.append(label)
    return Dataset(texts, labels)


VAL = data(40, 2)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("live")
    save_classifier(train_datasets(data(30, 1), VAL, kind="tfidf", seed=0), out)
    return out


POLICY = """\
version: 1
classifier: {{kind: artifact, path: {path}}}
experts:
  m: {{backend: fake}}
  c: {{backend: fake}}
  t: {{backend: fake}}
routing:
  fallback: m
  routes:
    - {{domain: math, experts: [m]}}
    - {{domain: cooking, experts: [c]}}
    - {{domain: travel, experts: [t]}}
drift: {{window: 120, min_samples: 60, psi_alert: 0.2}}
feedback: {{keep_prompts: false}}
{extra}"""


def load(path: Path, extra: str = "") -> FutureConfig:
    result = validate_text(
        POLICY.format(path=path, extra=extra), FutureConfig, file="p.yaml", cross_check=cross_check
    )
    assert result.value is not None, [str(i) for i in result.issues]
    return result.value


def live(config: FutureConfig) -> InProcessClassifier:
    return InProcessClassifier(build_classifier(config.classifier, {}, Path.cwd()))


async def replay(c: Continuous, texts: list[str], users: int = 1) -> list[str]:
    arms = []
    for i, text in enumerate(texts):
        rid = f"r{i}"
        choice = await c.classify(
            text, user=f"u{i % users}", key_id=None, team=None, request_id=rid
        )
        c.observe(choice, rid, text)
        arms.append(choice.arm)
    await c.caller.drain()
    return arms


async def test_validation_traffic_is_ok_and_a_shifted_mix_alerts(artifact: Path) -> None:
    config = load(artifact)
    c = Continuous(config, live(config))
    assert c.drift.reference is not None
    assert c.drift.reference.source == f"artifact {read_metadata(artifact).version}"
    # The reference was taken on VAL: replaying VAL itself reproduces it (120 = the window).
    await replay(c, VAL.texts)
    snap = c.drift.snapshot()
    assert snap.state == "ok"
    assert snap.metrics["domain_mix"].psi == pytest.approx(0.0, abs=1e-9)
    assert snap.metrics["confidence"].psi == pytest.approx(0.0, abs=1e-9)
    status = c.status()
    assert status["classifier"]["version"] == read_metadata(artifact).version
    assert status["drift"]["state"] == "ok" and status["alerts"] == []

    await replay(c, data(120, 3, only="math").texts)  # all maths: the mix has moved
    status = c.status()
    assert status["drift"]["state"] == "alert"
    assert status["drift"]["metrics"]["domain_mix"]["psi"] > 0.2
    assert status["alerts"] and "domain_mix" in status["alerts"][0]["message"]


async def test_canary_users_are_routed_by_the_candidate_and_kept_out_of_drift(
    artifact: Path, tmp_path: Path
) -> None:
    swapped = data(30, 1)
    labels = [{"math": "cooking", "cooking": "math"}.get(x, x) for x in swapped.labels]
    cand = train_datasets(Dataset(swapped.texts, labels), VAL, kind="tfidf", seed=1)
    save_classifier(cand, tmp_path / "cand")
    extra = (
        f"classifier_rollout: {{candidate: {{kind: artifact, path: {tmp_path / 'cand'}}}, "
        "mode: canary, percent: 40}\n"
    )
    config = load(artifact, extra)
    assert config.classifier_rollout is not None
    c = Continuous(config, live(config), build_candidate(config))
    arms = await replay(c, VAL.texts, users=30)
    expected = [
        canary_arm(
            config.classifier_rollout,
            sticky_key(
                config.classifier_rollout,
                user=f"u{i % 30}",
                key_id=None,
                team=None,
                request_id=f"r{i}",
            ),
        )
        for i in range(len(VAL.texts))
    ]
    assert arms == expected and "candidate" in arms and "current" in arms
    assert len(c.drift) == arms.count("current")
    status = c.status()
    assert status["rollout"]["mode"] == "canary"
    assert status["rollout"]["candidate"]["version"] == cand.meta.version
    assert status["rollout"]["shadow"]["canary_arms"]["candidate"] == arms.count("candidate")


def test_no_reference_is_reported_not_guessed(artifact: Path) -> None:
    config = load(artifact).model_copy(
        update={
            "classifier": load(artifact).classifier.model_copy(
                update={"path": None, "kind": "examples"}
            )
        }
    )
    c = Continuous(config, live(load(artifact)))
    assert c.drift.snapshot().state == "no_reference"
    assert c.status()["classifier"]["kind"] == "examples"
