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
    """One event's `data:` bytes as a Chunk. Read four times per stream at least (the role chunk, the
    first content, the finish, the usage), so the usual shapes take the short way: a chunk without
    choices returns before the choice loop, an empty delta skips its loop, and the Chunk is built
    from positional arguments (~20% less time per call than keyword arguments and one loop for all)."""
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
    usage = parsed.get("usage")
    if usage is not None and not (usage and isinstance(usage, dict)):
        usage = None
    choices = parsed.get("choices")
    if not choices:  # no choices (the usage chunk): nothing else to read
        if choices is None or choices == []:
            return Chunk(parsed, usage=usage)
        raise MalformedChunk("a stream chunk whose `choices` is not a list")
    if not isinstance(choices, list):
        raise MalformedChunk("a stream chunk whose `choices` is not a list")
    content = tool = reasoning = False
    text = ""
    finish: str | None = None
    for choice in choices:
        if not isinstance(choice, dict):
            raise MalformedChunk("a stream chunk with a choice that is not an object")
        delta = choice.get("delta")
        if delta:
            if not isinstance(delta, dict):
                raise MalformedChunk("a stream chunk whose `delta` is not an object")
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
        elif delta is not None and not isinstance(delta, dict):
            raise MalformedChunk("a stream chunk whose `delta` is not an object")
        reason = choice.get("finish_reason")
        if reason:
            finish = str(reason)
    return Chunk(parsed, False, content, text, tool, reasoning, finish, usage, None, len(choices))


# The relay's fast path. Most events of a chat stream are plain deltas: the relay forwards them as
# sent and needs nothing from them at once (the transcript reads them only if a continuation does).
# What it must not miss is a finish reason, usage or an error. In JSON a `"` inside a string is
# always escaped, so the bytes `"usage":null` can only be a key `usage` whose value is null, and a
# key `usage` with any other value still puts the bytes `"usage"` there. So once the null forms are
# blanked out, every `"usage"` left is an event to read: a real value, or text that merely looks
# like it (a delta saying `"usage"`), which costs a parse and nothing else. What this does not see
# is a key written with escapes (`"\u0075sage"`), which no JSON encoder produces for an ASCII key.
# Nor is the JSON of a plain event validated: one of that shape that is not JSON reaches the client
# as sent, as through any pass-through proxy (one cut short does not end in `}` and is read).
_WATCHED = tuple(
    (b'"%s"' % key, (b'"%s":null' % key, b'"%s": null' % key)) for key in (b"finish_reason", b"usage", b"error")
)
_START = b"data: {"
_BETWEEN = b"}\n\ndata: {"
_DONE_EVENT = b"data: [DONE]"


Run = tuple[bytes, int]  # (plain events joined by blank lines, how many), or (one event to read, 0)
_DONE_READ = _DONE_EVENT + b"\n\n"  # the [DONE] event with its blank line, as a read ends


def plain_runs(events: list[bytes]) -> list[Run]:
    """The events in order as runs: (events joined by blank lines, how many) for plain events the
    relay may forward without reading, (one event, 0) for an event to read. Plain: a one-line
    `data: {...}` event whose finish_reason, usage and error keys are absent or null."""
    if not events:
        return []
    if events[-1] == _DONE_EVENT:  # the usual end of a batch: keep it out of the scans below
        return [*plain_runs(events[:-1]), (_DONE_EVENT, 0)]
    if len(events) == 1:  # a yes or no is all one event needs, and cheaper
        return [(events[0], 1 if _plain_one(events[0]) else 0)]
    blob = b"\n\n".join(events)
    suspects = _suspects(blob, events)
    if not suspects:
        return [(blob, len(events))]
    return _cut(blob, suspects, len(blob), len(events))


def read_runs(data: bytes) -> int | tuple[Run, ...] | None:
    """One upstream read that starts a new event, judged on the read itself (no split, no join):
    - n > 0: nothing but n whole plain events, each ended by its blank line: forward it as read;
    - runs: what plain_runs would make of its events (plain stretches are slices of the read);
    - None: a read of another shape (a CR, a multi-line or blank event, an event of another shape
      among several, a read that ends inside an event): split it and give its events to plain_runs.

    plain_runs' reasoning, by counts over the read rather than positions in it: every newline is in a
    blank line that ends an event, and every blank line but the last sits between `}` and `data: {`
    (a `data: [DONE]` may end the read). Each bytes method call costs about as much as scanning a
    short event, so the usual read (one event) is judged with as few calls as will do."""
    size = len(data)
    newline = data.find(b"\n")
    if newline == size - 2:  # one event: the blank line that ends it is its only newline
        if newline == 0 or data.find(b"\r") >= 0:
            return None
        if data[:7] == _START and data[-3:] == b"}\n\n" and _nothing_watched(data):
            return 1
        return ((data[:-2], 0),)
    if newline < 0 or data.find(b"\r") >= 0:
        return None
    end = size - 14 if data[-14:] == _DONE_READ else size  # the usual last read of a stream
    if data[:7] != _START or data[end - 3:end] != b"}\n\n":
        return None
    # Counted over the whole read: neither is in the [DONE] but its blank line, and no start or end to parse.
    between = data.count(_BETWEEN)
    if data.count(b"\n") != 2 * between + (2 if end == size else 4):
        return None  # a newline elsewhere than in the blank lines between `}` and `data: {`
    done: tuple[Run, ...] = ((_DONE_EVENT, 0),) if end < size else ()
    if not between:  # one event, then the [DONE]
        return ((data[:end - 2], 1 if _nothing_watched(data) else 0), *done)
    suspects = _valued_keys(data)
    if not suspects:
        return ((data[:end - 2], between + 1), *done) if done else between + 1
    return (*_cut(data, suspects, end - 2, between + 1), *done)


def _cut(blob: bytes, suspects: list[int], end: int, events: int) -> list[Run]:
    """The `events` events of blob[:end] (joined by blank lines) as runs around the events that hold
    the offsets in `suspects`. A plain stretch's events are counted over the shorter side of it: the
    first is often most of an unpaced stream, and its suspects (finish, usage) are at the end."""
    runs: list[Run] = []
    start = 0
    left = events  # events from `start` on
    suspects.sort()
    for at in suspects:
        if at < start:
            continue  # in an event already cut out
        first = blob.rfind(b"\n\n", start, at)
        first = start if first < 0 else first + 2
        last = blob.find(b"\n\n", at, end)
        last = end if last < 0 else last
        if first > start:
            if first - start < end - first:
                plain = blob.count(b"\n\n", start, first - 2) + 1
            else:
                plain = left - blob.count(b"\n\n", first, end) - 1
            runs.append((blob[start:first - 2], plain))
            left -= plain
        runs.append((blob[first:last], 0))
        left -= 1
        start = last + 2
    if start < end:
        runs.append((blob[start:end], left))
    return runs


def _plain_one(event: bytes) -> bool:
    """plain_runs' verdict on one event, by counts rather than positions (the same reasoning)."""
    if not (event.startswith(_START) and event.endswith(b"}")) or event.find(b"\n") >= 0 \
            or event.find(b"\r") >= 0:
        return False
    return _nothing_watched(event)


def _nothing_watched(data: bytes) -> bool:
    """No finish_reason, usage or error key in `data` holds a value (each one seen is a null form)."""
    for key, (null, spaced) in _WATCHED:
        seen = data.count(key)
        if seen:
            nulls = data.count(null)  # the compact form first: most encoders write it
            if seen != nulls and seen != nulls + data.count(spaced):
                return False
    return True


def _suspects(blob: bytes, events: list[bytes]) -> list[int]:
    """Offsets in `blob` inside events that must be read. Each test is a scan in C, not a loop in
    Python over the events, except for a batch with an event of another shape (rare)."""
    suspects: list[int] = []
    # `x in bytes` costs far more than find() in CPython 3.11: it first tries `x` as an int (a TypeError
    # formatted, then cleared), so the relay's per-read checks use find().
    well_formed = (blob.startswith(_START) and blob.endswith(b"}") and blob.find(b"\r") < 0
                   and blob.count(b"\n") == 2 * (len(events) - 1) and blob.count(_BETWEEN) == len(events) - 1)
    if not well_formed:
        offset = 0
        for event in events:
            if not (event.startswith(_START) and event.endswith(b"}")) or event.find(b"\n") >= 0 \
                    or event.find(b"\r") >= 0:
                suspects.append(offset)
            offset += len(event) + 2
    return suspects + _valued_keys(blob)


def _valued_keys(data: bytes) -> list[int]:
    """Offsets of the finish_reason, usage and error keys in `data` whose value is not null. Each key's
    last two occurrences are looked at one by one from the end, where a stream's finish and usage
    are; only a key seen more often is counted, with its null forms, in the rest of the read. A key
    absent from the read (usage and error, usually) costs one rfind, which CPython 3.11 runs ~3x faster
    than count() or find() for these needles (timeit: ~1.1 against ~3.4 us over an unpaced stream's
    8.8 KB), though callgrind counts about as many instructions for each. (The two looks are written
    out and each checks both null forms in one startswith: a bytes method call is ~300 instructions
    of argument parsing before it reads a byte.)"""
    found: list[int] = []
    for key, nulls in _WATCHED:
        last = data.rfind(key)
        if last < 0:
            continue
        if not data.startswith(nulls, last):
            found.append(last)
        before = data.rfind(key, 0, last)
        if before < 0:
            continue
        if not data.startswith(nulls, before):
            found.append(before)
        _valued_before(data, key, nulls, before, found)
    return found


def _valued_before(data: bytes, key: bytes, nulls: tuple[bytes, bytes], high: int, found: list[int]) -> None:
    """Append to `found` the offsets of the occurrences of `key` in data[:high] not followed by a null
    form. Counted: as many nulls as keys (the usual case) settles it in two scans; otherwise the null
    forms are blanked out of a copy (same length: offsets stay) and what is left of the key is found."""
    null, spaced = nulls
    seen = data.count(key, 0, high)
    if not seen:
        return
    valued = seen - data.count(null, 0, high)  # the compact form first: most encoders write it
    if valued > 0:
        valued -= data.count(spaced, 0, high)
    if valued > 0:
        masked = data[:high].replace(null, b"-" * len(null)).replace(spaced, b"-" * len(spaced))
        at = masked.find(key)
        while at >= 0:
            found.append(at)
            at = masked.find(key, at + 1)


_KEY_NAMES = frozenset({b"finish_reason", b"usage", b"error"})
_NOT_IN_TEXT = frozenset(b'"\n\r')


class PlainFrame:
    """One stream's plain deltas differ in their text only: the bytes around the last string value of
    a one-event read judged plain (usually a delta's content) are its frame, and a later one-event
    read that is that frame around other text is plain too, found with two comparisons and a look
    at the text instead of read_runs' six scans of the whole event.

    Why that is the same verdict: text with no `"` can hold no key, and no key can reach across it
    from the frame unless the text is a key's name (the frame's bytes on either side of it are
    quotes); with no newline or CR in it, the event is one line as the frame's was. So the frame's
    counts are the event's. A stream whose deltas do not fit a frame (text with quotes, a field that
    changes per event) learns a few times, then stops trying."""

    __slots__ = ("_head", "_misses", "_start", "_stop", "_tail")

    _GIVE_UP = 8  # plain reads in a row that did not fit, each followed by a look for a new frame

    def __init__(self) -> None:
        self._head = b""
        self._tail = b""
        self._start = 0  # len(head), 0: no frame
        self._stop = 0  # -len(tail): the text of a read is read[start:stop]
        self._misses = 0

    def judge(self, data: bytes) -> int | tuple[Run, ...] | None:
        """read_runs(data), for a read that starts a new event."""
        start = self._start
        # endswith from `start`: the tail must follow the head, not overlap it.
        if start and data.startswith(self._head) and data.endswith(self._tail, start):
            text = data[start:self._stop]
            if (_NOT_IN_TEXT.isdisjoint(text) if len(text) <= 32 else
                    text.find(b'"') < 0 and text.find(b"\n") < 0 and text.find(b"\r") < 0) \
                    and text not in _KEY_NAMES:
                self._misses = 0
                return 1
        verdict = read_runs(data)
        if verdict == 1 and self._misses < self._GIVE_UP:
            self._misses += 1
            if self._misses < self._GIVE_UP:
                self._learn(data)
            else:
                self._head, self._start = b"", 0  # given up: no frame is tried again
        return verdict

    def _learn(self, event: bytes) -> None:
        """The frame of a one-event read judged plain: around its last string value, if that has no
        escape in it (so its closing quote is the first quote after it)."""
        start = event.rfind(b'":"') + 3
        end = event.find(b'"', start) if start > 2 else -1
        if end >= 0 and event.find(b"\\", start, end) < 0:
            self._head, self._tail, self._start, self._stop = event[:start], event[end:], start, end - len(event)
