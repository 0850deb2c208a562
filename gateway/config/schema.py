"""Settings value types. Built and validated once by config.load, then passed to what needs them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PrivateAttr, StringConstraints, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Strict):
    """Seconds. `first_byte`, `first_token` and `idle` apply to streams; `response` to whole answers."""

    connect: float = Field(5.0, gt=0)
    first_byte: float = Field(30.0, gt=0)
    first_token: PositiveFloat | Literal["auto"] = Field(
        "auto", description="seconds, or `auto`: learned per target from its recent times to first token")
    first_token_floor: float = Field(1.0, gt=0, description="`auto` never waits less than this")
    first_token_ceiling: float = Field(30.0, gt=0, description="`auto` never waits longer than this")
    first_token_ceiling_reasoning: float = Field(
        300.0, gt=0, description="the same, for models the catalog marks `reasoning: true`")
    idle: float = Field(60.0, gt=0)
    response: float = Field(300.0, gt=0)
    total: float = Field(600.0, gt=0)


class TimeoutsOverride(_Strict):
    connect: float | None = Field(None, gt=0)
    first_byte: float | None = Field(None, gt=0)
    first_token: PositiveFloat | Literal["auto"] | None = None
    first_token_floor: float | None = Field(None, gt=0)
    first_token_ceiling: float | None = Field(None, gt=0)
    first_token_ceiling_reasoning: float | None = Field(None, gt=0)
    idle: float | None = Field(None, gt=0)
    response: float | None = Field(None, gt=0)
    total: float | None = Field(None, gt=0)


class RetryPolicy(_Strict):
    attempts: int = Field(3, ge=1, le=10, description="tries per target, the first included")
    backoff_initial: float = Field(0.5, ge=0)
    backoff_max: float = Field(8.0, ge=0)
    retry_after_max: float = Field(30.0, ge=0, description="longest upstream Retry-After worth waiting for")


class RetryOverride(_Strict):
    attempts: int | None = Field(None, ge=1, le=10)
    backoff_initial: float | None = Field(None, ge=0)
    backoff_max: float | None = Field(None, ge=0)
    retry_after_max: float | None = Field(None, ge=0)


class BreakerPolicy(_Strict):
    enabled: bool = True
    failures: int = Field(5, ge=1, description="consecutive failures that open the circuit")
    failure_ratio: float = Field(0.5, gt=0, le=1)
    window: float = Field(60.0, gt=0)
    min_requests: int = Field(10, ge=1)
    cooldown: float = Field(30.0, gt=0)


class LimitsConfig(_Strict):
    """Rate limits and a USD budget for a key, a model or alias, or a provider; unset means unlimited."""

    rpm: int | None = Field(None, ge=1, description="requests per minute")
    tpm: int | None = Field(None, ge=1, description="tokens per minute (input estimate + max output, corrected)")
    concurrency: int | None = Field(None, ge=1, description="requests in flight at once")
    budget_usd: float | None = Field(None, gt=0, description="US dollars per period, at catalog prices")
    period: Literal["day", "week", "month", "total"] = "month"
    soft_ratio: float = Field(0.8, gt=0, le=1, description="share of the budget that shows as a soft alert")


class ProviderSettings(_Strict):
    """Overrides for one catalog provider."""

    base_url: str | None = None
    api_key_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeouts: TimeoutsOverride | None = None
    retry: RetryOverride | None = None
    enabled: bool = True
    # The wire format to speak instead of the one the catalog's package implies: `anthropic` for a
    # Messages API at base_url (…/v1/messages), `openai` for a chat-completions one.
    wire: Literal["openai", "anthropic"] | None = None
    limits: LimitsConfig | None = None
    # Values the config loader put into base_url from `${VAR}`s (an account id): credentials to mask.
    _url_secrets: tuple[str, ...] = PrivateAttr(())

    @property
    def url_secrets(self) -> tuple[str, ...]:
        return self._url_secrets
    stream_recovery: Literal["continue", "off"] | None = Field(
        None, description="continue a stream that broke after content from another attempt (default: the "
                          "global stream_recovery)")
    prefill: Literal["assistant", "prefix", "none"] = Field(
        "assistant", description="how this provider continues an answer: a final assistant message "
                                 "(`assistant`), DeepSeek's `prefix: true` on it (`prefix`), or not at all "
                                 "(`none`: replay the request and check the prefix)")
    responses_api: bool | None = Field(
        None, description="the provider serves OpenAI's Responses API at {base_url}/responses, so /v1/responses "
                          "passes through untouched (default: true for @ai-sdk/openai, else false)")


class TargetSpec(_Strict):
    model: str
    weight: float = Field(1.0, gt=0)


class ModelAlias(_Strict):
    """An alias (targets required), or a catalog `provider/model` id that only carries `limits`."""

    targets: tuple[str | TargetSpec, ...] = ()
    fallbacks: tuple[str, ...] = ()
    strategy: Literal["ordered", "weighted", "latency"] = "ordered"
    name: str | None = None
    timeouts: TimeoutsOverride | None = None
    retry: RetryOverride | None = None
    compatible_embeddings: bool = Field(
        False, description="its targets' embedding models make comparable vectors, so /v1/embeddings may fall "
                           "back between them (otherwise only to the same embedding model)")
    limits: LimitsConfig | None = None
    stream_recovery: Literal["continue", "off"] | None = None


class GatewayKey(_Strict):
    name: str = Field(min_length=1)
    key: str | None = Field(None, min_length=1, repr=False)
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    models: tuple[str, ...] | None = None
    limits: LimitsConfig | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> GatewayKey:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError("give exactly one of `key: ${VAR}` or `sha256: <hex digest>`")
        return self


class AdminKey(_Strict):
    """A key for /admin/* only (managed keys, usage): by reference to a variable, or by digest."""

    name: str = Field(min_length=1)
    key: str | None = Field(None, min_length=1, repr=False)
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")

    @model_validator(mode="after")
    def _one_secret(self) -> AdminKey:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError("give exactly one of `key: ${VAR}` or `sha256: <hex digest>`")
        return self


class AuthSettings(_Strict):
    keys: tuple[GatewayKey, ...] = ()
    admin_keys: tuple[AdminKey, ...] = ()
    none: bool = Field(False, description="set by `auth: none`: serve without keys on any address")


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(4000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64)
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_header_bytes: int = Field(32 * 1024, ge=1024, description="request line and headers; over it: 431")
    header_timeout: float = Field(10.0, gt=0, description="seconds to receive a request's head; then 408")
    body_timeout: float = Field(60.0, gt=0, description="seconds to receive a request's body; then 408")
    max_connections: int = Field(2048, ge=1, description="open client connections; beyond it: 503")
    trusted_proxies: tuple[str, ...] = ()
    access_log: bool = False
    drain_delay: float = Field(0.0, ge=0, le=300, description="seconds after SIGTERM before the listener closes")
    drain_timeout: float = Field(30.0, gt=0, le=3600,
                                 description="seconds after SIGTERM until requests still running are ended")
    cors_origins: tuple[Annotated[str, StringConstraints(pattern=r"^(\*|https?://[^/\s]+)$")], ...] = Field(
        (), description="browser origins allowed to call (`https://app.example.com`, or `*`); none by default")
    metrics_listen: str | None = Field(
        None, pattern=r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]/]+):[0-9]{1,5}$",
        description="host:port that serves /metrics alone; when set, the main port does not serve /metrics")

    @model_validator(mode="after")
    def _delay_within_timeout(self) -> ServerSettings:
        if self.drain_delay >= self.drain_timeout:
            raise ValueError(f"drain_delay ({self.drain_delay:g}) must be shorter than drain_timeout "
                             f"({self.drain_timeout:g}): requests need time to finish after the listener closes")
        return self

    @model_validator(mode="after")
    def _metrics_port_differs(self) -> ServerSettings:
        if self.metrics_listen is not None:
            port = int(self.metrics_listen.rpartition(":")[2])
            if not 0 < port <= 65535 or port == self.port:
                raise ValueError(f"metrics_listen port {port} must be a port (1-65535) other than server.port")
        return self

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """(host, port) of `metrics_listen`, brackets of an IPv6 host removed."""
        if self.metrics_listen is None:
            return None
        host, _, port = self.metrics_listen.rpartition(":")
        return host.strip("[]"), int(port)


class UpstreamLimits(_Strict):
    """Bytes an upstream may send back; over a limit the attempt fails as a malformed answer."""

    max_answer_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="a whole (non-stream) answer")
    max_error_bytes: int = Field(1024 * 1024, ge=1024, description="the body of an error status")
    max_event_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="one SSE event of a stream")


class PublishSettings(_Strict):
    id: str = "gateway"
    name: str = "LLM Gateway"
    env: str = Field("GATEWAY_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    doc: str | None = Field(None, description="docs link for users; default: the gateway's /v1/models listing")
    base_url: str | None = None
    include: Literal["aliases", "available", "all"] = "available"
    providers: tuple[str, ...] | None = None


class StateSettings(_Strict):
    """Where managed keys, limit and budget counters and the usage ledger live (shared by every worker)."""

    backend: Literal["sqlite", "redis"] = Field(
        "sqlite", description="where limit and budget counters live: the SQLite file, or Redis shared by replicas")
    redis_url: str | None = Field(
        None, repr=False, description="redis:// or rediss:// (TLS); a password by `${VAR}`; never logged")
    on_failure: Literal["open", "closed"] = Field(
        "open", description="while Redis is down: `open` admits on per-replica shares of each limit, `closed` "
                            "refuses limited requests (503)")
    path: str | None = Field(None, description="the SQLite file; default: gateway-state.db beside the config")
    ledger_retention_days: float = Field(90.0, gt=0, description="ledger rows older than this are pruned")
    flush_interval: float = Field(0.25, gt=0, le=1.0, description="seconds between ledger/settlement batches")
    # PostgreSQL for managed keys and the ledger, shared by replicas; checked in config/validate.py,
    # whose messages never repeat the URL's password (a pydantic error would echo the whole value).
    ledger: str | None = Field(None, description="postgresql://user:${PASSWORD}@host:5432/db: keys and ledger there")
    ledger_queue_rows: int = Field(100_000, ge=1, le=10_000_000,
                                   description="ledger rows kept in memory while PostgreSQL is down; oldest dropped")


class Settings(_Strict):
    server: ServerSettings = Field(default_factory=ServerSettings)
    catalog: tuple[str, ...] = Field(min_length=1)
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    models: dict[str, ModelAlias] = Field(default_factory=dict)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    breaker: BreakerPolicy = Field(default_factory=BreakerPolicy)
    upstream: UpstreamLimits = Field(default_factory=UpstreamLimits)
    stream_recovery: Literal["continue", "off"] = "continue"
    publish: PublishSettings = Field(default_factory=PublishSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    _source: str = PrivateAttr("<memory>")

    @property
    def source(self) -> str:
        """The file these settings came from, for messages."""
        return self._source
