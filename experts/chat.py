"""Turning chat messages into a prompt string for a local model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from experts.base import Message
from experts.local_tools import template_message

# ChatML: the most widely understood plain-text chat format, used when a tokenizer ships no
# template (base models, tokenizers trained from scratch in tests).
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

FALLBACK_STOP = ("<|im_end|>",)


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(
    tokenizer: Any,
    messages: Sequence[Message],
    tools: list[dict[str, Any]] | None = None,
) -> str:
    """The text the model continues: the tokenizer's own template, else ChatML. `tools` (OpenAI
    shape) only for templates that take them (experts.local_tools)."""
    dicts = [template_message(m) for m in messages]
    template = None if has_chat_template(tokenizer) else FALLBACK_CHAT_TEMPLATE
    extra: dict[str, Any] = {"tools": tools} if tools else {}
    text = tokenizer.apply_chat_template(
        dicts, chat_template=template, tokenize=False, add_generation_prompt=True, **extra
    )
    if not isinstance(text, str):  # some tokenizers return a list for batched input
        text = "".join(text)
    return text


def implicit_stops(tokenizer: Any) -> tuple[str, ...]:
    """Stop strings a prompt format implies even if they are not single special tokens."""
    return () if has_chat_template(tokenizer) else FALLBACK_STOP
