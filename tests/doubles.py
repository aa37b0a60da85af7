"""Test doubles that are not part of the product (the fake expert backend is, in experts/)."""

from __future__ import annotations

from classifiers.base import Classification


class KeywordClassifier:
    """Routes by keywords: lets router tests control the domain exactly."""

    def __init__(self, keywords: dict[str, str], threshold: float = 0.5) -> None:
        self.keywords = keywords
        self.calls: list[str] = []

    async def classify(self, text: str) -> Classification:
        self.calls.append(text)
        for word, label in self.keywords.items():
            if word in text.lower():
                return Classification({label: 0.9}, label, 0.9, False)
        return Classification({"none": 0.2}, "none", 0.2, True)
