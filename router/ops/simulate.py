"""`slm-router policy explain|simulate`: prompts through the policy's real classifier and the
engine, without generating. Aggregation is policies.simulate's (pure); this module does the I/O:
reading traffic, batching the classifier, counting tokens, the table and the chart.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from policies import decide
from policies.compiled import CompiledPolicy
from policies.errors import PolicyError
from policies.simulate import SimRecord, routed_domain, summarize
from policies.types import RequestContext, RoutePlan
from router.config import AppConfig
from router.finance.costs import TokenPrice, token_cost_usd
from router.ops.tokens import TokenCounters
from router.serving.service import pinned, scores_of

if TYPE_CHECKING:
    from classifiers import Classifier
    from experts.spec import ExpertSpec

BATCH_SIZE = 64
DEFAULT_COMPLETION_TOKENS = 256


def build_policy_classifier(config: AppConfig) -> Classifier:
    """The classifier the gateway would build in-process for this policy (router.serving.wiring does
    the same call; paths in `config` are already absolute, see router.config)."""
    from classifiers import build_classifier

    return build_classifier(config.classifier, config.route_examples(), Path.cwd())


# --- traffic ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrafficRow:
    text: str
    label: str | None = None
    team: str | None = None
    user: str | None = None
    model: str | None = None
    completion_tokens: int | None = None  # observed, when the file has it


def _text_of(row: Mapping[str, Any], text_field: str) -> str | None:
    value = row.get(text_field)
    if isinstance(value, str):
        return value
    messages = row.get("messages")  # an OpenAI request body: route on the last user message
    if isinstance(messages, list):
        for m in reversed(messages):
            if isinstance(m, Mapping) and m.get("role") == "user":
                content = m.get("content")
                return content if isinstance(content, str) else json.dumps(content)
    return None


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def read_traffic(
    path: Path, text_field: str = "text", label_field: str | None = None
) -> list[TrafficRow]:
    """JSONL: one object per line with `text_field` (or OpenAI `messages`), optionally the
    label, `team`, `user`, `model` (a pin) and observed `completion_tokens`."""
    from classifiers.text import iter_jsonl

    rows: list[TrafficRow] = []
    for lineno, obj in iter_jsonl(path):
        text = _text_of(obj, text_field)
        if text is None:
            raise ValueError(f"{path}:{lineno}: no '{text_field}' string and no user message")
        completion = obj.get("completion_tokens")
        rows.append(
            TrafficRow(
                text=text,
                label=_opt_str(obj.get(label_field)) if label_field else None,
                team=_opt_str(obj.get("team")),
                user=_opt_str(obj.get("user")),
                model=_opt_str(obj.get("model")),
                completion_tokens=completion if isinstance(completion, int) else None,
            )
        )
    return rows


# --- replay ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Replayed:
    records: list[SimRecord]
    refused: Counter[str]  # PolicyError code -> count (pins the policy refuses)
    classify_s: float


def context_for(
    row: TrafficRow, i: int, team: str | None, user: str | None, budget: float | None
) -> RequestContext:
    model = row.model
    return RequestContext(
        text=row.text,
        pinned_model=pinned(model or None),  # an empty field in the file is no pin
        team=row.team or team,
        user=row.user or user,
        request_id=f"sim-{i}",
        budget_used_fraction=budget,
    )


def _batches(n: int, size: int) -> Iterable[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


def replay(
    config: AppConfig,
    classifier: Classifier,
    rows: Sequence[TrafficRow],
    *,
    counters: TokenCounters,
    completion_tokens: int,
    team: str | None = None,
    user: str | None = None,
    budget_used: float | None = None,
    progress: bool = True,
) -> Replayed:
    from tqdm import tqdm

    compiled = CompiledPolicy.build(config.routing, config.experts)
    records: list[SimRecord] = []
    refused: Counter[str] = Counter()
    classify_s = 0.0
    # disable=None: tqdm hides itself when stderr is not a terminal (CI logs, pipes).
    bar = tqdm(total=len(rows), unit="prompt", disable=None if progress else True, leave=False)
    with bar:
        for start, stop in _batches(len(rows), BATCH_SIZE):
            chunk = rows[start:stop]
            t0 = time.perf_counter()
            classes = classifier.classify([r.text for r in chunk])
            classify_s += time.perf_counter() - t0
            for i, (row, c) in enumerate(zip(chunk, classes, strict=True), start):
                ctx = context_for(row, i, team, user, budget_used)
                try:
                    plan = decide(compiled, scores_of(c), ctx)
                except PolicyError as exc:
                    refused[exc.code or "policy_error"] += 1
                    continue
                records.append(_record(plan, row, counters, completion_tokens))
            bar.update(len(chunk))
    return Replayed(records, refused, classify_s)


def _record(
    plan: RoutePlan, row: TrafficRow, counters: TokenCounters, completion_tokens: int
) -> SimRecord:
    # One count per request, with the serving expert's tokenizer; the baseline reuses it
    # (a different tokenizer for the fallback would shift its count by a few percent).
    return SimRecord(
        plan=plan,
        label=row.label,
        prompt_tokens=counters.count(plan.expert, row.text),
        completion_tokens=row.completion_tokens
        if row.completion_tokens is not None
        else completion_tokens,
    )


def confusions(
    records: Iterable[SimRecord], oos_label: str, match: str, top: int = 10
) -> list[dict[str, Any]]:
    """The most frequent (label -> routed) mistakes."""
    pairs: Counter[tuple[str, str]] = Counter()
    for rec in records:
        if rec.label is None:
            continue
        got = rec.plan.expert if match == "expert" else routed_domain(rec.plan, oos_label)
        if got != rec.label:
            pairs[(rec.label, got)] += 1
    return [{"label": a, "routed": b, "count": n} for (a, b), n in pairs.most_common(top)]


def simulation_report(
    config: AppConfig,
    replayed: Replayed,
    *,
    match: Literal["domain", "expert"],
    oos_label: str,
    counters: TokenCounters,
    completion_tokens: int,
) -> dict[str, Any]:
    prices = {name: spec.price for name, spec in config.experts.items() if _per_token(spec)}
    report = summarize(
        replayed.records,
        prices,
        config.routing.fallback,
        cost=usd,
        match=match,
        oos_label=oos_label,
    ).to_dict()
    n = len(replayed.records) + sum(replayed.refused.values())
    report.update(
        {
            "refused": dict(replayed.refused),
            "top_confusions": confusions(replayed.records, oos_label, match),
            "match": match,
            "tokens": {
                "prompt_mean": _mean(r.prompt_tokens for r in replayed.records),
                "completion_per_request": completion_tokens,
                "counted_with": dict(sorted(counters.methods.items())),
            },
            "classify_seconds": round(replayed.classify_s, 3),
            "prompts_per_second": round(n / replayed.classify_s, 1)
            if replayed.classify_s
            else None,
        }
    )
    return report


def usd(price: TokenPrice, prompt_tokens: int, completion_tokens: int) -> float:
    return float(token_cost_usd(price, prompt_tokens, completion_tokens))


def _per_token(spec: ExpertSpec) -> bool:
    # Experts priced only per replica-hour cost nothing per request (policies.simulate): left
    # out of `prices` so they are listed as unpriced instead of silently free.
    return spec.price.input_per_1m > 0 or spec.price.output_per_1m > 0


def _mean(values: Iterable[int]) -> float | None:
    items = list(values)
    return round(sum(items) / len(items), 1) if items else None


# --- output ----------------------------------------------------------------------------------


def _share_table(title: str, counts: Mapping[str, int], total: int) -> list[str]:
    width = max([len(title), *map(len, counts)])
    lines = [f"{title:<{width}}  requests   share"]
    for name, n in counts.items():
        lines.append(f"{name:<{width}}  {n:>8}  {100 * n / max(total, 1):5.1f}%")
    return lines


def format_report(report: Mapping[str, Any]) -> str:
    n = report["requests"]
    lines = [
        f"requests: {n} routed, {sum(report['refused'].values())} refused, "
        f"{report['labeled']} labelled; classifier {report['classify_seconds']} s "
        f"({report['prompts_per_second']} prompts/s)",
        "",
        *_share_table("expert", report["by_expert"], n),
        "",
        *_share_table("domain", report["by_domain"], n),
        "",
        *_share_table("rule", report["by_rule"], n),
        "",
    ]
    acc = report["routing_accuracy"]
    if acc is None:
        lines.append("routing accuracy: n/a (no labels; pass --label-field)")
    else:
        lines.append(f"routing accuracy ({report['match']}): {acc:.3f} over {report['labeled']}")
        for c in report["top_confusions"][:5]:
            lines.append(f"  {c['label']} -> {c['routed']}: {c['count']}")
    lines.append(
        f"cost per 1k requests: ${report['cost_per_1k']:.4f} "
        f"(shadow ${report['shadow_cost_per_1k']:.4f}); baseline, all to "
        f"{report['fallback']}: ${report['baseline_cost_per_1k']:.4f}; "
        f"savings {100 * report['savings']:.1f}%"
    )
    tokens = report["tokens"]
    lines.append(
        f"tokens: prompt mean {tokens['prompt_mean']}, completion "
        f"{tokens['completion_per_request']} per request (assumed unless the traffic has them)"
    )
    for expert, how in tokens["counted_with"].items():
        lines.append(f"  {expert}: {how}")
    if report["unpriced"]:
        lines.append("no per-token price (cost 0 here): " + ", ".join(report["unpriced"]))
    return "\n".join(lines)


def write_outputs(report: Mapping[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    chart = out / "routing.png"
    write_chart(report, chart)
    return [path, chart]


def write_chart(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, key, title in (
        (axes[0], "by_expert", "requests by expert"),
        (axes[1], "by_domain", "requests by routed domain"),
    ):
        counts = report[key]
        ax.bar(list(counts), list(counts.values()), color="#4c72b0")
        ax.set_title(title)
        # Anchored at the label end, so long domain names do not run into their neighbours.
        plt.setp(ax.get_xticklabels(), rotation=40, ha="right", rotation_mode="anchor")
    costs = {"policy": report["cost_per_1k"], "all to fallback": report["baseline_cost_per_1k"]}
    axes[2].bar(list(costs), list(costs.values()), color=["#55a868", "#c44e52"])
    axes[2].set_title(f"USD per 1k requests (savings {100 * report['savings']:.1f}%)")
    acc = report["routing_accuracy"]
    fig.suptitle(
        f"{report['requests']} requests" + ("" if acc is None else f", routing accuracy {acc:.3f}")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
