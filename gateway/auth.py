"""Gateway keys: who is calling. Keys are kept only as SHA-256 digests: a presented key is found by its
digest (a dict lookup, whose timing says nothing about the keys known), an admin key compared in
constant time.

Keys come from the config (`auth.keys`, `auth.admin_keys`) and from the managed keys of the state
store, which a worker keeps in memory (`ManagedLookup`, refreshed in the background).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from gateway.config.schema import AdminKey, AuthSettings, GatewayKey
from gateway.errors import Forbidden, Unauthorized
from gateway.state.store import LimitSettings
from gateway.teams.limits import limit_settings


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    models: re.Pattern[str] | None = None
    limits: LimitSettings | None = None
    expires_at: float | None = None

    def may_use(self, model: str) -> bool:
        return self.models is None or self.models.match(model) is not None

    def check_model(self, model: str) -> None:
        if not self.may_use(model):
            raise Forbidden(f"The key `{self.name}` may not use the model `{model}`.", param="model")


ANONYMOUS = Caller("anonymous")


class ManagedLookup(Protocol):
    def lookup(self, digest: bytes) -> Caller | None: ...
    def any(self) -> bool: ...


def models_pattern(models: tuple[str, ...] | None) -> re.Pattern[str] | None:
    if models is None:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(m)})" for m in models) or "(?!)")


class _Digest(Protocol):
    def digest(self) -> bytes: ...


def builtin_sha256() -> Callable[[bytes], _Digest]:
    """CPython's own SHA-256 (the module hashlib falls back to without OpenSSL), else hashlib's. The
    digest is the same; its cost is not: once per request, with the caches cold as they are at
    moderate load, a digest took ~24 us through OpenSSL's EVP layer against ~7 us here (a 46-byte key,
    32 MB swept through the caches before each call). A Python built without its own hashes keeps
    OpenSSL's."""
    try:
        constructor: Callable[[bytes], _Digest] = getattr(hashlib, "__get_builtin_constructor")("sha256")
    except (AttributeError, ValueError):  # not CPython's hashlib, or built without _sha256/_sha2
        return hashlib.sha256
    return constructor


_sha256 = builtin_sha256()


def _digest(key: GatewayKey | AdminKey) -> bytes:
    if key.sha256 is not None:
        return bytes.fromhex(key.sha256)
    assert key.key is not None  # the schema requires exactly one of the two
    return hashlib.sha256(key.key.encode()).digest()


class Authenticator:
    def __init__(self, settings: AuthSettings, managed: ManagedLookup | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        # By digest, as the managed keys are (a later duplicate wins, as when every key was compared in turn):
        # one lookup per request instead of a constant-time comparison per configured key. The lookup's
        # timing depends on the presented key's SHA-256 and the process's secret hash seed, so it says
        # nothing about any configured key.
        self._keys = {_digest(k): Caller(k.name, models_pattern(k.models), limit_settings(k.limits))
                      for k in settings.keys}
        self._admin = [(_digest(k), k.name) for k in settings.admin_keys]
        self._configured = bool(self._keys or self._admin)
        self._managed = managed
        self._clock = clock

    @property
    def enabled(self) -> bool:
        """Keys are required: some are configured (admin keys mean managed keys are in use) or managed."""
        return self._configured or (self._managed is not None and self._managed.any())

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        """The caller for `Authorization: Bearer <key>` or `x-api-key: <key>`; raises Unauthorized."""
        if not self.enabled:
            return ANONYMOUS
        found = self._find(self._digest_of(headers))
        if found is None:
            raise Unauthorized("Invalid gateway key.")
        if found.expires_at is not None and self._clock() >= found.expires_at:
            raise Unauthorized(f"The gateway key `{found.name}` has expired.")
        return found

    def is_admin(self, headers: Mapping[str, str]) -> bool:
        """Whether the request carries one of `auth.admin_keys`."""
        if not self._admin or _presented_key(headers) is None:
            return False
        digest = self._digest_of(headers)
        return any([hmac.compare_digest(digest, known) for known, _ in self._admin])  # every one compared

    def authenticate_admin(self, headers: Mapping[str, str]) -> str:
        """The admin key's name; 401 for no or an unknown key, 403 for an ordinary gateway key."""
        digest = self._digest_of(headers)
        name = None
        for known, admin in self._admin:
            if hmac.compare_digest(digest, known):
                name = admin
        if name is not None:
            return name
        if self._find(digest) is not None:
            raise Forbidden("This endpoint is for admin keys (auth.admin_keys) only; this is an ordinary gateway key.",
                            code="admin_key_required")
        raise Unauthorized("Invalid admin key.")

    def _digest_of(self, headers: Mapping[str, str]) -> bytes:
        presented = _presented_key(headers)
        if presented is None:
            raise Unauthorized("Missing gateway key: send `Authorization: Bearer <key>` (or `x-api-key`).")
        return _sha256(presented.encode()).digest()

    def _find(self, digest: bytes) -> Caller | None:
        found = self._keys.get(digest)
        if found is None and self._managed is not None:
            found = self._managed.lookup(digest)  # by digest too
        return found


def _presented_key(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization")
    if value:
        scheme, _, token = value.partition(" ")
        token = token.strip()
        return token if token and scheme.lower() == "bearer" else None
    value = headers.get("x-api-key")
    return value.strip() if value and value.strip() else None
