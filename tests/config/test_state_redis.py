"""`state.backend: redis`: what a bad Redis config gets at start and at reload (file, key, fix), and that
the URL's password never shows in a message, a repr or a log line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.app import build_app
from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.state.redis_url import describe
from tests.conftest import ECHO_CATALOG

PASSWORD = "s3cret-redis-password-4242"


def config(path: Path, state: str) -> Path:
    path.write_text(f"catalog: [{ECHO_CATALOG}]\nstate:\n{state}")
    return path


@pytest.mark.parametrize(("state", "message"), [
    ("  backend: redis\n",
     "state.redis_url: required with `state.backend: redis`; write it as redis://:${REDIS_PASSWORD}@"),
    ("  backend: redis\n  redis_url: http://${CREDS}@cache:6379\n",
     "state.redis_url: http://cache:6379 has `http://`; only redis:// and rediss:// are supported"),
    ("  backend: redis\n  redis_url: redis://:${REDIS_PASSWORD}@cache:99999\n",
     "state.redis_url: redis://(unreadable URL) not a URL this gateway can read (a bad port?)"),
    ("  backend: redis\n  redis_url: redis://:${REDIS_PASSWORD}@cache:6379/cache\n",
     "has `/cache` where a database number (0-15) goes"),
    ("  redis_url: redis://cache:6379/0\n",
     "state.redis_url: only used with `state.backend: redis` (the backend is `sqlite`)"),
    ("  on_failure: closed\n", "state.on_failure: only applies to `state.backend: redis`"),
    (f"  backend: redis\n  redis_url: redis://:{PASSWORD}@cache:6379/0\n",
     "state.redis_url: a password written in the file is refused"),
])
def test_a_bad_redis_config_is_refused_naming_file_key_and_fix(tmp_path: Path, state: str, message: str) -> None:
    path = config(tmp_path / "gateway.yaml", state)
    environ = {"REDIS_PASSWORD": PASSWORD, "CREDS": f"user:{PASSWORD}"}
    with pytest.raises(ConfigError) as refused:
        load_settings(path, environ)
    assert str(refused.value).startswith(f"{path}: ")
    assert message in str(refused.value)
    assert PASSWORD not in str(refused.value)


def test_the_password_stays_out_of_the_settings_repr_and_of_logs(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    path = config(tmp_path / "gateway.yaml", "  backend: redis\n  redis_url: rediss://:${REDIS_PASSWORD}@cache:6380/2\n")
    settings = load_settings(path, {"REDIS_PASSWORD": PASSWORD})
    assert settings.state.redis_url == f"rediss://:{PASSWORD}@cache:6380/2"
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.state)
    assert describe(settings.state.redis_url) == "rediss://cache:6380/2"
    with caplog.at_level(logging.DEBUG):
        app = build_app(settings, {})
    assert PASSWORD not in caplog.text
    assert PASSWORD not in app.teams.store.counters.connection.shown  # type: ignore[attr-defined]


def test_a_reload_to_a_bad_redis_config_is_refused_and_keeps_the_running_one(tmp_path: Path) -> None:
    path = config(tmp_path / "gateway.yaml", "  backend: sqlite\n")
    app = build_app(load_settings(path, {}), {})
    config(path, "  backend: redis\n  redis_url: memcached://cache:11211\n")
    assert app.reload() is False
    assert app.runtime.settings.state.backend == "sqlite"
