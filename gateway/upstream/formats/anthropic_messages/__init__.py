"""Native Anthropic upstream: an OpenAI chat request as a Messages request, and the answer back as chat.

Pure functions and one small state machine on dicts and bytes: no sockets, no asyncio (the
dialects and the view that use them are in upstream/formats/anthropic.py). One translation, read in
this order:

- request.py  chat request -> Messages request (`build_request`): fields handled, ignored, refused
- turns.py    chat messages -> `system` blocks and alternating turns (tool calls, results, thinking)
- answer.py   whole Messages answer -> chat completion (`parse_response`), stop reasons, usage
- stream.py   Messages SSE events -> chat chunks (`StreamTranslator`)
- errors.py   Anthropic error bodies -> UpstreamStatusError (`parse_error`)
"""

from gateway.upstream.formats.anthropic_messages.answer import STOP_REASONS, chat_usage, finish_reason, parse_response
from gateway.upstream.formats.anthropic_messages.errors import error_object, error_type, parse_error
from gateway.upstream.formats.anthropic_messages.request import DEFAULT_MAX_TOKENS, THINKING_BUDGETS, build_request
from gateway.upstream.formats.anthropic_messages.stream import StreamTranslator

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "STOP_REASONS",
    "THINKING_BUDGETS",
    "StreamTranslator",
    "build_request",
    "chat_usage",
    "error_object",
    "error_type",
    "finish_reason",
    "parse_error",
    "parse_response",
]
