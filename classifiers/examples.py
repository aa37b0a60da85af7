"""Zero-training classifier: built at load time from example utterances per label.

Score per label = mix of nearest-exemplar and centroid cosine similarity; softmax with a
temperature gives probabilities; the best raw similarity under a threshold means no label
fits (out of scope). Ops fix a misroute by adding an example: no training step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from classifiers.base import ArtifactInfo, Classification, Classifier
from classifiers.encoder import SentenceEncoder, shared_encoder
from classifiers.scoring import make_classifications, softmax
from classifiers.text import sha256_json

# Chosen on CLINC150 slices (docs/bench/classifiers.md). A fixed similarity threshold cannot
# fit both broad routes (a whole domain: in-scope similarity ~0.2) and narrow ones (an intent:
# ~0.4), so by default the threshold is the 5th percentile of the exemplars' own leave-one-out
# similarity to their label: the routes' spread decides.
DEFAULT_TEMPERATURE = 0.05
DEFAULT_LOO_QUANTILE = 0.05
FALLBACK_SIM_THRESHOLD = 0.3
DEFAULT_NEAREST_WEIGHT = 0.5


class ExamplesClassifier(Classifier):
    def __init__(
        self,
        examples: Mapping[str, Sequence[str]],
        *,
        encoder: SentenceEncoder | None = None,
        temperature: float = DEFAULT_TEMPERATURE,
        sim_threshold: float | None = None,
        nearest_weight: float = DEFAULT_NEAREST_WEIGHT,
    ) -> None:
        if not examples:
            raise ValueError("examples classifier needs at least one label")
        self._labels = list(examples)
        self._encoder = encoder or shared_encoder()
        self.temperature = temperature
        self.nearest_weight = nearest_weight
        texts: list[str] = []
        owners: list[int] = []
        for j, label in enumerate(self._labels):
            # A label without utterances still gets one exemplar: its own name.
            utterances = [u for u in examples[label] if u and u.strip()] or [label]
            texts.extend(utterances)
            owners.extend([j] * len(utterances))
        self._exemplars = self._encoder.encode(texts)
        self._owner = np.asarray(owners)
        self._starts = np.flatnonzero(np.r_[True, self._owner[1:] != self._owner[:-1]])
        centroids = np.stack(
            [self._exemplars[self._owner == j].mean(0) for j in range(len(self._labels))]
        )
        self._centroids = centroids / np.linalg.norm(centroids, axis=1, keepdims=True).clip(1e-9)
        self._sha = sha256_json({k: list(v) for k, v in examples.items()})
        self.sim_threshold = self._loo_threshold() if sim_threshold is None else sim_threshold

    def _loo_threshold(self) -> float:
        """Low quantile of each exemplar's similarity to its label without itself."""
        sims = self._exemplars @ self._exemplars.T
        w = self.nearest_weight
        scores = []
        for j in range(len(self._labels)):
            idx = np.flatnonzero(self._owner == j)
            if len(idx) < 2:
                continue
            block = sims[np.ix_(idx, idx)]
            np.fill_diagonal(block, -np.inf)
            nearest = block.max(axis=1)
            total = self._exemplars[idx].sum(axis=0)
            rest = total[None, :] - self._exemplars[idx]
            rest /= np.linalg.norm(rest, axis=1, keepdims=True).clip(1e-9)
            centroid = np.einsum("ij,ij->i", rest, self._exemplars[idx])
            scores.append(w * nearest + (1 - w) * centroid)
        if not scores:
            return FALLBACK_SIM_THRESHOLD
        return float(np.quantile(np.concatenate(scores), DEFAULT_LOO_QUANTILE))

    @property
    def labels(self) -> Sequence[str]:
        return self._labels

    def similarities(self, texts: Sequence[str]) -> np.ndarray:
        """(n, labels) blended cosine similarity."""
        q = self._encoder.encode(texts)
        if len(q) == 0:
            return np.zeros((0, len(self._labels)))
        nearest = np.maximum.reduceat(q @ self._exemplars.T, self._starts, axis=1)
        centroid = q @ self._centroids.T
        w = self.nearest_weight
        return w * nearest + (1 - w) * centroid

    def classify(self, texts: Sequence[str]) -> list[Classification]:
        if not texts:
            return []
        sims = self.similarities(texts)
        probs = softmax(sims, self.temperature)
        oos = sims.max(axis=1) < self.sim_threshold
        return make_classifications(probs, self._labels, oos)

    def info(self) -> ArtifactInfo:
        return ArtifactInfo(
            kind="examples",
            version=self._sha[:12],
            data_sha256=self._sha,
            metadata={
                "labels": list(self._labels),
                "encoder": self._encoder.name,
                "backend": self._encoder.backend,
                "quantized": self._encoder.quantize,
                "temperature": self.temperature,
                "sim_threshold": self.sim_threshold,
                "exemplars": len(self._owner),
            },
        )
