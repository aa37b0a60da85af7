"""Per-token cost of constrained JSON decoding on SmolLM2-135M: xgrammar, llguidance,
lm-format-enforcer, outlines-core, measured in one run, interleaved.

Each library constrains the same greedy decode (the real model, one row) to JSON (json_object)
and to a JSON schema, both in OpenAI's compact formatting (no free whitespace); the time spent
per token on the constraint (the library's mask computation and state update; the bitmask
libraries share one numpy apply, list-based ones an index fill) is measured separately from the
model's forward pass, plus the one-off grammar compile time. Libraries that are not installed
(or do not import) are skipped. Prints a table and writes JSON.

    .venv/bin/python benchmarks/experts_constrained.py --tokens 48 --rounds 3 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from experts.constrained import JSON_OPTIONS, apply_bitmask

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "temperature_c": {"type": "number"},
        "conditions": {"type": "string", "enum": ["sunny", "cloudy", "rain", "snow"]},
    },
    "required": ["city", "temperature_c", "conditions"],
    "additionalProperties": False,
}
PROMPT = "Give the weather in Paris today as JSON with city, temperature_c and conditions."


class Constraint:
    """One request's constraint: mask(logits) in place, then advance(token)."""

    def mask(self, logits: Any) -> None: ...
    def advance(self, token: int) -> None: ...


def xgrammar_factory(tok: Any, vocab: int, schema: dict[str, Any] | None) -> Callable[[], Any]:
    import xgrammar as xgr

    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=vocab)
    compiler = xgr.GrammarCompiler(info, max_threads=1)
    compiled = compiler.compile_json_schema(
        json.dumps(schema or {"type": "object"}), any_whitespace=False, separators=(", ", ": ")
    )

    class C(Constraint):
        def __init__(self) -> None:
            self.m = xgr.GrammarMatcher(compiled)
            self.bits = xgr.allocate_token_bitmask(1, info.vocab_size)

        def mask(self, logits: Any) -> None:
            self.m.fill_next_token_bitmask(self.bits)
            apply_bitmask(logits, self.bits)

        def advance(self, token: int) -> None:
            self.m.accept_token(token)

    return C


def llguidance_factory(tok: Any, vocab: int, schema: dict[str, Any] | None) -> Callable[[], Any]:
    import llguidance
    import llguidance.hf
    import llguidance.torch

    ll_tok = llguidance.hf.from_tokenizer(tok, n_vocab=vocab)
    grammar = llguidance.LLMatcher.grammar_from_json_schema(
        json.dumps(schema or {"type": "object"}), defaults=JSON_OPTIONS
    )

    class C(Constraint):
        def __init__(self) -> None:
            self.m = llguidance.LLMatcher(ll_tok, grammar)
            self.bits = llguidance.torch.allocate_token_bitmask(1, ll_tok.vocab_size)

        def mask(self, logits: Any) -> None:
            llguidance.torch.fill_next_token_bitmask(self.m, self.bits, 0)
            apply_bitmask(logits, self.bits)

        def advance(self, token: int) -> None:
            self.m.consume_token(token)

    return C


def lmfe_factory(tok: Any, vocab: int, schema: dict[str, Any] | None) -> Callable[[], Any]:
    import torch
    from lmformatenforcer import JsonSchemaParser, TokenEnforcer
    from lmformatenforcer.integrations.transformers import (
        build_token_enforcer_tokenizer_data,
    )

    data = build_token_enforcer_tokenizer_data(tok, vocab_size=vocab)

    class C(Constraint):
        def __init__(self) -> None:
            self.e = TokenEnforcer(data, JsonSchemaParser(schema))
            self.ids: list[int] = []

        def mask(self, logits: Any) -> None:
            allowed = self.e.get_allowed_tokens(self.ids)
            keep = torch.full_like(logits, float("-inf"))
            keep[allowed] = 0
            logits += keep

        def advance(self, token: int) -> None:
            self.ids.append(token)

    return C


def outlines_factory(tok: Any, vocab: int, schema: dict[str, Any] | None) -> Callable[[], Any]:
    import torch
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    byte_of = {v: k for k, v in _bytes_to_unicode().items()}
    tokens: dict[bytes, list[int]] = {}
    eos = int(tok.eos_token_id)
    special = set(tok.all_special_ids)
    for piece, idx in tok.get_vocab().items():
        if idx in special or idx >= vocab:
            continue
        raw = bytes(byte_of[c] for c in piece) if all(c in byte_of for c in piece) else None
        if raw is not None:
            tokens.setdefault(raw, []).append(idx)
    vocabulary = Vocabulary(eos, tokens)
    regex = build_regex_from_schema(json.dumps(schema or {"type": "object"}))
    index = Index(regex, vocabulary)

    class C(Constraint):
        def __init__(self) -> None:
            self.g = Guide(index)

        def mask(self, logits: Any) -> None:
            keep = torch.full_like(logits, float("-inf"))
            keep[torch.tensor(self.g.get_tokens())] = 0
            logits += keep

        def advance(self, token: int) -> None:
            if token != eos:
                self.g.advance(token)

    return C


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2's byte <-> printable-character table used by ByteLevel BPE vocabularies.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


LIBRARIES = {
    "xgrammar": xgrammar_factory,
    "llguidance": llguidance_factory,
    "lm-format-enforcer": lmfe_factory,
    "outlines-core": outlines_factory,
}


def decode(model: Any, tok: Any, factory: Callable[[], Any], tokens: int) -> dict[str, Any]:
    """Greedy decode under the constraint; returns the text and per-token library seconds."""
    import torch
    from transformers import DynamicCache

    ids = tok.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, return_tensors="pt"
    )
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    constraint = factory()
    cache = DynamicCache()
    out: list[int] = []
    spent: list[float] = []
    step_ids = ids
    with torch.inference_mode():
        for _ in range(tokens):
            logits = model(input_ids=step_ids, past_key_values=cache, use_cache=True).logits[0, -1]
            logits = logits.float().clone()
            t0 = time.perf_counter()
            constraint.mask(logits)
            token = int(logits.argmax())
            constraint.advance(token)
            spent.append(time.perf_counter() - t0)
            if token == tok.eos_token_id:
                break
            out.append(token)
            step_ids = torch.tensor([[token]])
    return {"text": tok.decode(out), "spent": spent}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="constrained_bench.json")
    args = ap.parse_args()

    import os

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from experts.builtin import smollm2_gguf
    from experts.gguf import materialize_gguf

    print(f"load: {os.getloadavg()}")
    path = materialize_gguf(*smollm2_gguf())
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    vocab = int(model.config.vocab_size)
    results: dict[str, Any] = {"load_before": os.getloadavg(), "tokens": args.tokens, "rows": []}
    factories: dict[tuple[str, str], Callable[[], Any]] = {}
    for name, build in LIBRARIES.items():
        for mode, schema in (("json_object", None), ("json_schema", SCHEMA)):
            t0 = time.perf_counter()
            try:
                factories[(name, mode)] = build(tok, vocab, schema)
            except ImportError as exc:
                print(f"skip {name}: {exc}")
                break
            compile_s = time.perf_counter() - t0
            results["rows"].append({"library": name, "mode": mode, "compile_s": compile_s})
    per: dict[tuple[str, str], list[float]] = {k: [] for k in factories}
    texts: dict[tuple[str, str], str] = {}
    for _ in range(args.rounds):  # interleaved: every library once per round
        for key, factory in factories.items():
            got = decode(model, tok, factory, args.tokens)
            per[key].extend(got["spent"])
            texts[key] = got["text"]
    for row in results["rows"]:
        key = (row["library"], row["mode"])
        spent = per[key]
        row["per_token_ms_median"] = 1000 * statistics.median(spent)
        row["per_token_ms_p95"] = 1000 * sorted(spent)[int(0.95 * (len(spent) - 1))]
        row["tokens_measured"] = len(spent)
        row["text"] = texts[key]
        try:
            json.loads(texts[key])
            row["valid_json"] = True
        except ValueError:
            row["valid_json"] = False  # cut off by --tokens, or broken
    results["load_after"] = os.getloadavg()
    print(f"{'library':20} {'mode':12} {'compile s':>10} {'ms/token p50':>13} {'p95':>8}  json")
    for row in results["rows"]:
        print(
            f"{row['library']:20} {row['mode']:12} {row['compile_s']:10.2f} "
            f"{row['per_token_ms_median']:13.3f} {row['per_token_ms_p95']:8.3f}  "
            f"{row['valid_json']}"
        )
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=2)
    print(f"load: {os.getloadavg()}; wrote {args.out}")


if __name__ == "__main__":
    main()
