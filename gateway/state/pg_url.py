"""`state.ledger` URLs: what a valid one looks like, and how to name one without its password.

Kept apart from gateway.state.postgres (the asyncpg module) so the config check and every log line
can use it without importing the driver. The password never appears in anything this module
returns: messages name the user, host, port and database only.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from gateway.state.url_parts import split

SCHEMES = ("postgresql", "postgres")
EXAMPLE = "postgresql://gateway:${PGPASSWORD}@db.internal:5432/gateway"


def problem(url: str) -> str | None:
    """Why `url` cannot be a PostgreSQL URL (a sentence with the fix), or None if it can."""
    parts = split(url)
    if parts is None:
        return f"cannot be read (is the port a number up to 65535?); write it as {EXAMPLE}"
    if parts.scheme not in SCHEMES:
        shown = f"`{parts.scheme}://`" if parts.scheme else "no scheme"
        return f"has {shown}; only PostgreSQL is supported here: write it as {EXAMPLE}"
    if not parts.hostname and "host" not in parse_qs(parts.query):
        return f"names no host; write it as {EXAMPLE}"
    if not parts.path.strip("/"):
        return f"names no database (the path after the host); write it as {EXAMPLE}"
    return None


def describe(url: str) -> str:
    """The URL as logs and messages may show it: user, host, port, database; never the password."""
    parts = split(url)
    if parts is None:
        return "postgresql://(unreadable URL)"
    user = f"{parts.username}@" if parts.username else ""
    host = parts.hostname or "(socket)"
    port = f":{parts.port}" if parts.port else ""
    return f"postgresql://{user}{host}{port}{parts.path}"
