"""Catalog value types: providers and models as models.dev describes them, unknown fields kept."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Entry(BaseModel):
    # models.dev grows new fields all the time: keep them (extra="allow") and pass them through.
    model_config = ConfigDict(extra="allow", frozen=True)


class Limits(_Entry):
    context: int = 0
    input: int | None = None
    output: int = 0


class Cost(_Entry):
    """USD per million tokens."""

    input: float | None = None
    output: float | None = None
    cache_read: float | None = None
    cache_write: float | None = None
    reasoning: float | None = None


class Modalities(_Entry):
    input: tuple[str, ...] = ("text",)
    output: tuple[str, ...] = ("text",)


class Model(_Entry):
    id: str
    name: str = ""
    attachment: bool = False
    reasoning: bool = False
    tool_call: bool = False
    structured_output: bool | None = None
    temperature: bool | None = None
    knowledge: str | None = None
    release_date: str | None = None
    last_updated: str | None = None
    open_weights: bool | None = None
    limit: Limits = Field(default_factory=Limits)
    modalities: Modalities = Field(default_factory=Modalities)
    cost: Cost | None = None

    def metadata(self) -> dict[str, Any]:
        """The model as models.dev shapes it, unknown fields included."""
        return self.model_dump(mode="json", exclude_none=True)


class Provider(_Entry):
    id: str
    name: str = ""
    npm: str = "@ai-sdk/openai-compatible"
    env: tuple[str, ...] = ()
    doc: str = ""
    api: str | None = None
    models: Mapping[str, Model] = Field(default_factory=dict)


class Catalog:
    """Providers by id, merged from one or more files in order (a later file wins per provider)."""

    __slots__ = ("providers", "sources")

    def __init__(self, providers: Mapping[str, Provider], sources: tuple[str, ...]) -> None:
        self.providers = dict(providers)
        self.sources = sources

    def model_count(self) -> int:
        return sum(len(p.models) for p in self.providers.values())
