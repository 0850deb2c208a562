"""`gateway keys …` and `gateway usage …`: flags to validated inputs, results to text, errors to exit codes.

They open the state store the config names (the same file a running gateway uses), so a key made
here is live on every worker within a second, without a restart or a reload.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from pydantic import ValidationError

from gateway.config import load_settings
from gateway.state.open import open_store
from gateway.state.store import StateError, StateStore, UsageQuery
from gateway.teams import manage
from gateway.teams.keys import KeyChanges, KeySpec

_LIMIT_FLAGS = (("models", "--models"), ("rpm", "--rpm"), ("tpm", "--tpm"), ("concurrency", "--concurrency"),
                ("budget_usd", "--budget"), ("period", "--period"), ("soft_ratio", "--soft-ratio"),
                ("expires", "--expires"), ("metadata", "--metadata"))
_LIST_COLUMNS = ("name", "prefix", "state", "models", "rpm", "tpm", "concurrency", "budget_usd", "period", "expires")
_USAGE_COLUMNS = ("requests", "errors", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens",
                  "cost_usd")


def add_parsers(commands: Any, default_config: str) -> None:
    keys = commands.add_parser("keys", help="create, list, show, update and revoke managed gateway keys")
    actions = keys.add_subparsers(dest="action", required=True)
    for action in ("create", "update"):
        parser = actions.add_parser(action, help=f"{action} a managed key" + (" (prints it once)" if action ==
                                                                                "create" else ""))
        parser.add_argument("name")
        parser.add_argument("--models", help="comma-separated ids or globs the key may use (`none`: all)")
        parser.add_argument("--rpm", help="requests per minute")
        parser.add_argument("--tpm", help="tokens per minute")
        parser.add_argument("--concurrency", help="requests in flight at once")
        parser.add_argument("--budget", help="US dollars per --period")
        parser.add_argument("--period", help="day | week | month | total (default month)")
        parser.add_argument("--soft-ratio", help="share of the budget that raises the soft alert (default 0.8)")
        parser.add_argument("--expires", help="ISO date or date-time (UTC unless it says)")
        parser.add_argument("--metadata", action="append", metavar="K=V", help="a label to keep with the key")
        parser.add_argument("--config", default=default_config)
        if action == "update":
            parser.epilog = "Give `none` to clear a limit."
    for action in ("list", "show", "revoke"):
        parser = actions.add_parser(action, help=f"{action} managed keys")
        if action != "list":
            parser.add_argument("name")
        parser.add_argument("--config", default=default_config)
        parser.add_argument("--format", choices=("table", "json", "csv") if action == "list" else ("json",),
                            default="table" if action == "list" else "json")
    usage = commands.add_parser("usage", help="totals from the usage ledger")
    usage.add_argument("--since", default="7d", help="7d, 24h, 30m or an ISO date (default 7d)")
    usage.add_argument("--until", help="the same forms (default now)")
    usage.add_argument("--by", choices=("key", "model", "provider", "day", "status"), default="key")
    usage.add_argument("--key", help="only this key's requests")
    usage.add_argument("--format", choices=("table", "csv", "json"), default="table")
    usage.add_argument("--config", default=default_config)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    try:
        return asyncio.run(_run(args, settings))
    except (StateError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, settings: Any) -> int:
    store = open_store(settings.state)
    try:
        if args.command == "usage":
            return await _usage(args, store)
        return await _keys(args, store, {k.name for k in settings.auth.keys}, settings)
    finally:
        await store.close()


async def _keys(args: argparse.Namespace, store: StateStore, config_names: set[str], settings: Any) -> int:
    now = time.time()
    if args.action == "create":
        given = _given(args)
        spec = _validate(KeySpec, {"name": args.name, **given})
        if spec is None:
            return 2
        value, record = await manage.create_key(store, spec, config_names, now)
        print(value)
        print(f"created `{record.name}`; this is the only time the key is shown: store it now", file=sys.stderr)
        return 0
    if args.action == "update":
        changes = _validate(KeyChanges, _given(args))
        if changes is None:
            return 2
        _print_json(manage.describe(await manage.update_key(store, args.name, changes, now), now))
        return 0
    if args.action == "revoke":
        _print_json(manage.describe(await manage.revoke_key(store, args.name, now), now))
        return 0
    if args.action == "show":
        from gateway.catalog import load_catalog
        from gateway.failover.health import Health
        from gateway.runtime import Runtime
        from gateway.upstream.transport import Transport

        catalog = load_catalog(settings.catalog)
        router = Runtime.build(settings, catalog, Transport(), Health(settings.breaker)).router
        _print_json(await manage.show(store, args.name, now, router))
        return 0
    rows = [manage.describe(r, now) for r in await store.keys.list_keys()]
    if args.format == "json":
        _print_json(rows)
    else:
        print(manage.render(rows, _LIST_COLUMNS, args.format), end="")
    return 0


async def _usage(args: argparse.Namespace, store: StateStore) -> int:
    now = time.time()
    since = manage.time_bound(args.since, now, now - 7 * 86400)
    until = manage.time_bound(args.until, now, now + 1)
    rows = await manage.usage(store, UsageQuery(since, until, args.by, args.key))
    if args.format == "json":
        _print_json(rows)
    else:
        print(manage.render(rows, (args.by, *_USAGE_COLUMNS), args.format), end="")
    return 0


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that were given, as the admin API would receive them (`none` clears)."""
    given: dict[str, Any] = {}
    for field, _ in _LIMIT_FLAGS:
        value = getattr(args, "budget" if field == "budget_usd" else field, None)
        if value is None:
            continue
        if field == "metadata":
            pairs = [item.partition("=") for item in value]
            bad = [k for k, sep, _ in pairs if not sep]
            if bad:
                raise ValueError(f"--metadata {bad[0]}: write it as key=value")
            given[field] = {k: v for k, _, v in pairs}
        elif value == "none":
            given[field] = None
        elif field == "models":
            given[field] = [m.strip() for m in value.split(",") if m.strip()]
        else:
            given[field] = value
    return given


def _validate(model: type[KeySpec] | type[KeyChanges], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        flags = dict(_LIMIT_FLAGS)
        for error in exc.errors()[:5]:
            field = str(error["loc"][0]) if error["loc"] else ""
            flag = flags.get(field, field)
            print(f"error: {flag}: {error['msg']} (got {error.get('input')!r:.60})", file=sys.stderr)
        return None
