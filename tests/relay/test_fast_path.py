"""The relay's fast path: which events it forwards unread, and the transcript that reads them later.

The byte tests must be conservative: an event the fast path lets through unread must be one the
parser would have found no finish, usage, error or end in. The random test checks exactly that
against `interpret` over events written with several encoders' spacing and tricky text.
"""

from __future__ import annotations

import json
import random
from typing import Any

import orjson

from gateway.relay.chunk import PlainFrame, interpret, plain_runs, read_runs
from gateway.relay.sse import EventSplitter, event_data
from gateway.relay.transcript import Transcript

BASE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}


def event(choices: list[dict[str, Any]], spaced: bool = False, **extra: Any) -> bytes:
    data = {**BASE, "choices": choices, **extra}
    raw = json.dumps(data).encode() if spaced else orjson.dumps(data)
    return b"data: " + raw


def delta(content: str | None = None, finish: str | None = None, index: int = 0, **fields: Any) -> dict[str, Any]:
    body = {**({"content": content} if content is not None else {}), **fields}
    return {"index": index, "delta": body, "finish_reason": finish}


def runs_of(events: list[bytes]) -> list[tuple[list[bytes], int]]:
    """plain_runs, with each run split back into its events (so tests compare events, not joins)."""
    return [(run.split(b"\n\n") if plain else [run], plain) for run, plain in plain_runs(events)]


def test_a_typical_batch_is_one_unread_run_then_the_end_read_one_by_one() -> None:
    role = event([delta("", role="assistant")])
    words = [event([delta(f" w{i}")]) for i in range(50)]
    finish = event([delta(finish="stop")])
    usage = event([], usage={"prompt_tokens": 1, "completion_tokens": 50, "total_tokens": 51})
    done = b"data: [DONE]"
    assert runs_of([role, *words, finish, usage, done]) == [
        ([role, *words], 51), ([finish], 0), ([usage], 0), ([done], 0)]


def test_null_values_in_either_spacing_are_plain_and_real_values_are_read() -> None:
    for spaced in (False, True):
        plain = event([delta("hi")], spaced=spaced, usage=None, error=None)
        assert b": null" in plain or not spaced
        assert runs_of([plain]) == [([plain], 1)]
        for read in (event([delta("hi", finish="length")], spaced=spaced),
                     event([delta("hi")], spaced=spaced, usage={"prompt_tokens": 1}),
                     event([delta("hi")], spaced=spaced, error={"message": "overloaded"})):
            assert runs_of([plain, read, plain]) == [([plain], 1), ([read], 0), ([plain], 1)]


def test_an_event_with_content_and_usage_is_read() -> None:
    both = event([delta("last words")], usage={"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12})
    assert runs_of([both]) == [([both], 0)]


def test_text_that_looks_like_a_finish_does_not_fool_it() -> None:
    # Inside a JSON string every quote is escaped: this text never reads as a key.
    sly = event([delta('so "finish_reason":"stop", "usage":{"total_tokens":1}, "error":"x" he said')])
    assert runs_of([sly]) == [([sly], 1)]
    # A delta whose whole text is `usage` does put the bytes `"usage"` there: read, to be safe.
    word = event([delta("usage")])
    assert runs_of([word]) == [([word], 0)]
    assert interpret(event_data(word) or b"").usage is None


def test_events_of_another_shape_are_read_and_keep_their_place() -> None:
    a, b = event([delta("a")]), event([delta("b")])
    for odd in (b": keep-alive", b"event: x\ndata: {}", b'data:{"choices":[]}', b"data: [DONE]x",
                b'data: {"choices":[{"delta":{"content":"cut', b"data: {}\rdata: {}"):
        assert runs_of([a, odd, b]) == [([a], 1), ([odd], 0), ([b], 1)], odd


def test_empty_batch() -> None:
    assert plain_runs([]) == []


def _random_event(rng: random.Random) -> bytes:
    texts = ['"', "\\", '"usage"', "finish_reason", '"finish_reason":null', '\\"error\\":', "null", "}\n\ndata: {",
             "é", "\u2028", " ", "[DONE]", "ok"]
    text = "".join(rng.choice(texts) for _ in range(rng.randint(0, 4)))
    choice = delta(text, finish=rng.choice([None, None, "stop", ""]), index=rng.choice([0, 0, 1]))
    extra: dict[str, Any] = {}
    for key in ("usage", "error"):
        roll = rng.random()
        if roll < 0.3:
            extra[key] = None
        elif roll < 0.4:
            extra[key] = rng.choice([{}, {"message": "m"}, {"prompt_tokens": 1}, "", 0])
    choices = rng.choice([[choice], [choice], [], [choice, delta("x", index=1)]])
    return event(choices, spaced=rng.random() < 0.5, **extra)


def test_nothing_the_parser_would_act_on_is_ever_let_through_unread() -> None:
    rng = random.Random(15)
    unread = 0
    for _ in range(300):
        events = [_random_event(rng) for _ in range(rng.randint(1, 12))]
        runs = plain_runs(events)
        assert b"\n\n".join(run for run, _ in runs) == b"\n\n".join(events), "order and bytes kept"
        assert sum(max(plain, 1) for _, plain in runs) == len(events)
        unread += sum(plain for _, plain in runs)
        alone = [plain_runs([one])[0][1] for one in events]  # a paced stream's reads: one event each
        together = [1 if plain else 0 for run, plain in runs for _ in (run.split(b"\n\n") if plain else [run])]
        assert alone == together, "one event at a time and a batch agree"
        for run, plain in runs:
            for one in run.split(b"\n\n") if plain else ():
                chunk = interpret(event_data(one) or b"")
                assert chunk.finish_reason is None and chunk.usage is None and chunk.error is None, one
    assert unread > 300, "the cases exercise the fast path, not only the parser"


def test_a_whole_read_goes_out_as_read_only_when_every_event_in_it_would() -> None:
    rng = random.Random(16)
    whole = 0
    for _ in range(300):
        events = [_random_event(rng) for _ in range(rng.randint(1, 6))]
        read = b"\n\n".join(events) + b"\n\n"
        every = all(plain for _, plain in plain_runs(events))
        assert read_runs(read) == len(events) if every else not isinstance(read_runs(read), int), read
        whole += every
        assert read_runs(read[:-1]) is None and read_runs(read[:-2]) is None, "a read ending inside an event"
    assert whole > 30, "the cases exercise whole plain reads"


def test_a_read_of_another_shape_is_split_and_read() -> None:
    a, b = event([delta("a")]), event([delta("b")])
    assert read_runs(a + b"\n\n" + b + b"\n\n") == 2
    for odd in (a + b"\n\n\n\n" + b + b"\n\n", a + b"\r\n\r\n", a + b"\n\n: keep-alive\n\n" + b + b"\n\n",
                a + b"\n" + b + b"\n\n", b"\n\n" + a + b"\n\n", b"\n\n", a + b"\n\n" + b,
                b"event: x\n" + a + b"\n\n", a + b"\rdata: {}\n\n"):
        assert read_runs(odd) is None, odd


def test_the_last_read_of_a_stream_is_cut_around_its_finish_usage_and_done() -> None:
    role, words = event([delta("", role="assistant")]), [event([delta(f" w{i}")]) for i in range(50)]
    finish = event([delta(finish="stop")])
    usage = event([], usage={"prompt_tokens": 1, "completion_tokens": 50, "total_tokens": 51})
    done = b"data: [DONE]"
    read = b"\n\n".join([role, *words, finish, usage, done]) + b"\n\n"
    assert read_runs(read) == ((b"\n\n".join([role, *words]), 51), (finish, 0), (usage, 0), (done, 0))
    assert read_runs(b"\n\n".join([role, *words, done]) + b"\n\n") == \
        ((b"\n\n".join([role, *words]), 51), (done, 0))
    assert read_runs(role + b"\n\n" + done + b"\n\n") == ((role, 1), (done, 0))
    assert read_runs(finish + b"\n\n" + done + b"\n\n") == ((finish, 0), (done, 0))
    assert read_runs(done + b"\n\n") == ((done, 0),)
    assert read_runs(b": keep-alive\n\n") == ((b": keep-alive", 0),), "one event of another shape is read"


def _stream_events(rng: random.Random) -> list[bytes]:
    """A stream's events as several upstreams write them, with the odd event the fast path must not miss."""
    events = [event([delta("", role="assistant")], spaced=rng.random() < 0.3)]
    for _ in range(rng.randint(0, 12)):
        roll = rng.random()
        if roll < 0.6:
            events.append(_random_event(rng))
        elif roll < 0.7:
            events.append(event([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {
                "arguments": '{"usage": 1}'}}]}, "finish_reason": None}], usage=None))
        else:
            events.append(rng.choice([b": keep-alive", b"event: ping\ndata: {}", b'data: {"a":1}\ndata: {"b":2}',
                                      b'data: {"error":{"message":"overloaded"}}', b"data: [DONE]", b"retry: 10"]))
    events.append(event([delta(finish=rng.choice(["stop", "length"]))], spaced=rng.random() < 0.3))
    if rng.random() < 0.6:
        events.append(event([], usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}))
    if rng.random() < 0.8:
        events.append(b"data: [DONE]")
    return events


def test_a_read_judged_on_its_bytes_matches_splitting_it_and_judging_its_events() -> None:
    """read_runs against the relay's general path (EventSplitter + plain_runs), over random reads of
    random streams: LF and CRLF framing, reads cut anywhere, several events or one per read."""
    rng = random.Random(17)
    judged = fallbacks = 0
    for _ in range(400):
        events = _stream_events(rng)
        crlf = rng.random() < 0.15
        raw = b"".join(e + b"\n\n" for e in events)
        if crlf:
            raw = raw.replace(b"\n", b"\r\n")
        if rng.random() < 0.4:  # one event per read, as a paced upstream writes
            reads = [e + (b"\r\n\r\n" if crlf else b"\n\n") for e in events]
        else:
            cuts = sorted(rng.sample(range(1, len(raw)), min(rng.randint(0, 3), len(raw) - 1)))
            reads = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
        relay = EventSplitter()  # the relay's splitter: read_runs only sees reads that start a new event
        for read in reads:
            if not relay.empty:
                relay.feed(read)
                continue
            fresh = EventSplitter()
            expected = plain_runs(fresh.feed(read))
            got = read_runs(read)
            if got is None:
                fallbacks += 1
                relay.feed(read)
                continue
            judged += 1
            assert fresh.empty, ("judged a read that ends inside an event", read)
            if isinstance(got, int):
                assert expected == [(read[:-2], got)], read
            else:
                assert list(got) == expected, read
    assert judged > 800 and fallbacks > 100, (judged, fallbacks)


def test_unread_reads_keep_their_blank_lines_and_read_the_same() -> None:
    events = [event([delta("", role="assistant")]), event([delta("Hel")]), event([delta("lo")])]
    parsed, unread = Transcript(), Transcript()
    _sent(parsed, events, unread=False)
    for one in events:
        unread.add_unread(one + b"\n\n")  # as the relay keeps a whole plain read
    assert (unread.text, unread.tool, unread.untextual, unread.first) == \
        (parsed.text, parsed.tool, parsed.untextual, parsed.first) == ("Hello", False, False, parsed.first)


def _sent(transcript: Transcript, events: list[bytes], unread: bool) -> None:
    for one in events:
        if unread:
            transcript.add_unread(one)
        else:
            chunk = interpret(event_data(one) or b"")
            transcript.add(chunk, chunk.text)


def test_the_transcript_reads_unread_events_as_the_relay_would_have() -> None:
    cases = [
        [event([delta("", role="assistant")]), event([delta("Hel")]), event([delta('lo "you"')])],
        [event([delta("a")]), event([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "t"}]}}])],
        [event([delta("a"), delta("b", index=1)])],
        [event([delta("a")]), event([{"index": 0, "delta": {"refusal": "no"}}])],
    ]
    for events in cases:
        parsed, unread = Transcript(), Transcript()
        _sent(parsed, events, unread=False)
        _sent(unread, events, unread=True)
        assert (unread.text, unread.tool, unread.untextual, unread.first) == \
            (parsed.text, parsed.tool, parsed.untextual, parsed.first)


def test_the_first_chunk_is_the_first_sent_however_reads_and_parsed_events_interleave() -> None:
    # The first chunk is sought in unread events only when asked: it must still be the first one sent,
    # whether it came unread or read, before or after events without a choice, and across a fold.
    rng = random.Random(7)
    for _ in range(300):
        sent: list[tuple[bool, bytes]] = []  # (unread, event)
        for i in range(rng.randint(1, 6)):
            choices = [] if rng.random() < 0.4 else [delta(f"t{i}")]
            one = event(choices, id=f"c{i}") if rng.random() < 0.8 else b": keep-alive"
            sent.append((rng.random() < 0.6, one))
        expected = next((orjson.loads(one[6:]) for _, one in sent
                         if one.startswith(b"data: ") and orjson.loads(one[6:])["choices"]), None)
        transcript = Transcript()
        for unread, one in sent:
            if unread:
                transcript.add_unread(one + b"\n\n")
            else:
                data = event_data(one)
                chunk = interpret(data) if data is not None else None
                if chunk is not None:
                    transcript.add(chunk, chunk.text)
        if rng.random() < 0.3:
            transcript._read()  # as a fold does, before `first` was ever asked for
        assert transcript.first == expected, sent


def test_an_unreadable_event_sent_unread_means_the_transcript_is_not_continued() -> None:
    transcript = Transcript()
    transcript.add_unread(event([delta("fine")]) + b"\n\n" + b'data: {"choices": nope}')
    assert transcript.untextual and transcript.text == "fine"


def test_a_long_stream_folds_its_unread_events_into_text() -> None:
    transcript = Transcript()
    one = event([delta("x" * 100)])
    for _ in range(Transcript.FOLD_AT // len(one) + 2):
        transcript.add_unread(one)
    assert transcript._unread < len(one) * 2, "folded: the raw bytes are not all kept"
    assert transcript.text == "x" * 100 * (Transcript.FOLD_AT // len(one) + 2)


def test_a_stream_that_is_never_continued_keeps_nothing_unread() -> None:
    transcript = Transcript(kept=False)
    transcript.add_unread(event([delta("x" * 1000)]))
    assert transcript._parts == [] and transcript._unread == 0 and transcript.first is None


def test_a_value_far_from_the_end_of_a_long_read_is_found() -> None:
    # Two choices: choice 1 finishes first, then choice 0 goes on for many events (each with its null
    # finish_reason): past a few steps back from the end the rest of the read is searched another way.
    early = event([delta(finish="stop", index=1)])
    words = [event([delta(f" w{i}")]) for i in range(20)]
    last = event([delta(finish="length")])
    for events in ([early, *words, last], [*words[:3], early, *words, last], [early, *words], [*words, early]):
        read = b"\n\n".join(events) + b"\n\n"
        assert read_runs(read) == tuple(plain_runs(events))
        assert sum(plain for _, plain in plain_runs(events)) == len(events) - 1 - (last in events)


_TEXTS = [b"tok", b" token", b"", b"usage", b"error", b"finish_reason", b'a"b', b"a\nb", b"a\rb", b"\\", b'\\"',
          b"x" * 40, b"x" * 40 + b'"', b"y" * 40 + b"\n", b'usage":null', b"}\n\ndata: {", b"\xc3\xa9", b"\\u0022",
          b"null"]


def test_a_stream_frame_gives_read_runs_verdict_on_every_read() -> None:
    """PlainFrame.judge against read_runs over streams of one-event reads whose text (raw bytes put
    in a delta's string, JSON or not) is drawn to hit each case: quotes, key names, newlines, CRs."""
    rng = random.Random(18)
    fitted = 0
    for _ in range(200):
        frame = PlainFrame()
        spaced = rng.random() < 0.2
        shape = rng.choice([event([delta("PLACE")], spaced=spaced), event([delta("PLACE")], spaced=spaced, usage=None),
                            event([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {
                                "arguments": "PLACE"}}]}, "finish_reason": None}])])
        for _ in range(rng.randint(1, 30)):
            roll = rng.random()
            if roll < 0.8:
                read = shape.replace(b"PLACE", rng.choice(_TEXTS)) + b"\n\n"
            elif roll < 0.9:
                read = _random_event(rng) + b"\n\n"
            else:
                read = rng.choice([b"data: [DONE]\n\n", b": ping\n\n", event([delta(finish="stop")]) + b"\n\n"])
            before = frame._head
            assert frame.judge(read) == read_runs(read), (read, before)
            fitted += frame._misses == 0
    assert fitted > 500, "the frame is what judged most reads"


def test_a_changing_last_string_is_the_frame_s_text() -> None:
    frame = PlainFrame()
    reads = [event([delta("t")], obfuscation=f"{i:04}") + b"\n\n" for i in range(5)]  # as OpenAI pads
    assert [frame.judge(read) for read in reads] == [1] * 5 and frame._misses == 0


def test_a_stream_whose_deltas_fit_no_frame_stops_trying() -> None:
    frame = PlainFrame()
    for i in range(20):  # a number that changes in every event, after the text
        read = event([delta("t")], seq=i) + b"\n\n"
        assert frame.judge(read) == 1
    assert frame._head == b"" and frame._misses == PlainFrame._GIVE_UP
