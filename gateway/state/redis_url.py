"""`state.redis_url`: what a valid one looks like, and how to name one without its password.

Apart from gateway.state.redis (the redis-py module) so the config check and every log line can use
it without importing the client. Nothing this module returns contains the password.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

SCHEMES = ("redis", "rediss")
EXAMPLE = "redis://:${REDIS_PASSWORD}@redis.internal:6379/0 (rediss:// for TLS)"


def _split(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in range
    except ValueError:
        return None
    return parts


def problem(url: str) -> str | None:
    """Why `url` cannot be a Redis URL (a sentence with the fix), or None if it can."""
    parts = _split(url)
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


def literal_password(raw: str) -> bool:
    """A password written into the file itself rather than taken from the environment with ${VAR}."""
    if "${" in raw:
        return False
    parts = _split(raw)
    return parts is not None and bool(parts.password)


def describe(url: str) -> str:
    """The URL as logs and messages may show it: scheme, host, port, database; never user or password."""
    parts = _split(url)
    if parts is None or not parts.scheme:
        return "redis://(unreadable URL)"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"
