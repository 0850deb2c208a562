"""aiohttp code the transport package copies or stands in for, named `Class.method`, and the digests a
test keeps of it: such a test fails when an aiohttp release changes the code, so that what the gateway
copied or relies on is checked against it again."""

from __future__ import annotations

import hashlib
import inspect

import aiohttp
from aiohttp import base_protocol, client_proto

_OWNERS: dict[str, type] = {"StreamReader": aiohttp.StreamReader, "ResponseHandler": client_proto.ResponseHandler,
                            "BaseProtocol": base_protocol.BaseProtocol}


def digest(name: str) -> str:
    owner, method = name.split(".")
    return hashlib.sha256(inspect.getsource(getattr(_OWNERS[owner], method)).encode()).hexdigest()[:16]


def changed(digests: dict[str, str]) -> dict[str, str]:
    """The names whose code no longer has the digest kept, with the digest it has now."""
    return {name: now for name, kept in digests.items() if (now := digest(name)) != kept}
