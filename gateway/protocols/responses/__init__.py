"""The OpenAI Responses API as an inbound protocol: a Responses request as chat, and the chat answer back.

Used when a `/v1/responses` request goes to a target that speaks only chat completions (targets
that speak the Responses API get the request untouched). Pure functions and one small state
machine: no sockets, no asyncio. What chat cannot express (hosted tools, custom grammar tools,
stored conversations) is refused with a BadRequest naming it, never dropped in silence; fields
that only steer OpenAI's own storage or caching change nothing for a chat target and are ignored.
One translation, read in this order:

- request.py      Responses request -> chat request (`to_chat`): which fields translate, which are refused
- input_items.py  `instructions` and `input` items -> chat messages
- tools.py        function tools (and namespaces of them) <-> chat tool names
- answer.py       whole chat completion -> Response (`to_response`), output items, usage
- stream.py       chat chunks -> Responses events (`StreamTranslator`), ending completed/incomplete/failed
"""

from gateway.protocols.responses.answer import IdFactory, new_id, response_object, to_response, usage
from gateway.protocols.responses.request import to_chat
from gateway.protocols.responses.stream import StreamTranslator

__all__ = ["IdFactory", "StreamTranslator", "new_id", "response_object", "to_chat", "to_response", "usage"]
