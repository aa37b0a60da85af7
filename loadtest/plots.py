"""PNG plots of a report; matplotlib is optional and imported only here, on call."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")  # headless: never try to open a display
    import matplotlib.pyplot as plt

    return plt


def _latency_png(plt: Any, rep: dict[str, Any], path: Path) -> None:
    rows = rep["timeline"]
    t = [r["t_s"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4))
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        ax.plot(t, [r[key] if r[key] is not None else float("nan") for r in rows], label=label)
    errs = [r["t_s"] for r in rows if r["errors"]]
    if errs:
        ax.scatter(errs, [0] * len(errs), marker="x", color="red", label="errors in bucket")
    ax2 = ax.twinx()
    ax2.plot(t, [r["requests"] for r in rows], color="grey", alpha=0.4, label="requests")
    ax2.set_ylabel("requests per bucket")
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency over time")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _replicas_png(plt: Any, rep: dict[str, Any], path: Path) -> None:
    rep_data = rep["replicas"]
    fig, ax = plt.subplots(figsize=(8, 4))
    t = [s["t_s"] for s in rep_data["samples"]]
    for name in rep_data["deployments"]:
        ax.step(
            t, [s["running"].get(name, 0) for s in rep_data["samples"]], where="post", label=name
        )
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("running replicas")
    ax.set_title("Replicas per deployment over time")
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plots(rep: dict[str, Any], out_dir: Path) -> list[Path]:
    plt = _pyplot()
    if plt is None:
        print("loadtest: matplotlib not installed, skipping PNG plots", file=sys.stderr)
        return []
    paths = []
    if rep["timeline"]:
        paths.append(out_dir / "latency_over_time.png")
        _latency_png(plt, rep, paths[-1])
    if rep["replicas"]["available"]:
        paths.append(out_dir / "replicas_over_time.png")
        _replicas_png(plt, rep, paths[-1])
    return paths
