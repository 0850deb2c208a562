"""Anthropic Messages as an inbound protocol: a Messages request as chat, and the chat answer back.

Used when a `/v1/messages` request goes to a target that speaks chat completions. Pure functions and
one small state machine: no sockets, no asyncio. One translation, read in this order:

- request.py  Messages request -> chat request (`to_chat`); refused fields named in a BadRequest
- answer.py   whole chat completion -> Messages answer (`to_message`), stop reasons, usage
- stream.py   chat chunks -> Messages events (`StreamTranslator`), error events mid-stream
- errors.py   gateway errors in Anthropic's shape and status codes
- tokens.py   the count_tokens estimate when no native target can count
"""

from gateway.protocols.messages.answer import message_id, messages_usage, stop_reason, to_message
from gateway.protocols.messages.errors import error_body, error_status
from gateway.protocols.messages.request import to_chat
from gateway.protocols.messages.stream import StreamTranslator, sse, stream_error
from gateway.protocols.messages.tokens import IMAGE_TOKENS, estimate_tokens

__all__ = [
    "IMAGE_TOKENS",
    "StreamTranslator",
    "error_body",
    "error_status",
    "estimate_tokens",
    "message_id",
    "messages_usage",
    "sse",
    "stop_reason",
    "stream_error",
    "to_chat",
    "to_message",
]
