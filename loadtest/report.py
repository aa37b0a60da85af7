"""report.json / report.md: building the document is pure; writing it is one small function."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from loadtest.config import LoadConfig
from loadtest.runner import RunResult
from loadtest.stats import summarize


def settings_of(cfg: LoadConfig, workload: str) -> dict[str, Any]:
    settings = asdict(cfg)
    settings["api_key"] = "***" if cfg.api_key else None
    settings["workload"] = workload
    if cfg.profile is not None:
        settings["profile"] = [asdict(s) for s in cfg.profile.segments]
    return settings


def bucket_for(elapsed_s: float) -> float:
    """About 60 points on the latency plot, whatever the run's length."""
    return max(0.1, round(elapsed_s / 60, 1))


def build_report(cfg: LoadConfig, result: RunResult, workload: str) -> dict[str, Any]:
    summary = summarize(
        result.records,
        result.elapsed_s,
        spend_before=result.spend_before,
        spend_after=result.spend_after,
        replicas=result.replicas,
        bucket_s=bucket_for(result.elapsed_s),
    )
    return {
        "settings": settings_of(cfg, workload),
        "stopped_by": result.stopped_by,
        "abandoned_in_flight": result.abandoned,
        "schedule_lag_p99_ms": result.schedule_lag_p99_ms,
        **summary,
    }


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.2f}{unit}"
    return f"{value}{unit}"


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines


def _latency_rows(rep: dict[str, Any]) -> list[tuple[Any, ...]]:
    rows = [("latency", *(rep["latency"][k] for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")))]
    if rep["ttft"]:
        rows.append(
            (
                "time to first token",
                *(rep["ttft"][k] for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")),
            )
        )
    return rows


def _mix_rows(mix: dict[str, int], total: int) -> list[tuple[Any, ...]]:
    return [(name, n, f"{100 * n / total:.1f}%") for name, n in mix.items()] if total else []


def render_markdown(rep: dict[str, Any]) -> str:
    s = rep["settings"]
    load = (
        f"closed loop, concurrency {s['concurrency']}"
        if s["mode"] == "closed"
        else "open loop (Poisson)"
    )
    tok = rep["tokens"]
    cost = rep["cost"]
    lines = [
        "# Load test report",
        "",
        f"Target `{s['url']}`, {load}, stream={s['stream']}, model `{s['model']}`, "
        f"workload {s['workload']}; stopped by {rep['stopped_by']}.",
        "",
        f"- Requests: {rep['requests']} ({rep['ok']} ok, {rep['errors']} errors) in "
        f"{_fmt(rep['elapsed_s'])} s: **{_fmt(rep['achieved_rps'])} RPS** achieved",
        f"- Errors by type: {rep['errors_by_type'] or 'none'}",
        f"- Output tokens/s: {_fmt(tok['output_tokens_per_s'])} "
        f"(per request p50 {_fmt(tok['per_request_output_tokens_per_s_p50'])})",
        "- Cost per 1,000 requests: "
        + (
            f"${cost['per_1k_requests_usd']:.6f}"
            if cost.get("per_1k_requests_usd") is not None
            else "n/a (spend API not reachable)"
        ),
        "",
        "## Latency (ms)",
        "",
        *_table(("", "p50", "p90", "p99", "max"), _latency_rows(rep)),
        "",
        "## Routing mix",
        "",
        *_table(("expert", "requests", "share"), _mix_rows(rep["routing"]["by_expert"], rep["ok"])),
        "",
        *_table(("domain", "requests", "share"), _mix_rows(rep["routing"]["by_domain"], rep["ok"])),
        "",
    ]
    replicas = rep["replicas"]
    if replicas["available"]:
        rng = replicas["range"]
        lines += ["## Replicas (Serve)", ""]
        lines += _table(
            ("deployment", "min", "max"), [(n, r["min"], r["max"]) for n, r in rng.items()]
        )
        lines.append("")
    else:
        lines += ["Replicas: Serve status API not reachable.", ""]
    return "\n".join(lines)


def write_report(rep: dict[str, Any], out_dir: Path) -> list[Path]:
    """report.json, report.md and (when matplotlib is installed) the PNG plots."""
    from loadtest.plots import write_plots

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "report.json", out_dir / "report.md"]
    paths[0].write_text(json.dumps(rep, indent=2) + "\n", encoding="utf-8")
    paths[1].write_text(render_markdown(rep), encoding="utf-8")
    return paths + write_plots(rep, out_dir)
