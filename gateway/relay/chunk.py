"""The one interpreter of OpenAI chat-completion stream chunks: the `data:` bytes of one event in,
a Chunk out, its shape checked. The executor (is this the first content?) and the relay (what has
the client been sent?) both read events through it, so they cannot disagree about an event.

Pure: no I/O. A chunk whose shape is not a chat-completion chunk raises MalformedChunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

DONE = b"[DONE]"

# Delta fields that are part of the answer: the first of them commits a stream to its target.
# `function_call` is the legacy form of a tool call; `audio` carries spoken output.
_CONTENT_FIELDS = ("content", "tool_calls", "function_call", "reasoning_content", "reasoning", "refusal", "audio")
_CONTENT_SET = frozenset(_CONTENT_FIELDS)
_TOOL_FIELDS = frozenset({"tool_calls", "function_call"})
_REASONING_FIELDS = frozenset({"reasoning_content", "reasoning"})


class MalformedChunk(ValueError):
    """The event is not a chat-completion chunk; the message says why (no upstream text in it)."""


@dataclass(slots=True)
class Chunk:
    """One interpreted event. Not frozen: one is built per stream event, and a frozen dataclass
    pays an object.__setattr__ call per field; nothing keeps or mutates a Chunk after it is read."""

    data: dict[str, Any] | None = None  # the parsed chunk (None for [DONE])
    done: bool = False  # the upstream's `data: [DONE]`
    content: bool = False  # carries part of the answer (text, tool call, reasoning, refusal, audio)
    text: str = ""  # the `content` text of choice 0
    tool: bool = False  # part of a tool call (or a legacy function call)
    reasoning: bool = False  # carries reasoning text
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None  # an `error` object the upstream sent inside the stream
    choices: int = 0

    @property
    def usage_only(self) -> bool:
        return self.usage is not None and self.choices == 0 and not self.content

    @property
    def opens_answer(self) -> bool:
        """May the client see this (and everything held before it)? Content, a finish, usage, or the end."""
        return self.done or self.content or self.finish_reason is not None or self.usage_only


_DONE_CHUNK = Chunk(done=True)


def interpret(data: bytes) -> Chunk:
    if data == DONE:
        return _DONE_CHUNK
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise MalformedChunk("a stream event that is not JSON") from None
    if not isinstance(parsed, dict):
        raise MalformedChunk("a stream chunk that is not a JSON object")
    error = parsed.get("error")
    if error:
        return Chunk(parsed, error=error if isinstance(error, dict) else {"message": str(error)})
    choices = parsed.get("choices")
    if choices is None:
        choices = ()
    elif not isinstance(choices, list):
        raise MalformedChunk("a stream chunk whose `choices` is not a list")
    content = tool = reasoning = False
    text = ""
    finish: str | None = None
    for choice in choices:
        if not isinstance(choice, dict):
            raise MalformedChunk("a stream chunk with a choice that is not an object")
        delta = choice.get("delta")
        if delta is None:
            delta = {}
        elif not isinstance(delta, dict):
            raise MalformedChunk("a stream chunk whose `delta` is not an object")
        reason = choice.get("finish_reason")
        if reason:
            finish = str(reason)
        # One pass over the delta's own keys (usually one or two) rather than a lookup per known field.
        for name, value in delta.items():
            if not value or name not in _CONTENT_SET:
                continue
            content = True
            if name in _TOOL_FIELDS:
                tool = True
            elif name in _REASONING_FIELDS:
                reasoning = True
            elif name == "content" and isinstance(value, str) and choice.get("index", 0) == 0:
                text += value
    usage = parsed.get("usage")
    return Chunk(parsed, content=content, text=text, tool=tool, reasoning=reasoning, finish_reason=finish,
                 usage=usage if isinstance(usage, dict) and usage else None, choices=len(choices))
