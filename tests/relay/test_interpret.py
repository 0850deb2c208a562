"""chunk.interpret against a slow reference, over random chunk-shaped JSON, well-formed or not.

interpret takes short ways for the usual shapes (no choices, an empty delta); the reference reads
every chunk the long way, one rule at a time, so a short way that skips a rule (a `choices` or
`delta` of the wrong type, usage on a chunk without choices, text only from choice 0) fails here.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from gateway.relay.chunk import Chunk, MalformedChunk, interpret

_CONTENT = ("content", "tool_calls", "function_call", "reasoning_content", "reasoning", "refusal", "audio")
_MISSING = object()


def _reference(data: bytes) -> Chunk | str:
    """The chunk the relay must see, or the MalformedChunk message: each rule in its own step."""
    if data == b"[DONE]":
        return Chunk(done=True)
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return "a stream event that is not JSON"
    if not isinstance(parsed, dict):
        return "a stream chunk that is not a JSON object"
    if parsed.get("error"):
        error = parsed["error"]
        return Chunk(parsed, error=error if isinstance(error, dict) else {"message": str(error)})
    choices = parsed.get("choices")
    if choices is None:
        choices = []
    if not isinstance(choices, list):
        return "a stream chunk whose `choices` is not a list"
    chunk = Chunk(parsed, choices=len(choices))
    for choice in choices:
        if not isinstance(choice, dict):
            return "a stream chunk with a choice that is not an object"
        delta = choice.get("delta")
        if delta is None:
            delta = {}
        if not isinstance(delta, dict):
            return "a stream chunk whose `delta` is not an object"
        if choice.get("finish_reason"):
            chunk.finish_reason = str(choice["finish_reason"])
        for name in delta:
            if name not in _CONTENT or not delta[name]:
                continue
            chunk.content = True
            if name in ("tool_calls", "function_call"):
                chunk.tool = True
            elif name in ("reasoning_content", "reasoning"):
                chunk.reasoning = True
            elif name == "content" and isinstance(delta[name], str) and choice.get("index", 0) == 0:
                chunk.text += delta[name]
    usage = parsed.get("usage")
    chunk.usage = usage if isinstance(usage, dict) and usage else None
    return chunk


def _pick(rng: random.Random, *values: Any) -> Any:
    return rng.choice(values)


def _delta(rng: random.Random) -> Any:
    if rng.random() < 0.1:
        return _pick(rng, _MISSING, None, {}, "", [], 0, "text", [1])
    fields: dict[str, Any] = {}
    for name in rng.sample([*_CONTENT, "role", "other"], rng.randint(0, 3)):
        fields[name] = _pick(rng, "", "hi", " token", None, 0, 1, [], [{"index": 0}], {}, {"a": 1}, False)
    return fields


def _choice(rng: random.Random) -> Any:
    if rng.random() < 0.02:
        return _pick(rng, None, "choice", 0, [])
    choice: dict[str, Any] = {}
    for name, value in (("index", _pick(rng, _MISSING, 0, 0, 1, 2)), ("delta", _delta(rng)),
                        ("finish_reason", _pick(rng, _MISSING, None, None, "", "stop", "length", 0, 1, {}))):
        if value is not _MISSING:
            choice[name] = value
    return choice


def _chunk(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.03:
        return _pick(rng, b"[DONE]", b"not json", b"[1, 2]", b'"text"', b"null", b"{")
    data: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk"}
    choices = _pick(rng, _MISSING, None, [], "", 0, {}, "x") if rng.random() < 0.3 else "list"
    if choices == "list":
        choices = [_choice(rng) for _ in range(rng.choice((1, 1, 1, 2, 3)))]
    if choices is not _MISSING:
        data["choices"] = choices
    for name, values in (("usage", (None, {}, {"total_tokens": 3}, 0, "usage", [])),
                         ("error", (None, "", {}, {"message": "overloaded"}, "boom", 0, 1))):
        if rng.random() < 0.2:
            data[name] = rng.choice(values)
    return orjson.dumps(data)


def test_interpret_reads_every_chunk_as_the_reference_does() -> None:
    rng = random.Random(7)
    outcomes = {"malformed": 0, "no choices": 0, "content": 0, "finish": 0, "usage": 0, "error": 0, "text": 0}
    for _ in range(6000):
        data = _chunk(rng)
        expected = _reference(data)
        if isinstance(expected, str):
            with pytest.raises(MalformedChunk) as caught:
                interpret(data)
            assert str(caught.value) == expected, data
            outcomes["malformed"] += 1
            continue
        assert interpret(data) == expected, data
        outcomes["no choices"] += expected.choices == 0 and not expected.done
        outcomes["content"] += expected.content
        outcomes["finish"] += expected.finish_reason is not None
        outcomes["usage"] += expected.usage is not None
        outcomes["error"] += expected.error is not None
        outcomes["text"] += bool(expected.text)
    assert min(outcomes.values()) > 80, outcomes  # every shape is exercised
