"""What a chat request needs from the expert that serves it (capability names of
experts.capabilities.FEATURES)."""

from __future__ import annotations

from collections.abc import Sequence

from experts.base import GenerationParams, Message


def requirements(messages: Sequence[Message], params: GenerationParams) -> frozenset[str]:
    """The capabilities an expert must have to honour this request without dropping anything.

    Tools offered with tool_choice "none" need no tool support (the model must not call them),
    but tool turns in the history do: a backend has to render them.
    """
    needs = {"chat"}
    if params.wants_tools or any(m.tool_calls or m.role == "tool" for m in messages):
        needs.add("tools")
    mode = params.json_mode
    if mode is not None:
        needs.add(mode)
    if params.logprobs:
        needs.add("logprobs")
    if any(m.has_images for m in messages):
        needs.add("vision")
    return frozenset(needs)


def describe_missing(expert: str, missing: Sequence[str]) -> str:
    """The routing reason / error text for an expert skipped for lack of capabilities."""
    return f"needs {', '.join(missing)} -> skipped {expert}"
