"""Where and how to call each provider: base URL, outbound headers, and why it may be unusable.

Outbound headers are built here once per provider from the catalog's `env` variables and the
config's extra headers. Nothing from the client's request is ever copied into them, so the client's
own Authorization and hop-by-hop headers cannot reach an upstream.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.catalog.schema import Provider
from gateway.catalog.wire import ANTHROPIC, ANTHROPIC_VERSION, WireFormat, default_base_url, wire_format
from gateway.config.schema import ProviderSettings
from gateway.upstream.secrets import NO_SECRETS, Secrets

OPENAI_PACKAGE = "@ai-sdk/openai"  # OpenAI's own API, the one that serves /responses
_URL_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    provider_id: str
    wire: WireFormat | None
    base_url: str
    headers: Mapping[str, str] = field(repr=False)
    unavailable: str | None = None
    missing_env: tuple[str, ...] = ()
    secrets: Secrets = field(default=NO_SECRETS, repr=False)
    responses_api: bool = False  # serves OpenAI's Responses API itself: /v1/responses passes through

    @property
    def chat_url(self) -> str:
        return f"{self.base_url}/chat/completions"

    @property
    def available(self) -> bool:
        return self.unavailable is None

    def scrub(self, text: str) -> str:
        """Text from an upstream (an error message) with this provider's credentials masked."""
        return self.secrets.mask_text(text)


def build_endpoint(provider: Provider, override: ProviderSettings | None, environ: Mapping[str, str]) -> Endpoint:
    override = override or ProviderSettings()
    wire = override.wire or wire_format(provider.npm)
    if wire is None:
        return _unusable(provider, f"its package {provider.npm} speaks a wire format the gateway does not")
    if not override.enabled:
        return _unusable(provider, f"disabled in the config (providers.{provider.id}.enabled)")
    base = override.base_url or provider.api or default_base_url(provider.npm)
    if wire == "echo":
        return Endpoint(provider.id, wire, "echo://", {})
    if not base:
        return _unusable(provider, f"no base URL: set providers.{provider.id}.base_url")

    url_vars = _URL_VAR.findall(base)
    missing = [name for name in url_vars if not environ.get(name)]
    key_vars = [override.api_key_env] if override.api_key_env else [v for v in provider.env if v not in url_vars]
    key = next((environ[v] for v in key_vars if environ.get(v)), None)
    if key is None and key_vars:
        missing.append(" or ".join(key_vars))
    if missing:
        return _unusable(provider, f"credentials not set: {', '.join(missing)}", missing=tuple(missing), wire=wire)

    base = _URL_VAR.sub(lambda m: environ[m.group(1)], base).rstrip("/")
    headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
    if wire == ANTHROPIC:  # the API version the gateway speaks unless the client names its own
        headers["anthropic-version"] = ANTHROPIC_VERSION
    if key is not None:
        if wire == ANTHROPIC:
            headers["x-api-key"] = key
        else:
            headers["Authorization"] = f"Bearer {key}"
    headers.update(override.headers)
    # Everything that came from the environment or config to reach this upstream is a credential:
    # the key, extra header values, and the values put into the URL (an account id in a path).
    secrets = Secrets((key, *override.headers.values(), *(environ[name] for name in url_vars),
                       *override.url_secrets))
    responses_api = override.responses_api if override.responses_api is not None else provider.npm == OPENAI_PACKAGE
    return Endpoint(provider.id, wire, base, headers, secrets=secrets, responses_api=responses_api)


def _unusable(provider: Provider, reason: str, missing: tuple[str, ...] = (),
              wire: WireFormat | None = None) -> Endpoint:
    return Endpoint(provider.id, wire or wire_format(provider.npm), "", {}, unavailable=reason, missing_env=missing)
