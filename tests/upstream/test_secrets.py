"""Secrets.mask_bytes: every form of a provider's credential masked in bytes passed through."""

from __future__ import annotations

from gateway.upstream.secrets import Secrets


def test_raw_and_json_escaped_forms_are_masked_longest_first() -> None:
    secrets = Secrets(["sk-abc/def\"ghi", "sk-abc/def", "short"])
    data = b'key sk-abc/def"ghi and "sk-abc/def\\"ghi" and sk-abc/def, short'
    assert secrets.mask_bytes(data) == b'key *** and "***" and ***, short'


def test_bytes_without_a_secret_are_given_back_as_they_are() -> None:
    data = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
    assert Secrets(["sk-abcdefgh"]).mask_bytes(data) is data, "no copy of a read that holds no secret"
