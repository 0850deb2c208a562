"""Masking upstream credentials: the one function every string from an upstream passes through
before it can reach a client, a log line or a metric.

An upstream may repeat what it was sent: its own key in an error message, the request path (with
an account id taken from a `${VAR}` in the provider's URL), an extra header's value. Each provider
knows its credential values (Endpoint.secrets); whatever the gateway relays or quotes from that
upstream goes through Secrets.mask (parsed values) or Secrets.mask_bytes (bytes passed through).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

MASK = "***"
_MASK_BYTES = MASK.encode()
# Shorter values cannot be masked without mangling unrelated text ("org-7" is in many a sentence).
MIN_LENGTH = 8
# Nested values deeper than this are dropped rather than walked: an error body is not a document.
_MAX_DEPTH = 32


class Secrets:
    """The credential values of one provider."""

    __slots__ = ("_raw", "_texts")

    def __init__(self, values: Iterable[str | None] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole.
        texts = sorted({v for v in values if v and len(v) >= MIN_LENGTH}, key=len, reverse=True)
        self._texts = tuple(texts)
        raw: set[bytes] = set()
        for text in texts:
            raw.add(text.encode())
            raw.add(orjson.dumps(text)[1:-1])  # as it reads inside a JSON string
        self._raw = tuple(sorted(raw, key=len, reverse=True))

    def __bool__(self) -> bool:
        return bool(self._texts)

    def mask(self, value: Any, _depth: int = 0) -> Any:
        """`value` (a string, or any JSON value with strings nested in it) with every secret masked."""
        if not self._texts:
            return value
        if isinstance(value, str):
            return self.mask_text(value)
        if isinstance(value, dict | list | tuple) and _depth >= _MAX_DEPTH:
            return None
        if isinstance(value, dict):
            return {self.mask(k, _depth + 1): self.mask(v, _depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.mask(v, _depth + 1) for v in value]
        return value

    def mask_text(self, text: str) -> str:
        for secret in self._texts:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def mask_bytes(self, data: bytes) -> bytes:
        """Bytes relayed as the upstream sent them (an answer, a stream event), with every secret masked."""
        for secret in self._raw:
            # Looked for from the end first: rfind skips through bytes without the secret several times
            # faster than replace() or find(), which scan them forward (an unpaced stream's 9 KB read:
            # ~2.5 us against ~6 us for an 18-byte key, ~11 us for a 44-byte one; a short event: equal).
            if data.rfind(secret) >= 0:
                data = data.replace(secret, _MASK_BYTES)
        return data


NO_SECRETS = Secrets()
