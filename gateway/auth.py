"""Gateway keys: who is calling. Keys are kept only as SHA-256 digests and compared in constant time."""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.config.schema import AuthSettings
from gateway.errors import Forbidden, Unauthorized


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    models: re.Pattern[str] | None = None

    def check_model(self, model: str) -> None:
        if self.models is not None and not self.models.match(model):
            raise Forbidden(f"The key `{self.name}` may not use the model `{model}`.", param="model")


ANONYMOUS = Caller("anonymous")


class Authenticator:
    def __init__(self, settings: AuthSettings) -> None:
        self._keys: list[tuple[bytes, Caller]] = []
        for key in settings.keys:
            if key.sha256 is not None:
                digest = bytes.fromhex(key.sha256)
            else:
                assert key.key is not None  # the schema requires exactly one of the two
                digest = hashlib.sha256(key.key.encode()).digest()
            pattern = None
            if key.models is not None:
                pattern = re.compile("|".join(f"(?:{fnmatch.translate(m)})" for m in key.models) or "(?!)")
            self._keys.append((digest, Caller(key.name, pattern)))

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        """The caller for `Authorization: Bearer <key>` or `x-api-key: <key>`; raises Unauthorized."""
        if not self._keys:
            return ANONYMOUS
        presented = _presented_key(headers)
        if presented is None:
            raise Unauthorized("Missing gateway key: send `Authorization: Bearer <key>` (or `x-api-key`).")
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for known, caller in self._keys:
            # Compare against every key so the time taken does not say which one nearly matched.
            if hmac.compare_digest(digest, known):
                found = caller
        if found is None:
            raise Unauthorized("Invalid gateway key.")
        return found


def _presented_key(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization")
    if value:
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    value = headers.get("x-api-key")
    return value.strip() if value and value.strip() else None
