"""Per-request REST context (version, acting user, change origin) and the JSON wire helpers."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from bridge import sfid
from bridge.emulator.contracts import ApiError, DmlContext

JSON_TYPE = "application/json"
_MAX_BATCH, _MIN_BATCH = 2000, 200


@dataclass(frozen=True, slots=True)
class RestContext:
    """Who is calling which API version, and how the call is labelled in change events."""

    version: str  # "60.0"
    user_id: str
    client: str | None  # from `Sforce-Call-Options: client=X`
    batch_size: int = _MAX_BATCH

    @property
    def dml(self) -> DmlContext:
        """The DmlContext writes made in this call carry."""
        origin = f"com/salesforce/api/rest/{self.version}"
        if self.client:
            origin += f";client={self.client}"
        return DmlContext(user_id=self.user_id, change_origin=origin)

    @property
    def base(self) -> str:
        """`/services/data/vXX.X`."""
        return f"/services/data/v{self.version}"

    def with_version(self, version: str) -> RestContext:
        """The same caller on another API version (composite subrequests name their own)."""
        return replace(self, version=version)


REST_CTX = web.RequestKey("rest_ctx", RestContext)


def call_options(header: str | None) -> dict[str, str]:
    """Parse `Sforce-Call-Options` / `Sforce-Query-Options` (`,` or `;` separated `key=value`)."""
    options: dict[str, str] = {}
    for part in (header or "").replace(";", ",").split(","):
        key, sep, value = part.partition("=")
        if sep:
            options[key.strip()] = value.strip()
    return options


def batch_size(header: str | None) -> int:
    """The query batch size from `Sforce-Query-Options: batchSize=N`, clamped to 200..2000."""
    raw = call_options(header).get("batchSize")
    try:
        wanted = int(raw) if raw else _MAX_BATCH
    except ValueError:
        wanted = _MAX_BATCH
    return max(_MIN_BATCH, min(_MAX_BATCH, wanted))


def acting_user(header: str | None, token_user: str) -> str:
    """The `X-Emulator-User` id when given (normalised to 18 characters), else the token's user."""
    if not header:
        return token_user
    try:
        return sfid.to18(header)
    except ValueError as exc:
        raise ApiError(400, "MALFORMED_ID", f"X-Emulator-User: invalid id: {header}") from exc


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response as Salesforce sends it (`application/json;charset=UTF-8`)."""
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type=JSON_TYPE,
        charset="UTF-8",
        headers=headers,
    )


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    """A REST error array response."""
    return json_response(error.body(), status=error.status, headers=headers)


def session_invalid() -> web.Response:
    """401 for a missing, unknown, expired or revoked token (no `fields` key, like Salesforce)."""
    body = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    return json_response(body, status=401, headers={"WWW-Authenticate": "Token"})


async def read_json(request: web.Request) -> Any:
    """The JSON body of a request; 400 JSON_PARSER_ERROR when it is not JSON."""
    raw = await request.read()
    if not raw:
        raise ApiError(400, "JSON_PARSER_ERROR", "The request body is empty")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "JSON_PARSER_ERROR", f"Unexpected character in request body: {exc}") from exc


def require_object(value: Any, what: str = "request body") -> dict[str, Any]:
    """`value` when it is a JSON object, else 400 JSON_PARSER_ERROR."""
    if not isinstance(value, dict):
        raise ApiError(400, "JSON_PARSER_ERROR", f"Cannot deserialize the {what}: expected a JSON object")
    return value
