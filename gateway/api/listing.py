"""Who may read the model listings (/v1/models, /openwork/provider.json), and what they are shown.

With gateway keys configured, a listing needs a key and shows only the ids that key may call; why
an id is unavailable (which credential is unset) is shown to admin keys only (and by `gateway check`).
Without keys (a loopback-only gateway, or `auth: none`) anyone who can reach it sees every id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.errors import Unauthorized
from gateway.runtime import Runtime


@dataclass(frozen=True, slots=True)
class Viewer:
    models: re.Pattern[str] | None = None  # the ids the key may call; None: every id
    admin: bool = False  # sees why an id is unavailable

    def may_use(self, model: str) -> bool:
        return self.models is None or self.models.match(model) is not None

    @property
    def cache_key(self) -> tuple[str | None, bool]:
        return (self.models.pattern if self.models is not None else None, self.admin)


EVERYONE = Viewer()


def viewer(runtime: Runtime, headers: Mapping[str, str]) -> Viewer:
    """The viewer for a request's key; raises Unauthorized (401) when keys exist and none valid is given."""
    auth = runtime.auth
    if not auth.enabled:
        return EVERYONE
    try:
        caller = auth.authenticate(headers)
    except Unauthorized:
        if auth.is_admin(headers):
            return Viewer(admin=True)
        raise
    return Viewer(caller.models)
