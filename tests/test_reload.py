"""Config reload: a valid file replaces the running config, a refused one leaves it in place."""

from __future__ import annotations

from pathlib import Path

from gateway.app import build_app
from gateway.config import load_settings
from tests.conftest import ECHO_CATALOG


def test_reload_swaps_a_valid_config_and_keeps_the_old_on_error(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"catalog: [{ECHO_CATALOG}]\nmodels:\n  first:\n    targets: [echo/echo]\n")
    app = build_app(load_settings(path, {}), {})
    assert "first" in app.runtime.router.routes

    path.write_text(f"catalog: [{ECHO_CATALOG}]\nmodels:\n  second:\n    targets: [echo/echo]\n")
    assert app.reload() is True
    assert "second" in app.runtime.router.routes and "first" not in app.runtime.router.routes

    path.write_text(f"catalog: [{ECHO_CATALOG}]\nmodels:\n  third:\n    targets: [nowhere/model]\n")
    assert app.reload() is False
    assert "second" in app.runtime.router.routes, "a refused config must not replace the running one"
