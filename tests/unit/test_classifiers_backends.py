"""Encoder backends (ONNX Runtime, torch, static), the ONNX export cache, grouped labels."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from classifiers import ClassifierSpec, build_classifier, load_artifact
from classifiers.encoder import SentenceEncoder
from classifiers.grouped import GroupedModel, fine_to_coarse
from classifiers.onnx_export import onnx_path
from classifiers.train import train_artifact
from tests.unit.test_classifiers_helpers import WORDS, make_rows, tiny_encoder, write_jsonl

TEXTS = ["integral derivative algebra", "bake garlic sauce please", "passport", "how do i solve"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def private_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLM_ROUTER_CACHE", str(cache))


@pytest.fixture(scope="module")
def encoder_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_encoder(tmp_path_factory.mktemp("enc"))


def embed(path: str, backend: str, quantize: bool, texts: list[str]) -> np.ndarray:
    enc = SentenceEncoder(path, backend=backend, quantize=quantize, threads=1, cache_size=0)
    return enc.encode(texts)


@pytest.mark.parametrize("quantize", [False, True])
def test_onnx_matches_torch(encoder_path: str, quantize: bool) -> None:
    ref = embed(encoder_path, "torch", False, TEXTS)
    got = embed(encoder_path, "onnx", quantize, TEXTS)
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    cos = (got * ref).sum(1)
    assert cos.min() > (0.98 if quantize else 0.9999)


def test_padding_in_a_batch_changes_nothing(encoder_path: str) -> None:
    enc = SentenceEncoder(encoder_path, backend="onnx", quantize=False, cache_size=0)
    batch = enc.encode(TEXTS)  # one batch, padded to the longest
    single = np.stack([enc.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_export_is_built_once_and_keyed_by_content(encoder_path: str, tmp_path: Path) -> None:
    first = onnx_path(encoder_path, quantize=True)
    mtime = first.stat().st_mtime_ns
    assert onnx_path(encoder_path, quantize=True) == first
    assert first.stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert onnx_path(encoder_path, quantize=False) != first
    with pytest.raises(FileNotFoundError, match="not a local model folder"):
        onnx_path(tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("model2vec") is None, reason="model2vec not installed")
def test_static_backend_distills_locally(encoder_path: str) -> None:
    vecs = embed(encoder_path, "static", False, TEXTS)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    # The same words in another order: a static model ignores order entirely.
    again = embed(encoder_path, "static", False, ["algebra derivative integral"])
    np.testing.assert_allclose(vecs[0], again[0], atol=1e-5)


def test_unknown_backend_is_a_clear_error(encoder_path: str) -> None:
    with pytest.raises(ValueError, match="unknown encoder backend"):
        embed(encoder_path, "tpu", False, ["x"])


def test_spec_backend_reaches_the_encoder(encoder_path: str) -> None:
    examples = {label: words[:4] for label, words in WORDS.items()}
    for backend in ("onnx", "torch"):
        spec = ClassifierSpec(kind="examples", encoder=encoder_path, backend=backend)
        clf = build_classifier(spec, examples, Path.cwd())
        assert clf.classify(["integral derivative"])[0].label == "math"
        assert clf._encoder.backend == backend  # type: ignore[attr-defined]


class _Fixed:
    classes = ["a1", "a2", "b1", "oos"]

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return np.tile([0.1, 0.2, 0.6, 0.1], (len(texts), 1))

    def save(self, directory: Path) -> None:
        raise NotImplementedError


def test_grouped_sums_fine_probabilities() -> None:
    mapping = {"a1": "a", "a2": "a", "b1": "b", "oos": "out_of_scope"}
    model = GroupedModel(_Fixed(), mapping)
    assert model.classes == ["a", "b", "out_of_scope"]
    np.testing.assert_allclose(model.predict_proba(["x"]), [[0.3, 0.6, 0.1]])
    with pytest.raises(ValueError, match="without a coarse label"):
        GroupedModel(_Fixed(), {"a1": "a"})


def test_fine_label_must_belong_to_one_label() -> None:
    assert fine_to_coarse(["x", "y", "x"], ["A", "B", "A"]) == {"x": "A", "y": "B"}
    with pytest.raises(ValueError, match="row 3"):
        fine_to_coarse(["x", "y", "x"], ["A", "B", "B"])


def test_fine_label_field_trains_on_intents_answers_domains(tmp_path: Path) -> None:
    def rows(n: int, seed: int) -> list[dict[str, object]]:
        out = make_rows(n, seed=seed, oos=n)
        for r in out:  # two "intents" per domain, by the parity of the text's length
            r["intent"] = f"{r['domain']}-{len(str(r['text'])) % 2}"
            if r["domain"] == "oos":
                r["intent"] = "oos"
        return out

    train = write_jsonl(tmp_path / "train.jsonl", rows(12, 1))
    val = write_jsonl(tmp_path / "val.jsonl", rows(6, 2))
    meta = train_artifact(
        train,
        tmp_path / "art",
        label_field="domain",
        fine_label_field="intent",
        val=val,
        oos_label="oos",
        kind="tfidf",
    )
    assert meta.fine_label_field == "intent" and meta.labels == ["cooking", "math", "travel"]
    assert meta.fine_to_label is not None and meta.fine_to_label["math-0"] == "math"
    stored = json.loads((tmp_path / "art" / "metadata.json").read_text())
    assert stored["fine_to_label"] == meta.fine_to_label
    clf = load_artifact(tmp_path / "art")
    assert clf.classify(["integral derivative algebra"])[0].label == "math"
    assert meta.validation["in_scope_accuracy"] >= 0.9
