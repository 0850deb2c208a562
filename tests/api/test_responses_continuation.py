"""A translated /v1/responses stream that breaks after content is continued like a chat stream: the client
reads the whole answer once, in one message item, and `response.completed` carries the summed usage."""

from __future__ import annotations

import json

from tests.conftest import FAST_POLICY, GatewayFactory, model_json, provider_json
from tests.fakes.upstream import FakeUpstream, cut_after, ok
from tests.protocols.test_responses_golden import EVENT, parse_events

TEXT = "one two three four five six"


async def test_a_cut_translated_stream_is_continued(start_gateway: GatewayFactory) -> None:
    async with FakeUpstream() as up:
        up.script(cut_after(2, TEXT), ok(TEXT))
        gw = await start_gateway({**FAST_POLICY, "models": {"pair": {"targets": ["acme/m1"]}}},
                                 catalogs=[provider_json("acme", up.base_url, [model_json("m1")])],
                                 environ={"ACME_API_KEY": "sk-acme-cont-0001"})
        response = await gw.client.post("/v1/responses", json={"model": "pair", "input": "count", "stream": True})
        assert len(up.received) == 2
        assert up.received[1].json["messages"][-1] == {"role": "assistant", "content": "one two"}, \
            "the continuation was given the delivered text"
    events = parse_events(response.text)
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "response.completed" and "response.failed" not in kinds
    assert kinds.count("response.output_item.added") == 1, "one message item, not two"
    assert "".join(b["delta"] for k, b in events if k == "response.output_text.delta") == TEXT
    assert [b["sequence_number"] for _, b in events] == list(range(len(events)))
    for _, body in events:
        EVENT.validate_python(body)
    final = events[-1][1]["response"]
    assert final["output"][0]["content"][0]["text"] == TEXT
    assert final["usage"]["output_tokens"] >= 4 + 2, json.dumps(final["usage"])  # both attempts counted
