"""The data plane chosen by measurement (issue 11.1): the same gateway on each plane, in turns.

    .venv/bin/python benchmarks/dataplane.py --out bench-out/dataplane [--rounds 3] [--requests 300]

For each round and each plane (haproxy, proxy), `slm-router serve --data-plane P` starts on a
fake-expert policy with the shipped classifier, and sequential requests with unique prompts
(CLINC150 val texts, or generated ones) go to its public port; then the same prompt repeated
(the embedding cache hits: reported apart). Also timed: start to ready, and SIGINT to exit.
Planes alternate within a round so that the machine's background load drifts over both alike;
the table shows medians over rounds. Prints the table, writes DIR/dataplane.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtest.gateways import free_port
from loadtest.prompts import PromptSource
from loadtest.stats import percentile

PLANES = ("haproxy", "proxy")
POLICY = """version: 1
experts:
  fake: {backend: fake}
routing:
  fallback: fake
  routes:
    - domain: code
      experts: [fake]
      examples: [write a python function, fix this javascript bug]
"""


def _exe() -> list[str]:
    exe = Path(sys.executable).parent / "slm-router"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "router.ops.cli"]


def _wait_ready(client: httpx.Client, base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if client.get(f"{base}/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"gateway did not become ready (exit {proc.poll()})")


def _timed(client: httpx.Client, base: str, texts: list[str]) -> list[float]:
    out = []
    for text in texts:
        body = {"model": "auto", "messages": [{"role": "user", "content": text}], "max_tokens": 8}
        t0 = time.perf_counter()
        r = client.post(f"{base}/v1/chat/completions", json=body)
        out.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {r.text[:200]}")
    return out


def _texts(src: PromptSource, n: int) -> list[str]:
    return [str(it.messages[0]["content"]) for it in src.take(n)]


def _stats(ms: list[float]) -> dict[str, float | None]:
    return {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "n": len(ms)}


def measure(
    plane: str, policy: Path, src: PromptSource, requests: int, log: Path
) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [*_exe(), "serve", "--policy", str(policy), "--port", str(port), "--data-plane", plane]
    with log.open("ab") as fh:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=fh, start_new_session=True)
        try:
            with httpx.Client(timeout=30, trust_env=False) as client:
                _wait_ready(client, base, proc)
                ready_s = time.monotonic() - t0
                _timed(client, base, [it.messages[0]["content"] for it in src.take(50)])  # warm
                unique = _timed(
                    client, base, [it.messages[0]["content"] for it in src.take(requests)]
                )
                repeated = _timed(client, base, ["hello there"] * requests)
        finally:
            t1 = time.monotonic()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                proc.wait(120)
            stop_s = time.monotonic() - t1
    return {
        "unique": _stats(unique),
        "repeated": _stats(repeated),
        "ready_s": round(ready_s, 1),
        "stop_s": round(stop_s, 1),
    }


def _median(values: list[float | None]) -> float | None:
    nums = [v for v in values if v is not None]
    return round(percentile(nums, 50) or 0.0, 2) if nums else None


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float | None]]:
    out = {}
    for plane, rs in runs.items():
        out[plane] = {
            "p50_ms": _median([r["unique"]["p50_ms"] for r in rs]),
            "p99_ms": _median([r["unique"]["p99_ms"] for r in rs]),
            "repeated_p50_ms": _median([r["repeated"]["p50_ms"] for r in rs]),
            "ready_s": _median([r["ready_s"] for r in rs]),
            "stop_s": _median([r["stop_s"] for r in rs]),
        }
    return out


def render(summary: dict[str, dict[str, float | None]]) -> str:
    cols = ("p50_ms", "p99_ms", "repeated_p50_ms", "ready_s", "stop_s")
    lines = [f"{'plane':<10}" + "".join(f"{c:>17}" for c in cols)]
    for plane, row in summary.items():
        lines.append(f"{plane:<10}" + "".join(f"{row[c]!s:>17}" for c in cols))
    lines.append("(unique prompts, sequential, through the public port; medians over rounds)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench-out/dataplane"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=300)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="slm-dataplane-"))
    policy = work / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    load_at_start = os.getloadavg()
    sources = {plane: PromptSource.default() for plane in PLANES}  # same texts, none twice
    runs: dict[str, list[dict[str, Any]]] = {plane: [] for plane in PLANES}
    for i in range(args.rounds):
        for plane in PLANES if i % 2 == 0 else PLANES[::-1]:
            print(f"[round {i + 1}/{args.rounds}] {plane} ...", file=sys.stderr)
            runs[plane].append(measure(plane, policy, sources[plane], args.requests, work / "log"))
            print(f"  {runs[plane][-1]}", file=sys.stderr)
    summary = summarise(runs)
    doc = {
        "summary": summary,
        "runs": runs,
        "prompts": "unique",
        "prompt_source": sources[PLANES[0]].name,
        "loadavg_at_start": [round(x, 2) for x in load_at_start],
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (args.out / "dataplane.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(render(summary))
    print(f"load average at start {doc['loadavg_at_start']}, at end {doc['loadavg_at_end']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
