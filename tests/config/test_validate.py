"""Cross-field checks and settings that would do nothing: refused at load, naming file, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.errors import ConfigError

BASE = "catalog: [a.json]\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("timeouts: {first_byte: 700}\n", "timeouts.first_byte: 700s is longer than the total deadline (600s)"),
        ("timeouts: {total: 10, idle: 20}\n", "timeouts.idle: 20s is longer than the total deadline (10s)"),
        ("providers:\n  p: {timeouts: {first_token: 900}}\n", "providers.p.timeouts.first_token: 900s"),
        ("models:\n  a: {targets: [x/y], timeouts: {total: 5, response: 9}}\n", "models.a.timeouts.response: 9s"),
        ("retry: {backoff_initial: 10, backoff_max: 2}\n", "retry.backoff_initial: 10s is more than backoff_max"),
        ("providers:\n  p: {retry: {backoff_initial: 20}}\n", "providers.p.retry.backoff_initial: 20s"),
        ("models:\n  a: {targets: [{model: x/y, weight: 3}, x/z]}\n",
         "models.a.targets: a `weight` only counts with `strategy: weighted`"),
        ("models:\n  a: {targets: [x/y], fallbacks: [x/y]}\n", "models.a: `x/y` is listed twice"),
        ("models:\n  p/m: {limits: {rpm: 5}, fallbacks: [q/n]}\n", "models.p/m.fallbacks: without `targets`"),
        ("auth: {none: true, keys: [{name: k, sha256: '%s'}]}\n" % ("0" * 64), "auth: `none` and `keys` are both"),
    ],
)
def test_refused_with_file_key_and_fix(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(BASE + text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {})
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and expected in message, message


def test_a_total_shorter_than_the_defaults_is_fine(tmp_path: Path) -> None:
    # Only what the file sets is checked: defaults longer than a short total are just capped by it.
    path = tmp_path / "gateway.yaml"
    path.write_text(BASE + "timeouts: {total: 5}\nretry: {backoff_max: 0.1}\n")
    with pytest.raises(ConfigError, match=r"retry\.backoff_initial: 0\.5s is more than backoff_max"):
        load_settings(path, {})
    path.write_text(BASE + "timeouts: {total: 5}\n")
    assert load_settings(path, {}).timeouts.total == 5


def test_a_non_utf8_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_bytes(BASE.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text .* save the file as UTF-8"):
        load_settings(path, {})
