"""Traces and metrics for the gateway (OpenTelemetry SDK; Prometheus text for GET /metrics).

One `Telemetry` per process owns its providers and its Prometheus registry: nothing global is
touched, so tests can build as many as they like. In Ray Serve every replica is a process of its
own, so /metrics on one ingress replica shows that replica's traffic only; scrape every replica
(or rely on Serve's own per-deployment metrics for totals). Cost counters here are floats for
dashboards; exact money lives in the ledger.

Spans follow the GenAI semantic conventions: the request span is "chat {model}", with children
"classify", "decide", one "chat {expert}" per expert attempt and "ledger.write". A W3C
`traceparent` header continues the caller's trace. Prompt text is never recorded unless
`capture_prompts` is on (the policy's `log_prompts` flag).

OTLP export happens only when OTEL_EXPORTER_OTLP_ENDPOINT is set and an OTLP exporter package
(opentelemetry-exporter-otlp-proto-http or -grpc) is importable.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

log = logging.getLogger(__name__)

# GenAI semantic conventions (kept as strings: the semconv package marks them incubating).
OPERATION = "gen_ai.operation.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
PROVIDER = "gen_ai.provider.name"
# Ours.
DOMAIN = "slm_router.domain"
CONFIDENCE = "slm_router.confidence"
ROUTE_REASON = "slm_router.route_reason"
EXPERT = "slm_router.expert"
COST_USD = "slm_router.cost_usd"
BASELINE_USD = "slm_router.baseline_cost_usd"
TEAM = "slm_router.team"
ATTEMPT = "slm_router.attempt"
PROMPT = "slm_router.prompt"
REQUEST_ID = "slm_router.request_id"

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
CLASSIFIER_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


def _otlp_span_exporter(endpoint: str) -> SpanExporter | None:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[assignment]
                OTLPSpanExporter,
            )
        except ImportError:
            log.warning(
                "OTEL_EXPORTER_OTLP_ENDPOINT=%s is set but no OTLP exporter is installed "
                "(pip install opentelemetry-exporter-otlp-proto-http); not exporting",
                endpoint,
            )
            return None
    return OTLPSpanExporter()  # reads the endpoint and headers from the environment


def _otlp_metric_reader() -> MetricReader | None:
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    except ImportError:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # type: ignore[assignment]
                OTLPMetricExporter,
            )
        except ImportError:
            return None
    return PeriodicExportingMetricReader(OTLPMetricExporter())


class Metrics:
    """The gateway's instruments, on a MeterProvider read by Prometheus (and OTLP if set)."""

    def __init__(self, resource: Resource, otlp: bool) -> None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=True)
        readers: list[MetricReader] = [
            PrometheusMetricReader(registry=self.registry, scope_info_enabled=False)
        ]
        exemplars = None
        if otlp and (reader := _otlp_metric_reader()) is not None:
            readers.append(reader)
        else:
            # Prometheus text carries no exemplars: don't pay for a reservoir on every record.
            exemplars = AlwaysOffExemplarFilter()
        self.provider = MeterProvider(
            resource=resource, metric_readers=readers, exemplar_filter=exemplars
        )
        m = self.provider.get_meter("slm_router")
        self.request_duration = m.create_histogram(
            "slm_router_request_duration", unit="s",
            description="Request latency, end to end in the ingress, by expert",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )  # fmt: skip
        self.ttft = m.create_histogram(
            "slm_router_time_to_first_token", unit="s",
            description="Time to first token of streamed answers, by expert",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )  # fmt: skip
        self.classifier_duration = m.create_histogram(
            "slm_router_classifier_duration", unit="s",
            description="Classifier latency per request",
            explicit_bucket_boundaries_advisory=CLASSIFIER_BUCKETS_S,
        )  # fmt: skip
        self.tokens = m.create_counter(
            "slm_router_tokens", description="Tokens by expert and direction (input|output)"
        )
        self.cost = m.create_counter(
            "slm_router_cost_usd", description="Spend in USD by expert and team (approximate)"
        )
        self.baseline_cost = m.create_counter(
            "slm_router_baseline_cost_usd", description="Baseline spend in USD (approximate)"
        )
        self.decisions = m.create_counter(
            "slm_router_routing_decisions", description="Routing decisions by domain and expert"
        )
        self.errors = m.create_counter("slm_router_errors", description="Errors by type and expert")
        self.ledger_spooled = m.create_counter(
            "slm_router_ledger_spooled", description="Ledger records spooled to local disk"
        )


class Telemetry:
    def __init__(
        self,
        *,
        service_name: str = "slm-router",
        span_exporter: SpanExporter | None = None,
        capture_prompts: bool = False,
        otlp_endpoint: str | None = None,
    ) -> None:
        endpoint = otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None
        self.capture_prompts = capture_prompts
        self.resource = Resource.create({"service.name": service_name})
        otlp = _otlp_span_exporter(endpoint) if endpoint else None
        # With no exporter a recorded span goes nowhere, yet building one (ids, attribute
        # cleaning, exemplars) was ~20% of the ingress's own CPU per request: leave root spans
        # unsampled then. A caller's sampled `traceparent` is still honoured.
        sampler = None if span_exporter is not None or otlp is not None else ParentBased(ALWAYS_OFF)
        self.tracer_provider = TracerProvider(resource=self.resource, sampler=sampler)
        if span_exporter is not None:
            self.tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
        if otlp is not None:
            self.tracer_provider.add_span_processor(BatchSpanProcessor(otlp))
        self.tracer = self.tracer_provider.get_tracer("slm_router")
        self.metrics = Metrics(self.resource, otlp=bool(endpoint))
        self._propagator = TraceContextTextMapPropagator()

    # ---- traces --------------------------------------------------------------------------

    def extract(self, headers: Mapping[str, str]) -> Context:
        """The caller's context from `traceparent`/`tracestate` (case-insensitive)."""
        carrier = {k.lower(): v for k, v in headers.items()}
        return self._propagator.extract(carrier)

    def inject(self, headers: dict[str, str]) -> None:
        """Adds `traceparent` for the current span (for calls to remote experts)."""
        self._propagator.inject(headers)

    def start_request_span(
        self,
        headers: Mapping[str, str],
        *,
        model: str,
        operation: str = "chat",
        request_id: str = "",
        team: str = "",
        max_tokens: int | None = None,
    ) -> Span:
        """The request's root span, started but not made current: a streamed answer ends it in
        another task, and a contextvars token can only be reset in the task that set it."""
        attrs: dict[str, Any] = {OPERATION: operation, REQUEST_MODEL: model}
        if request_id:
            attrs[REQUEST_ID] = request_id
        if team:
            attrs[TEAM] = team
        if max_tokens is not None:
            attrs[REQUEST_MAX_TOKENS] = max_tokens
        return self.tracer.start_span(
            f"{operation} {model}",
            context=self.extract(headers),
            kind=SpanKind.SERVER,
            attributes=attrs,
        )

    @contextmanager
    def request_span(
        self,
        headers: Mapping[str, str],
        *,
        model: str,
        operation: str = "chat",
        request_id: str = "",
        team: str = "",
        max_tokens: int | None = None,
    ) -> Iterator[Span]:
        """The request's root span as the current span (a child of the caller's `traceparent`)."""
        span = self.start_request_span(
            headers,
            model=model,
            operation=operation,
            request_id=request_id,
            team=team,
            max_tokens=max_tokens,
        )
        with trace.use_span(
            span, end_on_exit=True, record_exception=True, set_status_on_exception=True
        ):
            yield span

    @contextmanager
    def child(self, name: str, **attributes: Any) -> Iterator[Span]:
        """A child of the current span, e.g. "classify", "decide", "ledger.write"."""
        attrs = {k: v for k, v in attributes.items() if v is not None}
        with self.tracer.start_as_current_span(name, attributes=attrs) as span:
            yield span

    @contextmanager
    def expert_attempt(
        self, expert: str, model: str, attempt: int, operation: str = "chat"
    ) -> Iterator[Span]:
        attrs: dict[str, AttributeValue] = {
            OPERATION: operation,
            REQUEST_MODEL: model,
            EXPERT: expert,
            ATTEMPT: attempt,
        }
        with self.tracer.start_as_current_span(
            f"{operation} {expert}", kind=SpanKind.CLIENT, attributes=attrs
        ) as span:
            yield span

    def set_route(
        self, span: Span, *, domain: str, confidence: float, reason: str, expert: str
    ) -> None:
        span.set_attributes(
            {DOMAIN: domain, CONFIDENCE: float(confidence), ROUTE_REASON: reason, EXPERT: expert}
        )

    def set_usage(
        self,
        span: Span,
        *,
        response_model: str,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float | None = None,
        baseline_usd: float | None = None,
    ) -> None:
        attrs: dict[str, Any] = {
            RESPONSE_MODEL: response_model,
            INPUT_TOKENS: int(input_tokens),
            OUTPUT_TOKENS: int(output_tokens),
        }
        if cost_usd is not None:
            attrs[COST_USD] = float(cost_usd)
        if baseline_usd is not None:
            attrs[BASELINE_USD] = float(baseline_usd)
        span.set_attributes(attrs)

    def set_prompt(self, span: Span, text: str) -> None:
        """Records the prompt only when capture is on; otherwise a no-op by design."""
        if self.capture_prompts:
            span.set_attribute(PROMPT, text)

    def set_error(self, span: Span, exc: BaseException) -> None:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        span.set_attribute("error.type", getattr(exc, "error_type", None) or type(exc).__name__)

    # ---- metrics -------------------------------------------------------------------------

    def observe_request(
        self,
        *,
        expert: str,
        domain: str,
        duration_s: float,
        status: int = 200,
        stream: bool = False,
        ttft_s: float | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
        baseline_usd: float = 0.0,
        team: str = "",
    ) -> None:
        m = self.metrics
        labels: dict[str, AttributeValue] = {
            "expert": expert,
            "domain": domain,
            "status": str(status),
            "stream": stream,
        }
        m.request_duration.record(duration_s, labels)
        if ttft_s is not None:
            m.ttft.record(ttft_s, {"expert": expert})
        m.tokens.add(int(input_tokens), {"expert": expert, "direction": "input"})
        m.tokens.add(int(output_tokens), {"expert": expert, "direction": "output"})
        m.cost.add(float(cost_usd), {"expert": expert, "team": team})
        m.baseline_cost.add(float(baseline_usd), {"expert": expert, "team": team})

    def observe_decision(self, *, domain: str, expert: str, reason: str = "") -> None:
        self.metrics.decisions.add(1, {"domain": domain, "expert": expert, "reason": reason})

    def observe_classifier(self, duration_s: float, classifier: str = "") -> None:
        self.metrics.classifier_duration.record(duration_s, {"classifier": classifier})

    def observe_error(self, error_type: str, expert: str = "") -> None:
        self.metrics.errors.add(1, {"error_type": error_type, "expert": expert})

    def observe_spooled(self, n: int = 1) -> None:
        self.metrics.ledger_spooled.add(n)

    def render_prometheus(self) -> tuple[bytes, str]:
        """(body, content type) for GET /metrics."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST

    def install_global(self) -> None:
        """Make this the process-wide tracer provider (once per process; OTel refuses twice)."""
        trace.set_tracer_provider(self.tracer_provider)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.metrics.provider.shutdown()
