"""Metric functions against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from classifiers.metrics import label_metrics, quality_curve, routing_metrics


def test_label_metrics_hand_computed() -> None:
    gold = ["a", "a", "b", "oos", "oos"]
    pred = ["a", "b", "b", "oos", "a"]
    m = label_metrics(gold, pred, "oos")
    assert m.in_scope_accuracy == pytest.approx(2 / 3)
    assert m.oos_recall == pytest.approx(1 / 2)
    assert m.oos_precision == pytest.approx(1.0)
    # F1: a = 2*1/(2+1+1) = .5, b = 2/(2+1) = 2/3, oos = 2/(2+1) = 2/3
    assert m.macro_f1 == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    assert sorted(m.top_confusions) == [("a", "b", 1), ("oos", "a", 1)]


def test_label_metrics_without_oos() -> None:
    m = label_metrics(["x", "y"], ["x", "x"], None)
    assert m.in_scope_accuracy == 0.5
    assert m.oos_recall is None and m.oos_precision is None


def test_routing_metrics_hand_computed() -> None:
    weak = [True, False, True, False]
    strong = [True, True, False, True]
    # Order by score: rows 1 (+1), 3 (+1), 0 (0), 2 (-1) -> accuracy .5 .75 1 1 .75
    m = routing_metrics([0.1, 0.9, 0.0, 0.8], weak, strong)
    assert m.weak_accuracy == 0.5 and m.strong_accuracy == 0.75
    # PGR 0 1 2 2 1, trapezoid over steps of 1/4
    assert m.apgr == pytest.approx((0.5 + 1.5 + 2 + 1.5) / 4)
    assert m.cpt50 == 0.25 and m.cpt80 == 0.25
    assert m.cost_saved_at_95 == 0.75


def test_constant_score_is_the_random_router() -> None:
    rng = np.random.default_rng(0)
    weak = rng.random(500) < 0.6
    strong = rng.random(500) < 0.8
    m = routing_metrics(np.zeros(500), weak, strong)
    assert m.apgr == pytest.approx(0.5)
    curve = quality_curve(np.zeros(500), weak, strong)
    assert np.allclose(curve, np.linspace(weak.mean(), strong.mean(), 501))


def test_inverted_router_is_worse_than_random() -> None:
    rng = np.random.default_rng(1)
    weak = rng.random(400) < 0.6
    strong = np.ones(400, dtype=bool)
    good = routing_metrics((~weak).astype(float), weak, strong)
    bad = routing_metrics(weak.astype(float), weak, strong)
    assert good.apgr > 0.5 > bad.apgr
    assert good.cost_saved_at_95 > bad.cost_saved_at_95
