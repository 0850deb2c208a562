"""`Did you mean ...?` for an unknown model id, in bounded work per request.

The index is built once per loaded catalog: each id's normalised form (lower case, separators
dropped) and every form with one character deleted point to the id (a one-deletion neighbourhood,
as SymSpell does). A query is normalised, its own one-deletion forms are looked up, and any id
sharing one is at most one edit (a typo, a missing or extra character, two swapped) away. A lookup
is one dict probe per character of an id that is at most MAX_MODEL_ID long, however big the catalog.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

_SEPARATORS = re.compile(r"[\s\-_.:]+")
# A form longer than this is not a typo of a catalog id; keeps the index and the query bounded.
_MAX_FORM = 128
_MAX_SUGGESTIONS = 3
_MAX_RANKED = 20


def _normalise(text: str) -> str:
    return _SEPARATORS.sub("", text.lower())


def _neighbourhood(form: str) -> set[str]:
    return {form, *(form[:i] + form[i + 1:] for i in range(len(form)))}


class SuggestionIndex:
    """Ids grouped by scope (a provider id, or "" for aliases), each scope with its neighbourhood map."""

    __slots__ = ("_scopes",)

    def __init__(self, ids: Iterable[tuple[str, str, str]]) -> None:
        """`ids`: (scope, the part of the id to match on, the full id to suggest)."""
        self._scopes: dict[str, dict[str, list[str]]] = {}
        for scope, name, full in ids:
            form = _normalise(name)
            if not form or len(form) > _MAX_FORM:
                continue
            index = self._scopes.setdefault(scope, {})
            for key in _neighbourhood(form):
                entries = index.setdefault(key, [])
                if full not in entries:
                    entries.append(full)

    def suggest(self, scope: str, name: str) -> list[str]:
        index = self._scopes.get(scope)
        form = _normalise(name[: _MAX_FORM * 2])
        if index is None or not form or len(form) > _MAX_FORM:
            return []
        found: set[str] = set()
        for key in _neighbourhood(form):
            found.update(index.get(key, ()))
        # Rank the few candidates (closest in length first, at most _MAX_RANKED) by similarity.
        nearest = sorted(found, key=lambda full: (abs(len(full) - len(name)), full))[:_MAX_RANKED]
        return sorted(nearest, key=lambda full: -difflib.SequenceMatcher(None, name, full).ratio())[:_MAX_SUGGESTIONS]

    def __contains__(self, scope: str) -> bool:
        return scope in self._scopes
