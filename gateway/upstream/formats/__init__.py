"""Wire formats: pure functions that turn a client body into an upstream request and read answers back.

A `Dialect` is one upstream protocol the gateway can speak on an attempt (chat completions,
embeddings, the Responses API, ...): where it is posted, how the body is prepared, what a whole
answer must look like, and which stream event is the first one a client may see. A `Leg` is the
dialect and body chosen for one target: an inbound protocol passes its own body through to a
target that speaks it natively, and sends a chat translation to the others.

A dialect whose wire differs from chat (native Anthropic) translates its answers in `view`, so the
executor and relay see chat completions whatever the wire; every other dialect's view is the
response itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gateway.upstream.response import UpstreamResponse

# The one protocol of an upstream response (gateway/upstream/response.py), under the name dialects use.
UpstreamAnswer = UpstreamResponse

if TYPE_CHECKING:
    from gateway.errors import UpstreamStatusError
    from gateway.routing import Target


class Dialect(Protocol):
    name: str
    path: str

    def build_request(self, body: Mapping[str, Any], upstream_model: str, *, stream: bool) -> dict[str, Any]: ...

    def parse_error(self, status: int, headers: Mapping[str, str], raw: bytes,
                    provider_id: str) -> UpstreamStatusError: ...

    def check_answer(self, parsed: Any, headers: Mapping[str, str], raw: bytes, provider_id: str) -> None:
        """Raise an UpstreamError unless `parsed` is a whole answer of this dialect."""

    def opens_answer(self, event: bytes, provider_id: str) -> bool:
        """Is this stream event the first one a client may see? Raise for an error or a malformed event."""

    def view(self, response: UpstreamAnswer) -> UpstreamAnswer:
        """The (successful) response as the rest of the gateway reads it: the response itself, or a translation."""


@dataclass(frozen=True, slots=True)
class Leg:
    """What one target is sent: the dialect it is spoken to in, and the body before `model` is set."""

    dialect: Dialect
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)  # per request, over the endpoint's own


@dataclass(frozen=True, slots=True)
class Skip:
    """This target cannot take this request (e.g. a different embedding model): skipped, with the reason."""

    reason: str


LegChooser = Callable[["Target"], Leg | Skip]
