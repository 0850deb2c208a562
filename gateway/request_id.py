"""Request ids: the client's `x-request-id` when it is a sane token, else a new one.

One rule for every answer, whether the app sends it (api/middleware.py) or the connection layer
refuses a request before the app sees it (connections.py). A sane token is at most 128 bytes with no
control characters; it is echoed as the very bytes it came in.
"""

from __future__ import annotations

import itertools
import os
import re

HEADER = b"x-request-id"
# Scope key the gateway's own server offers (None): the middleware leaves the answer's whole
# `x-request-id` header line there and the server's send writes it (gateway/http_cycle.py), so the
# middleware need not wrap send. Under another server the key is absent and the middleware wraps.
LINE_KEY = "gateway.request_id_line"
_SANE = re.compile(rb"[\x20-\x7e\x80-\xff]{1,128}")
_PREFIX = os.urandom(6).hex()
_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """Unique without a system call per request: a random per-process prefix and a counter."""
    return f"{_PREFIX}{next(_COUNTER):010x}"


def sane_request_id(given: bytes | None) -> bytes | None:
    """The client's id if it is a sane token to echo, else None (a sane token is a valid header value)."""
    return given if given is not None and _SANE.fullmatch(given) else None
