"""Reading a backend's URL (`state.ledger`, `state.redis_url`) without ever returning its password."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit


def split(url: str) -> SplitResult | None:
    """The URL's parts, or None when it cannot be read (a port that is not a number in range)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in range
    except ValueError:
        return None
    return parts


def literal_password(raw: str) -> bool:
    """A password written into the file itself rather than taken from the environment with ${VAR}."""
    if "${" in raw:
        return False
    parts = split(raw)
    return parts is not None and bool(parts.password)
