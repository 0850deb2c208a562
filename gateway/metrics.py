"""PLACEHOLDER written by the lead so the core can run; the observability helper replaces this file."""
from typing import Any


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


request_started = request_finished = attempt = retry = fallback = usage = stream_chunks = _noop
circuit_state = config_reload = set_build_info = setup_multiprocess = _noop


def render(accept: str | None) -> tuple[bytes, str]:
    return b"", "text/plain"
