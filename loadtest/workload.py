"""Prompts to send: a JSONL file, or a built-in mixed-domain set."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from loadtest.config import ConfigError


@dataclass(frozen=True)
class WorkItem:
    messages: tuple[dict[str, str], ...]
    model: str | None = None
    domain: str | None = None


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class _Row(BaseModel):
    """One JSONL line: either a bare `prompt` or OpenAI `messages`."""

    model_config = ConfigDict(extra="forbid")
    prompt: str | None = None
    messages: list[_Message] | None = Field(None, min_length=1)
    model: str | None = None
    domain: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> _Row:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        return self

    def item(self) -> WorkItem:
        if self.prompt is not None:
            msgs: tuple[dict[str, str], ...] = ({"role": "user", "content": self.prompt},)
        else:
            msgs = tuple(m.model_dump() for m in self.messages or ())
        return WorkItem(messages=msgs, model=self.model, domain=self.domain)


def load_jsonl(path: Path, limit: int = 100_000) -> list[WorkItem]:
    items = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                items.append(_Row.model_validate(json.loads(line)).item())
            except (json.JSONDecodeError, ValidationError) as exc:
                raise ConfigError(f"{path}:{lineno}: {exc}") from None
            if len(items) >= limit:
                break
    if not items:
        raise ConfigError(f"{path}: no prompts")
    return items


_BUILTIN: dict[str, tuple[str, ...]] = {
    "code": (
        "Write a Python function that checks whether a string is a palindrome.",
        "Why does my JavaScript promise resolve before the fetch finishes?",
        "Explain the difference between a process and a thread.",
        "How do I reverse a linked list in place in C?",
        "Refactor this loop into a list comprehension: for x in xs: if x > 0: out.append(x*2)",
        "What does 'git rebase --onto' do?",
        "Write a SQL query returning the top 3 salaries per department.",
    ),
    "math": (
        "What is the derivative of x^3 * sin(x)?",
        "Solve for x: 3x + 7 = 22.",
        "A train travels 120 km in 1.5 hours. What is its average speed?",
        "Prove that the square root of 2 is irrational.",
        "What is the sum of the integers from 1 to 100?",
        "Compute the determinant of the matrix [[2, 1], [5, 3]].",
        "If a shirt costs $40 after a 20% discount, what was the original price?",
    ),
    "health": (
        "What are common symptoms of iron deficiency?",
        "How much sleep does an adult need each night?",
        "Is it safe to take ibuprofen with a cold?",
        "What is a healthy resting heart rate?",
        "How can I lower my blood pressure without medication?",
        "What is the difference between type 1 and type 2 diabetes?",
        "How long should I wait to exercise after eating?",
    ),
    "finance": (
        "What is the difference between a Roth IRA and a traditional IRA?",
        "How is compound interest calculated?",
        "Should I pay off my credit card or build an emergency fund first?",
        "What does a price-to-earnings ratio tell an investor?",
        "Explain what an index fund is.",
        "How do bond prices react when interest rates rise?",
        "What is a reasonable budget split between needs, wants and savings?",
    ),
    "general": (
        "Write a short poem about autumn leaves.",
        "What is the capital of Australia?",
        "Suggest three names for a coffee shop by the sea.",
        "Summarise the plot of Romeo and Juliet in two sentences.",
        "Why is the sky blue?",
        "Give me a packing list for a weekend hiking trip.",
    ),
    "out_of_scope": (
        "asdf qwerty zxcv",
        "Tell me tomorrow's winning lottery numbers.",
        "Translate this into Klingon and then back into ancient Sumerian.",
        "What did I have for breakfast today?",
        "Play my favourite song on the living room speaker.",
        "!!!???",
    ),
}


def builtin_workload() -> list[WorkItem]:
    """~40 short prompts over code/math/health/finance/general/out_of_scope, labelled by domain."""
    return [
        WorkItem(messages=({"role": "user", "content": text},), domain=domain)
        for domain, texts in _BUILTIN.items()
        for text in texts
    ]


def request_body(
    item: WorkItem, *, model: str, stream: bool, max_tokens: int | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": item.model or model, "messages": list(item.messages)}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body
