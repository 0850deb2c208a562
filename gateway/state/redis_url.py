"""`state.redis_url`: what a valid one looks like, and how to name one without its password.

Apart from gateway.state.redis (the redis-py module) so the config check and every log line can use
it without importing the client. Nothing this module returns contains the password.
"""

from __future__ import annotations

from gateway.state.url_parts import split

SCHEMES = ("redis", "rediss")
EXAMPLE = "redis://:${REDIS_PASSWORD}@redis.internal:6379/0 (rediss:// for TLS)"


def problem(url: str) -> str | None:
    """Why `url` cannot be a Redis URL (a sentence with the fix), or None if it can."""
    parts = split(url)
    if parts is None:
        return f"not a URL this gateway can read (a bad port?); write it as {EXAMPLE}"
    if parts.scheme not in SCHEMES:
        shown = f"`{parts.scheme}://`" if parts.scheme else "no scheme"
        return f"has {shown}; only redis:// and rediss:// are supported: write it as {EXAMPLE}"
    if not parts.hostname:
        return f"names no host; write it as {EXAMPLE}"
    database = parts.path.strip("/")
    if database and not database.isdigit():
        return f"has `/{database}` where a database number (0-15) goes; write it as {EXAMPLE}"
    return None


def describe(url: str) -> str:
    """The URL as logs and messages may show it: scheme, host, port, database; never user or password."""
    parts = split(url)
    if parts is None or not parts.scheme:
        return "redis://(unreadable URL)"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"
