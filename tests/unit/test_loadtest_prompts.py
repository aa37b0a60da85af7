"""The overhead benchmark sends unique prompts (issue 11.3): no target sees a text twice in
its headline phases; the repeated-prompt figures are measured apart."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from loadtest import backend
from loadtest.overhead import Settings, Target, measure_once
from loadtest.prompts import PromptSource, clinc_texts, generated_texts
from loadtest.workload import builtin_workload


def test_a_source_never_hands_out_a_prompt_twice() -> None:
    src = PromptSource(["a", "b", "b", "c"], "tiny")  # duplicates in the input count once
    texts = [it.messages[0]["content"] for it in src.take(4) + src.take(5)]
    assert len(texts) == len(set(texts)) == 9
    assert texts[:3] == ["a", "b", "c"] and texts[3] == "a (take 2)"


def test_generated_texts_are_distinct_and_deterministic() -> None:
    assert generated_texts(300) == generated_texts(300)
    assert len(set(generated_texts(300))) == 300


def test_default_source_reads_clinc_val_or_generates(tmp_path: Path) -> None:
    assert clinc_texts(tmp_path / "absent.jsonl") == []
    name = PromptSource.default().name
    assert name in ("clinc150-val", "generated")


@pytest.fixture
def recording_backend() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # backend.route answers keep-alive

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            seen.append(json.loads(body)["messages"][-1]["content"])
            raw = backend.route("POST", self.path, body)
            self.wfile.write(raw)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def test_measure_once_sends_each_unique_prompt_once(recording_backend) -> None:  # type: ignore[no-untyped-def]
    url, seen = recording_backend
    s = Settings(
        latency_s=0.3,
        step_s=0.3,
        start_rps=20,
        max_rps_cap=40,
        warmup_requests=5,
        loaded_concurrency=2,
        refine_steps=0,
        retries=0,
    )
    run = measure_once(Target("rec", url, "instant"), PromptSource.default(), s, "1/1")
    repeated = {it.messages[0]["content"] for it in builtin_workload()}
    counts = Counter(t for t in seen if t not in repeated)
    assert counts and max(counts.values()) == 1, counts.most_common(3)
    assert 0 < sum(t in repeated for t in seen) <= run["repeated"]["requests"]
    assert run["stream"]["ttft_p50_ms"] is not None and run["stream"]["errors"] == 0
