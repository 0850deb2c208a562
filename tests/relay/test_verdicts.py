"""The fast path's verdicts against a slow reference, over random reads of random streams.

The reference splits a read into events and judges each on its own, the slow way: the event's shape
(one `data: {...}` line), then every occurrence of a watched key's quoted name, found one at a time
with a regular expression, must be a null form (`:null` or `: null`). It is itself checked against
the parsed JSON (orjson): an event whose finish_reason, usage or error holds a value is never plain.
So chunk.read_runs, chunk.plain_runs and PlainFrame.judge must give exactly the reference's runs,
however their scans are arranged: long reads (where keys are counted), values early or late, null
forms with and without the space, key names inside text, CRs, multi-line events, cut reads, [DONE].
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

import orjson

from gateway.relay.chunk import PlainFrame, Run, plain_runs, read_runs
from gateway.relay.sse import EventSplitter

BASE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
NAMES = ("finish_reason", "usage", "error")
_KEYS = re.compile(rb'(?="(finish_reason|usage|error)")')  # a lookahead: overlapping occurrences too
_TEXTS = ["tok", " token", "", "usage", "error", "finish_reason", '"usage"', '"finish_reason":null',
          '"error": null', 'x"usage', "usage:null", '\\"', "\\", "}\n\ndata: {", "\r", "\n", "null", "é", "[DONE]"]
_VALUES: list[Any] = ["stop", "length", "", 0, False, {}, [], {"message": "overloaded"}, {"prompt_tokens": 1}]


def _plain_reference(event: bytes) -> bool:
    """One event, judged slowly: plain when it is one `data: {...}` line in which every quoted
    finish_reason, usage or error is a key followed by a null form."""
    if not (event.startswith(b"data: {") and event.endswith(b"}")) or b"\n" in event or b"\r" in event:
        return False
    for found in _KEYS.finditer(event):
        after = event[found.start() + len(found.group(1)) + 2:]
        if not (after.startswith(b":null") or after.startswith(b": null")):
            return False
    return True


def _holds_a_value(value: Any) -> bool:
    """Does parsed JSON hold a watched key with a value (at any depth)?"""
    if isinstance(value, dict):
        return any((key in NAMES and item is not None) or _holds_a_value(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_a_value(item) for item in value)
    return False


def _runs_reference(events: list[bytes]) -> list[Run]:
    """plain_runs' answer, event by event: plain neighbours joined by blank lines and counted."""
    runs: list[Run] = []
    for one in events:
        if not _plain_reference(one):
            runs.append((one, 0))
        elif runs and runs[-1][1]:
            runs[-1] = (runs[-1][0] + b"\n\n" + one, runs[-1][1] + 1)
        else:
            runs.append((one, 1))
    return runs


def _read_reference(read: bytes) -> int | tuple[Run, ...] | None:
    """read_runs' answer for a read of whole LF-framed events; None for a read ending inside one."""
    if not read.endswith(b"\n\n"):
        return None
    events = [one for one in read.split(b"\n\n")[:-1] if one]
    runs = _runs_reference(events)
    return runs[0][1] if len(runs) == 1 and runs[0][1] else tuple(runs)


def _fast_shape(read: bytes) -> bool:
    """A read read_runs must judge itself (not hand back as None): single-line `data: {...}` events,
    perhaps one event of any other single-line shape alone, perhaps a [DONE] last."""
    if b"\r" in read or not read.endswith(b"\n\n"):
        return False
    events = read.split(b"\n\n")[:-1]
    if len(events) == 1:
        return events[0] != b"" and b"\n" not in events[0]
    if events[-1] == b"data: [DONE]":
        events.pop()
    return all(one.startswith(b"data: {") and one.endswith(b"}") and b"\n" not in one for one in events)


def _json_event(rng: random.Random) -> bytes:
    text = "".join(rng.choice(_TEXTS) for _ in range(rng.randint(0, 3)))
    finish = rng.choice([None, None, None, rng.choice(_VALUES)])
    choice: dict[str, Any] = {"index": 0, "delta": {"content": text}, "finish_reason": finish}
    if rng.random() < 0.1:  # a tool call whose arguments mention a key, and a nested watched key
        choice["delta"] = {"tool_calls": [{"index": 0, "function": {"arguments": '{"usage": 1, "error": null}'}}]}
    if rng.random() < 0.05:
        choice["delta"]["usage"] = rng.choice([None, rng.choice(_VALUES)])
    data: dict[str, Any] = {**BASE, "choices": rng.choice([[choice], [choice], [], [choice, {**choice, "index": 1}]])}
    for key in ("usage", "error"):
        roll = rng.random()
        if roll < 0.3:
            data[key] = None
        elif roll < 0.36:
            data[key] = rng.choice(_VALUES)
    raw = json.dumps(data).encode() if rng.random() < 0.2 else orjson.dumps(data)
    assert not (_plain_reference(b"data: " + raw) and _holds_a_value(data)), raw  # the reference is safe
    return b"data: " + raw


def _stream(rng: random.Random) -> list[bytes]:
    """A stream's events: mostly JSON chunks (a long run of plain deltas in many), the odd event of
    another shape, a finish, perhaps usage, perhaps [DONE]."""
    plain = b"data: " + orjson.dumps({**BASE, "choices": [
        {"index": 0, "delta": {"content": " token"}, "finish_reason": None}], "usage": None})
    events: list[bytes] = []
    for _ in range(rng.randint(0, 12)):
        roll = rng.random()
        if roll < 0.25:
            events += [plain] * rng.randint(1, 40)
        elif roll < 0.9:
            events.append(_json_event(rng))
        else:
            events.append(rng.choice([b": keep-alive", b"event: ping\ndata: {}", b'data: {"a":1}\ndata: {"b":2}',
                                      b'data:{"usage":null}', b"data: [DONE]", b"retry: 10", b"data: {}\rdata: {}",
                                      b'data: {"choices":[{"delta":{"content":"cut']))
    events.append(b"data: " + orjson.dumps({**BASE, "choices": [
        {"index": 0, "delta": {}, "finish_reason": rng.choice(["stop", "length"])}]}))
    if rng.random() < 0.6:
        events.append(b"data: " + orjson.dumps({**BASE, "choices": [], "usage": {"total_tokens": 3}}))
    if rng.random() < 0.8:
        events.append(b"data: [DONE]")
    return events


def _reads(rng: random.Random, events: list[bytes]) -> list[bytes]:
    raw = b"".join(one + b"\n\n" for one in events)
    if rng.random() < 0.1:
        raw = raw.replace(b"\n", b"\r\n")
    roll = rng.random()
    if roll < 0.3:  # one event per read, as a paced upstream writes
        return [one + b"\n\n" for one in events]
    if roll < 0.5:  # the whole stream in one read, as an unpaced upstream writes
        return [raw]
    cuts = sorted(rng.sample(range(1, len(raw)), min(rng.randint(1, 4), len(raw) - 1)))
    return [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]


def test_reads_and_events_get_the_reference_s_verdicts() -> None:
    rng = random.Random(19)
    judged = plain = suspects = fallbacks = 0
    for _ in range(500):
        events = _stream(rng)
        assert plain_runs(events) == _runs_reference(events), events
        frame, relay = PlainFrame(), EventSplitter()
        for read in _reads(rng, events):
            if not relay.empty:  # the relay judges only reads that start a new event
                relay.feed(read)
                continue
            got = read_runs(read)
            assert frame.judge(read) == got, read
            if got is None:
                fallbacks += 1
                assert not _fast_shape(read), read
                assert plain_runs(relay.feed(read)) == _runs_reference(EventSplitter().feed(read)), read
                continue
            relay.feed(read)
            judged += 1
            assert got == _read_reference(read), read
            runs = (got,) if isinstance(got, int) else got
            plain += sum(1 for run in runs if isinstance(run, int) or run[1])
            suspects += sum(1 for run in runs if not isinstance(run, int) and not run[1])
    assert judged > 3000 and plain > 3000 and suspects > 500 and fallbacks > 100, (judged, plain, suspects, fallbacks)


def test_a_value_anywhere_in_a_long_read_is_found() -> None:
    """Long reads of plain deltas with one valued key at every position and in both spacings: the
    keys are counted there (more than a few occurrences), and the value may be far from the end."""
    for spaced in (False, True):
        dumps = (lambda value: json.dumps(value).encode()) if spaced else orjson.dumps
        word = b"data: " + dumps({**BASE, "choices": [{"index": 0, "delta": {"content": "w"}, "finish_reason": None}],
                                  "usage": None, "error": None})
        for key, value in (("finish_reason", "stop"), ("usage", {"total_tokens": 1}), ("error", {"message": "x"})):
            odd = b"data: " + dumps({**BASE, "choices": [{"index": 0, "delta": {}, "finish_reason": None}], key: value})
            for at in range(0, 30, 3):
                events = [word] * 30
                events[at] = odd
                read = b"\n\n".join(events) + b"\n\n"
                expected = _read_reference(read)
                assert read_runs(read) == expected and plain_runs(events) == list(expected or ()), (key, at)
