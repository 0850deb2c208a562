"""The retry/fallback table."""

from __future__ import annotations

import email.utils

import pytest

from gateway.errors import StreamCut, UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout
from gateway.failover.classify import Action, classify
from gateway.upstream.formats.openai_chat import parse_error


def status(code: int, error_code: str | None = None, message: str = "x") -> Action:
    body = b'{"error": {"message": "%s", "code": %s}}' % (
        message.encode(), b'"%s"' % error_code.encode() if error_code else b"null")
    return classify(parse_error(code, {}, body, "p"))


@pytest.mark.parametrize("code", [408, 409, 429, 500, 502, 503, 504, 529])
def test_retryable_statuses(code: int) -> None:
    assert status(code) is Action.RETRY


@pytest.mark.parametrize("code", [401, 403, 404])
def test_misconfigured_or_retired_targets_move_on(code: int) -> None:
    assert status(code) is Action.NEXT


def test_context_length_moves_on_and_other_4xx_fail() -> None:
    assert status(400, "context_length_exceeded") is Action.NEXT
    assert status(400, None, "This model's maximum context length is 8192 tokens") is Action.NEXT
    assert status(400, "content_policy_violation") is Action.FAIL
    assert status(400) is Action.FAIL
    assert status(422) is Action.FAIL


def test_transport_failures() -> None:
    assert classify(UpstreamConnectError("refused")) is Action.RETRY
    assert classify(StreamCut("reset")) is Action.RETRY
    assert classify(UpstreamTimeout("silent", phase="first_byte")) is Action.NEXT
    assert classify(UpstreamTimeout("slow", phase="first_token")) is Action.NEXT
    assert classify(UpstreamProtocolError("garbage")) is Action.NEXT


def test_retry_after_forms() -> None:
    from gateway.upstream.formats.openai_chat import parse_retry_after

    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    # An HTTP date counts from the injected clock: 90 s ahead of it, and a date already past is 0.
    now = email.utils.parsedate_to_datetime("Wed, 21 Oct 2015 07:26:30 GMT").timestamp()
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=now) == 90.0
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:26:00 GMT"}, now=now) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None
