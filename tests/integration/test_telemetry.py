"""Spans (SDK in-memory exporter) and Prometheus text after known traffic."""

from __future__ import annotations

import random

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from router.serving.telemetry import Telemetry

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
PROMPT = "please keep this secret prompt out of telemetry"


def _serve_one(tel: Telemetry, headers: dict[str, str], *, fail_first: bool = True) -> None:
    """The ingress's sequence of spans for one request, in the order the lead's code runs it."""
    with tel.request_span(headers, model="auto", request_id="req-1", team="alpha") as root:
        tel.set_prompt(root, PROMPT)
        with tel.child("classify", **{"slm_router.classifier": "examples"}):
            pass
        with tel.child("decide") as decide:
            tel.set_route(decide, domain="code", confidence=0.91, reason="top", expert="coder")
        tel.set_route(root, domain="code", confidence=0.91, reason="top", expert="coder")
        if fail_first:
            with tel.expert_attempt("broken", "fake-broken", attempt=1) as a:
                tel.set_error(a, TimeoutError("no first token"))
        with tel.expert_attempt("coder", "qwen-coder-0.5b", attempt=2) as a:
            tel.set_usage(a, response_model="qwen-coder-0.5b", input_tokens=12, output_tokens=30)
        tel.set_usage(
            root,
            response_model="qwen-coder-0.5b",
            input_tokens=12,
            output_tokens=30,
            cost_usd=0.000123,
            baseline_usd=0.0009,
        )
        with tel.child("ledger.write", **{"slm_router.cost_usd": 0.000123}):
            pass


def test_request_span_tree_continues_the_callers_trace() -> None:
    exporter = InMemorySpanExporter()
    tel = Telemetry(span_exporter=exporter)
    _serve_one(tel, {"Traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"chat auto", "classify", "decide", "chat broken", "chat coder",
                          "ledger.write"}  # fmt: skip
    root = spans["chat auto"]
    assert format(root.context.trace_id, "032x") == CALLER_TRACE
    assert root.parent is not None and format(root.parent.span_id, "016x") == CALLER_SPAN
    assert root.kind == SpanKind.SERVER
    for name in ("classify", "decide", "chat broken", "chat coder", "ledger.write"):
        assert spans[name].parent is not None
        assert spans[name].parent.span_id == root.context.span_id, name
        assert spans[name].context.trace_id == root.context.trace_id
    attrs = dict(root.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "auto"
    assert attrs["gen_ai.response.model"] == "qwen-coder-0.5b"
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (12, 30)
    assert attrs["slm_router.domain"] == "code"
    assert attrs["slm_router.confidence"] == pytest.approx(0.91)
    assert attrs["slm_router.route_reason"] == "top"
    assert attrs["slm_router.cost_usd"] == pytest.approx(0.000123)
    assert spans["chat broken"].status.status_code == StatusCode.ERROR
    assert spans["chat coder"].attributes["slm_router.attempt"] == 2
    every_value = [str(v) for s in spans.values() for v in (s.attributes or {}).values()]
    assert not any(PROMPT in v for v in every_value)


def test_new_trace_without_traceparent_and_prompt_capture_flag() -> None:
    exporter = InMemorySpanExporter()
    tel = Telemetry(span_exporter=exporter, capture_prompts=True)
    _serve_one(tel, {}, fail_first=False)
    root = next(s for s in exporter.get_finished_spans() if s.name == "chat auto")
    assert root.parent is None
    assert format(root.context.trace_id, "032x") != CALLER_TRACE
    assert root.attributes["slm_router.prompt"] == PROMPT


def test_exception_marks_the_request_span() -> None:
    exporter = InMemorySpanExporter()
    tel = Telemetry(span_exporter=exporter)
    with pytest.raises(RuntimeError), tel.request_span({}, model="auto"):
        raise RuntimeError("boom")
    (root,) = exporter.get_finished_spans()
    assert root.status.status_code == StatusCode.ERROR


def _samples(tel: Telemetry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, ctype = tel.render_prometheus()
    assert ctype.startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_after_known_traffic() -> None:
    tel = Telemetry()
    rng = random.Random(5)
    traffic = [
        (rng.choice(["coder", "mathy"]), rng.randint(1, 500), rng.randint(0, 300))
        for _ in range(40)
    ]
    for expert, tin, tout in traffic:
        tel.observe_classifier(0.003, "examples")
        tel.observe_decision(domain="d-" + expert, expert=expert, reason="top")
        tel.observe_request(
            expert=expert, domain="d-" + expert, duration_s=0.2, ttft_s=0.04, stream=True,
            input_tokens=tin, output_tokens=tout, cost_usd=0.5, team="alpha",
        )  # fmt: skip
    tel.observe_error("timeout", "coder")
    tel.observe_error("timeout", "coder")
    got = _samples(tel)
    for expert in ("coder", "mathy"):
        mine = [t for t in traffic if t[0] == expert]
        labels = (("domain", "d-" + expert), ("expert", expert), ("status", "200"),
                  ("stream", "true"))  # fmt: skip
        assert got[("slm_router_request_duration_seconds_count", labels)] == len(mine)
        assert got[("slm_router_request_duration_seconds_bucket", (*labels[:2], ("le", "0.25"),
                    *labels[2:]))] == len(mine)  # fmt: skip
        assert got[("slm_router_request_duration_seconds_bucket", (*labels[:2], ("le", "0.1"),
                    *labels[2:]))] == 0  # fmt: skip
        assert got[("slm_router_time_to_first_token_seconds_count", (("expert", expert),))] == len(
            mine
        )
        tok_in = got[("slm_router_tokens_total", (("direction", "input"), ("expert", expert)))]
        tok_out = got[("slm_router_tokens_total", (("direction", "output"), ("expert", expert)))]
        assert (tok_in, tok_out) == (sum(t[1] for t in mine), sum(t[2] for t in mine))
        decisions = (("domain", "d-" + expert), ("expert", expert), ("reason", "top"))
        assert got[("slm_router_routing_decisions_total", decisions)] == len(mine)
        cost = got[("slm_router_cost_usd_total", (("expert", expert), ("team", "alpha")))]
        assert cost == pytest.approx(0.5 * len(mine))
    assert (
        got[("slm_router_classifier_duration_seconds_count", (("classifier", "examples"),))] == 40
    )
    assert got[("slm_router_errors_total", (("error_type", "timeout"), ("expert", "coder")))] == 2


def test_instances_do_not_share_state() -> None:
    a, b = Telemetry(), Telemetry()
    a.observe_error("x")
    assert ("slm_router_errors_total", (("error_type", "x"), ("expert", ""))) in _samples(a)
    assert not any(name == "slm_router_errors_total" for name, _ in _samples(b))
