"""What every HTTP response carries, whatever answered it: the request id, and CORS for browsers.

Applied at the app's entry (gateway/app.py) to every HTTP request (the chat pipeline, Starlette's
routes, 404s and errors alike), so no endpoint can forget either. The request id is the client's
`x-request-id` when it is a sane token (at most 128 bytes, no control characters), echoed as the
very bytes it came in; otherwise a new one. Endpoints read it from the scope (`request_id(scope)`)
for their log lines and error bodies, and never set the header themselves, so it is only appended
(no pass over the answer's headers; under the gateway's own server send is not even wrapped: the
header line is left in the scope for the server to write, gateway/http_cycle.py). The request's
headers are made a dict once here (`request_headers(scope)`), for the entry and the endpoints alike.
"""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Scope, Send

from gateway.request_id import HEADER, LINE_KEY, new_request_id, sane_request_id

_SCOPE_KEY = "gateway.request_id"
_HEADERS_KEY = "gateway.headers"
# What a browser client may read of an answer besides the CORS-safelisted headers.
_EXPOSED = ("x-request-id", "x-gateway-provider", "x-gateway-model", "x-gateway-attempts", "x-gateway-fallbacks",
            "retry-after", "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
            "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens")


def request_headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by their lower-case name (the last of repeated ones), built once per request."""
    headers: dict[bytes, bytes] | None = scope.get(_HEADERS_KEY)
    if headers is None:
        headers = scope[_HEADERS_KEY] = dict(scope["headers"])
    return headers


def request_id(scope: Scope) -> str:
    """This request's id as text (the bytes as latin-1, so nothing is lost); a new one outside the middleware."""
    given = scope.get(_SCOPE_KEY)
    return given if isinstance(given, str) else new_request_id()


def with_request_id(scope: Scope, send: Send) -> Send:
    """Name an HTTP request (its id in the scope) and return the send that carries `x-request-id`: `send`
    itself under the gateway's own server, which writes the line this leaves in the scope, else a wrapper
    that appends the pair to the answer's headers. A plain call, not a layer: the app's entry
    (gateway/app.py) calls it and goes on to the endpoint, so no coroutine of its own is paid on every
    resume of the request."""
    given = request_headers(scope).get(HEADER)
    raw = sane_request_id(given) if given is not None else None
    if raw is None:
        text = new_request_id()
        raw = text.encode()
    else:
        text = raw.decode("latin-1")
    scope[_SCOPE_KEY] = text
    if LINE_KEY in scope:  # the gateway's own server writes the header line itself: no wrapper
        scope[LINE_KEY] = b"x-request-id: %s\r\n" % raw
        return send
    header = (HEADER, raw)

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), header]}
        await send(message)

    return send_with_id


def with_cors(app: ASGIApp, origins: tuple[str, ...]) -> ASGIApp:
    """Browser clients from `origins` (`server.cors_origins`; `*` for any): preflights answered, headers exposed.

    No cookies are involved (keys travel in headers), so credentials mode stays off.
    """
    if not origins:
        return app
    return CORSMiddleware(app, allow_origins=list(origins), allow_methods=["GET", "POST"], allow_headers=["*"],
                          expose_headers=list(_EXPOSED), max_age=600)
