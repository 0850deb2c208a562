"""`gateway serve | check | publish | keys | usage`: argument parsing and exit codes, no logic of its own."""

from __future__ import annotations

import argparse
import logging
import sys

from gateway import __version__
from gateway.errors import ConfigError

DEFAULT_CONFIG = "config/gateway.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description="An OpenAI-compatible LLM gateway.")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    serve.add_argument("--host", help="address to bind (default: server.host from the config)")
    serve.add_argument("--port", type=int, help="port to bind (default: server.port from the config)")
    serve.add_argument("--workers", type=int, help="worker processes (default: server.workers)")

    check = commands.add_parser("check", help="validate config and catalog; show what is unavailable and why")
    check.add_argument("--config", default=DEFAULT_CONFIG)

    publish = commands.add_parser("publish", help="print the provider JSON for OpenWork (or opencode)")
    publish.add_argument("--config", default=DEFAULT_CONFIG)
    publish.add_argument("--base-url", help="the gateway's public URL (default: publish.base_url, else host:port)")
    publish.add_argument("--format", choices=("openwork", "opencode"), default="openwork")

    from gateway.teams import commands as team_commands

    team_commands.add_parsers(commands, DEFAULT_CONFIG)

    args = parser.parse_args(argv)
    configure_logging()
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "publish":
            return _publish(args)
        if args.command in ("keys", "usage"):
            return team_commands.run(args)
        return _check(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def configure_logging() -> None:
    """Log lines to stderr; every worker process calls this too."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def _serve(args: argparse.Namespace) -> int:
    from gateway.config import load_settings
    from gateway.server import serve

    settings = load_settings(args.config)
    server = settings.server
    return serve(settings, host=args.host or server.host,
                 port=args.port if args.port is not None else server.port, workers=args.workers or server.workers)


def _check(args: argparse.Namespace) -> int:
    from gateway.check import report

    text, ok = report(args.config)
    print(text)
    return 0 if ok else 1


def _publish(args: argparse.Namespace) -> int:
    import json

    from gateway.catalog import load_catalog
    from gateway.config import load_settings
    from gateway.failover.health import Health
    from gateway.publish import opencode_json, provider_json
    from gateway.runtime import Runtime
    from gateway.upstream.transport import Transport

    settings = load_settings(args.config)
    runtime = Runtime.build(settings, load_catalog(settings.catalog), Transport(), Health(settings.breaker))
    base_url = args.base_url or settings.publish.base_url or f"http://{settings.server.host}:{settings.server.port}"
    build = opencode_json if args.format == "opencode" else provider_json
    print(json.dumps(build(settings.publish, runtime.router, base_url), indent=2))
    return 0
