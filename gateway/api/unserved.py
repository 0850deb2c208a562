"""OpenAI endpoints clients call that the gateway does not serve: a clear OpenAI-shaped 404 naming them.

A client that asks for images or files should learn at once that this gateway does not do that,
not guess from a bare 404 or an HTML page. WebSocket attempts are answered the same way, except on
/v1/responses, where `426 Upgrade Required` tells Codex to use plain HTTP at once.
"""

from __future__ import annotations

import logging

from starlette.types import Receive, Scope, Send

from gateway.api.send import send_error
from gateway.errors import GatewayError, MethodNotAllowed, NotFound
from gateway.request_id import new_request_id

RESPONSES_PATH = "/v1/responses"


class _AnsweredHandshakeFilter(logging.Filter):
    """uvicorn's WebSocket protocol logs a handshake refused with an HTTP answer (our 426/404, sent through
    ASGI's websocket.http.response extension) as an error, although the client got that answer. Every
    WebSocket request reaches `websocket()` below, which always answers, so the line is only noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


logging.getLogger("uvicorn.error").addFilter(_AnsweredHandshakeFilter())

SERVED = ("POST /v1/chat/completions, POST /v1/responses, POST /v1/embeddings, GET /v1/models, "
          "GET /v1/models/{id}")

# Path prefix -> what OpenAI calls that API. Longest prefixes first where they nest.
_APIS: tuple[tuple[str, str], ...] = (
    ("/v1/chat/completions/", "stored chat completions (the gateway keeps no store)"),
    ("/v1/responses/", "stored responses (the gateway is stateless: send `store: false` and the full input)"),
    ("/v1/completions", "the legacy completions API"),
    ("/v1/images", "the Images API"),
    ("/v1/audio", "the Audio API"),
    ("/v1/files", "the Files API"),
    ("/v1/uploads", "the Uploads API"),
    ("/v1/batches", "the Batch API"),
    ("/v1/fine_tuning", "fine-tuning"),
    ("/v1/fine-tunes", "fine-tuning"),
    ("/v1/moderations", "the Moderations API"),
    ("/v1/assistants", "the Assistants API"),
    ("/v1/threads", "the Assistants API (threads)"),
    ("/v1/vector_stores", "vector stores"),
    ("/v1/conversations", "the Conversations API"),
    ("/v1/realtime", "the Realtime API"),
    ("/v1/evals", "evals"),
    ("/v1/containers", "containers"),
    ("/v1/videos", "the Videos API"),
    ("/v1/organization", "the organization admin API"),
    ("/v1/chatkit", "ChatKit"),
    ("/v1/edits", "the edits API"),
    ("/v1/engines", "the engines API"),
)


def unserved(path: str) -> str | None:
    """The name of the OpenAI API `path` belongs to, when it is one the gateway does not serve."""
    for prefix, name in _APIS:
        if prefix.endswith("/"):
            if path.startswith(prefix):
                return name
        elif path == prefix or path.startswith(prefix + "/"):
            return name
    return None


def not_served(method: str, path: str) -> GatewayError:
    name = unserved(path)
    if name is None:
        return NotFound(f"No such endpoint: {method} {path}. This gateway serves {SERVED}.")
    error = NotFound(f"This gateway does not serve {name} ({method} {path}). It serves {SERVED}.")
    error.code = "endpoint_not_served"
    return error


class UpgradeRequired(GatewayError):
    status = 426
    type = "invalid_request_error"
    code = "websocket_not_supported"


_NO_WEBSOCKET = ("The Responses API over WebSocket is not served here; use HTTP: POST /v1/responses "
                 "(streamed with SSE).")


async def responses_get(scope: Scope, receive: Receive, send: Send) -> None:
    """GET /v1/responses over plain HTTP: a WebSocket upgrade attempt gets 426, anything else 405."""
    upgrade = any(k == b"upgrade" and b"websocket" in v.lower() for k, v in scope["headers"])
    error: GatewayError = UpgradeRequired(_NO_WEBSOCKET) if upgrade else \
        MethodNotAllowed("Use POST for /v1/responses.", headers={"Allow": "POST"})
    await send_error(send, error, new_request_id())


async def websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """Refuse a WebSocket handshake with an HTTP answer (ASGI's websocket.http.response extension)."""
    path = scope["path"]
    if path == RESPONSES_PATH:
        error: GatewayError = UpgradeRequired(_NO_WEBSOCKET)
    else:
        error = not_served("GET", path)
    await receive()  # websocket.connect
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})  # the server turns this into a 403
        return
    body = error.to_json()
    await send({"type": "websocket.http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "websocket.http.response.body", "body": body})
