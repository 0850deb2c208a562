"""/admin/keys and /admin/usage: managed keys and the usage ledger over HTTP, for admin keys only.

An ordinary gateway key gets 403, no key or an unknown one 401. Bodies are small JSON objects
(at most 64 KiB) validated strictly: an unknown field, a negative limit or a taken name is a 4xx
in OpenAI's error shape, never a 500.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.request_body import read_bounded
from gateway.errors import BadRequest, ClientError, GatewayError, NotFound
from gateway.runtime import Runtime
from gateway.state.store import KeyExists, KeyMissing, StateError, StateUnavailable, UsageQuery
from gateway.teams import manage
from gateway.teams.keys import KeyChanges, KeySpec
from gateway.teams.service import Teams

_MAX_BODY = 64 * 1024
_GROUPS = ("key", "model", "provider", "day", "status")


class Conflict(ClientError):
    status = 409
    code = "conflict"


class StoreUnavailable(GatewayError):
    """The shared state store (PostgreSQL) cannot be reached now."""

    status = 503
    type = "service_unavailable"
    code = "state_unavailable"


def routes() -> list[Route]:
    return [
        Route("/admin/keys", list_or_create, methods=["GET", "POST"]),
        Route("/admin/keys/{name}", one_key, methods=["GET", "PATCH", "DELETE"]),
        Route("/admin/usage", usage, methods=["GET"]),
    ]


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _authorised(request: Request) -> tuple[Runtime, Teams]:
    runtime: Runtime = request.app.state.runtime()
    runtime.auth.authenticate_admin(request.headers)
    if runtime.teams is None:
        raise GatewayError("The state store is not open.")
    return runtime, runtime.teams


async def _body(request: Request) -> dict[str, Any]:
    raw = await read_bounded(request, _MAX_BODY, f"Admin request bodies are at most {_MAX_BODY} bytes.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body


def _validated(model: type[KeySpec] | type[KeyChanges], body: dict[str, Any]) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or None
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(n for n in model.model_fields)
            raise BadRequest(f"Unknown field `{where}`; allowed: {allowed}.", param=where) from None
        raise BadRequest(f"`{where}`: {error['msg']}.", param=where) from None


def _state_error(error: StateError) -> GatewayError:
    if isinstance(error, StateUnavailable):
        # Nothing was read or changed; the message names the server, never its credentials.
        return StoreUnavailable(f"{error}; try again when it is back.", headers={"retry-after": "5"})
    if isinstance(error, KeyExists):
        return Conflict(str(error).capitalize() + ".", param="name")
    if isinstance(error, KeyMissing):
        return NotFound(str(error).capitalize() + ".")
    return Conflict(str(error).capitalize() + ".")


async def list_or_create(request: Request) -> Response:
    runtime, teams = _authorised(request)
    now = teams.clock()
    if request.method == "GET":
        try:
            records = await teams.store.keys.list_keys()
        except StateError as error:
            raise _state_error(error) from None
        return _json({"object": "list", "data": [manage.describe(r, now) for r in records]})
    spec = _validated(KeySpec, await _body(request))
    try:
        value, record = await manage.create_key(teams.store, spec, {k.name for k in runtime.settings.auth.keys}, now)
    except StateError as error:
        raise _state_error(error) from None
    await teams.keys.refresh()
    return _json({**manage.describe(record, now), "key": value}, status=201)


async def one_key(request: Request) -> Response:
    runtime, teams = _authorised(request)
    name = request.path_params["name"]
    now = teams.clock()
    try:
        if request.method == "GET":
            return _json(await manage.show(teams.store, name, now, runtime.router))
        if request.method == "DELETE":
            record = await manage.revoke_key(teams.store, name, now)
        else:
            record = await manage.update_key(teams.store, name, _validated(KeyChanges, await _body(request)), now)
    except StateError as error:
        raise _state_error(error) from None
    await teams.keys.refresh()
    return _json(manage.describe(record, now))


async def usage(request: Request) -> Response:
    _, teams = _authorised(request)
    params = request.query_params
    unknown = sorted(set(params) - {"since", "until", "by", "key"})
    if unknown:
        raise BadRequest(f"Unknown query parameter `{unknown[0]}`; allowed: since, until, by, key.", param=unknown[0])
    by = params.get("by", "key")
    if by not in _GROUPS:
        raise BadRequest(f"`by` must be one of {', '.join(_GROUPS)}.", param="by")
    now = teams.clock()
    try:
        since = manage.time_bound(params.get("since"), now, now - 7 * 86400)
        until = manage.time_bound(params.get("until"), now, now + 1)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    try:
        rows = await manage.usage(teams.store, UsageQuery(since, until, by, params.get("key")))  # type: ignore[arg-type]
    except StateError as error:
        raise _state_error(error) from None
    return _json({"object": "list", "by": by, "since": manage._time(since), "until": manage._time(until),
                  "data": rows})
