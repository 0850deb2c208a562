"""The presented key's digest (gateway/auth.py): CPython's own SHA-256 where it is built, hashlib's
(OpenSSL) where not; the same digest either way, so keys configured or stored by digest still match."""

from __future__ import annotations

import hashlib
import os

import pytest

from gateway import auth

KEYS = [b"", b"sk-gw-" + b"x" * 40, "clé-ünïcode-🔑".encode(), os.urandom(64), os.urandom(1000)]


@pytest.mark.parametrize("key", KEYS)
def test_the_digest_is_sha256(key: bytes) -> None:
    assert auth.builtin_sha256()(key).digest() == hashlib.sha256(key).digest()


def test_cpython_s_own_sha256_is_used_where_it_is_built() -> None:
    assert auth.builtin_sha256() is not hashlib.sha256  # this CPython has _sha256 (3.11) or _sha2 (3.12+)


def test_a_python_without_its_own_hashes_keeps_hashlib_s(monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(name: str) -> None:
        raise ValueError(f"unsupported hash type {name}")  # what hashlib says when built without them

    monkeypatch.setattr(hashlib, "__get_builtin_constructor", unsupported)
    assert auth.builtin_sha256() is hashlib.sha256
    monkeypatch.delattr(hashlib, "__get_builtin_constructor")
    assert auth.builtin_sha256() is hashlib.sha256
