"""The Salesforce REST client: typed writes and reads over an injected aiohttp session.

Layers, inside out: `_send` makes one HTTP request (asks the permit first, counts it, reads
`Sforce-Limit-Info`, turns network failures into `SalesforceUnavailable`); `_authorized` adds the bearer
token and the one refresh-and-resend on 401; `_call` checks the API budget (`budget.ApiBudget`: a reserve of
the daily allocation is kept), then retries transient failures through `retry.call_with_retries`. Every error
response is classified by the pure table in `salesforce/errors.py`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from typing import Any, NoReturn
from urllib.parse import urlsplit

import aiohttp
import structlog

from bridge import sfid
from bridge.config import SalesforceSettings
from bridge.errors import (
    BridgeError,
    ConfigurationError,
    ErrorKind,
    PermanentError,
    SalesforceUnavailable,
)
from bridge.records.inbound import EventAllocation
from bridge.records.outbound import ApiUsage, EventFields, MogliEventFields, RecordError, WriteResult
from bridge.redact import describe
from bridge.salesforce.allocation import decode_event_allocation
from bridge.salesforce.auth import AccessToken, TokenManager, make_ssl_context
from bridge.salesforce.budget import ApiBudget
from bridge.salesforce.errors import SessionExpired, classify_response
from bridge.salesforce.payloads import (
    ObjectDescription,
    chunked,
    decode_delete_results,
    decode_describe,
    decode_limits,
    decode_upsert_results,
    event_record,
    malformed_id_result,
    mogli_event_record,
    soql_select_in,
)
from bridge.salesforce.retry import RetryPolicy, call_with_retries

log = structlog.get_logger(__name__)

BUDGET_RECHECK_SECONDS = SalesforceSettings().api_budget_recheck_seconds  # the default, for tests
RETRY_DEADLINE_SECONDS = 120.0
# Booking ids per SOQL IN-list: the query travels in the URL, and 100 quoted UUIDs (~4.5 KB encoded) stay
# well inside the URL limits of Salesforce and of common proxies (8 KB request lines).
LOOKUP_CHUNK = 100
SESSION_REFRESHES = 2  # token refreshes within one request before its 401 counts as a transient failure
_OBJECTS = "salesforce.objects."


@dataclass(frozen=True, slots=True)
class _Request:
    """One logical REST request, resent unchanged by retries and after a token refresh."""

    method: str
    path: str  # relative to /services/data/vXX.X, or absolute from /services/ (nextRecordsUrl)
    params: Mapping[str, str] | None
    json_body: Any
    headers: Mapping[str, str]
    config_key: str  # the settings a configuration error points at


@dataclass(frozen=True, slots=True)
class _Reply:
    """A decoded HTTP answer (body None when empty)."""

    status: int
    body: Any


def make_session(settings: SalesforceSettings) -> aiohttp.ClientSession:
    """An aiohttp session that trusts `salesforce.ca_bundle` (call inside the running loop)."""
    connector = aiohttp.TCPConnector(ssl=make_ssl_context(settings.ca_bundle))
    return aiohttp.ClientSession(connector=connector)


def _raise(outcome: BridgeError | RecordError) -> NoReturn:
    """Raise a classified outcome; a lone record error (HTTP 300 on a single upsert) is permanent."""
    if isinstance(outcome, RecordError):
        raise PermanentError(f"{outcome.code}: {outcome.message}", code=outcome.code)
    raise outcome


class SalesforceClient:
    """Typed Salesforce REST operations with auth refresh, retries and API-budget awareness."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        tokens: TokenManager,
        settings: SalesforceSettings,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        retry_policy: RetryPolicy | None = None,
        query_batch_size: int | None = None,
        permit: Callable[[], None] | None = None,
    ) -> None:
        self._session = session
        # Several workers (issue 14): raises (NotPermitted, a TransientError the retries leave alone) when
        # this worker may not call the org now; asked right before every HTTP request, retries included.
        self._permit = permit
        self._tokens = tokens
        self._settings = settings
        self._sleep = sleep
        self._clock = clock
        self._policy = retry_policy or RetryPolicy(
            max_attempts=max(settings.max_attempts, 1), deadline=RETRY_DEADLINE_SECONDS
        )
        self._timeout = aiohttp.ClientTimeout(total=settings.request_timeout_seconds)
        self._gate = asyncio.Semaphore(max(settings.max_in_flight, 1))
        self._base = f"/services/data/v{settings.api_version}"
        self._budget = ApiBudget(settings, clock)
        self._calls = 0
        names = settings.objects
        self._configured_fields = frozenset(
            getattr(names, f.name) for f in dataclass_fields(names) if f.name.endswith("_field")
        )
        # Salesforce pages query results by 2,000 (200 at least); a smaller batch bounds memory per page.
        self._query_headers = (
            {"Sforce-Query-Options": f"batchSize={query_batch_size}"} if query_batch_size else {}
        )

    @property
    def usage(self) -> ApiUsage | None:
        """The org's API usage from the last `Sforce-Limit-Info` header seen."""
        return self._budget.usage

    @property
    def calls(self) -> int:
        """HTTP requests this client sent to `/services/data` (token requests not included)."""
        return self._calls

    # ----------------------------------------------------------------------------------- writes

    async def upsert_mogli_events(self, items: Sequence[MogliEventFields]) -> list[WriteResult]:
        """Upsert Mogli Events by link id through sObject Collections; result i belongs to item i."""
        names = self._settings.objects
        path = f"/composite/sobjects/{names.mogli_event_object}/{names.link_external_id_field}"
        key = f"{_OBJECTS}mogli_event_object/{_OBJECTS}link_external_id_field"
        records = [mogli_event_record(item, names) for item in items]
        return await self._upsert(path, [item.link_id for item in items], records, key)

    async def upsert_events(self, items: Sequence[EventFields]) -> list[WriteResult]:
        """Upsert Events by booking id through sObject Collections; result i belongs to item i."""
        names = self._settings.objects
        path = f"/composite/sobjects/Event/{names.booking_external_id_field}"
        key = f"{_OBJECTS}booking_external_id_field"
        records = [event_record(item, names) for item in items]
        return await self._upsert(path, [item.booking_id for item in items], records, key)

    async def delete_records(self, ids: Sequence[str]) -> list[WriteResult]:
        """Delete records by id; an id already deleted or unknown counts as deleted (error None)."""
        results: dict[int, WriteResult] = {}
        sendable = []
        for index, record_id in enumerate(ids):
            if sfid.is_valid(record_id):
                sendable.append((index, record_id))
            else:
                results[index] = malformed_id_result(record_id)
        for chunk in chunked(sendable):
            chunk_ids = [record_id for _, record_id in chunk]
            params = {"ids": ",".join(chunk_ids), "allOrNone": "false"}
            reply = await self._call("DELETE", "/composite/sobjects", params=params)
            for (index, _), result in zip(chunk, decode_delete_results(chunk_ids, reply.body), strict=True):
                results[index] = result
        ordered = [results[index] for index in range(len(ids))]
        self._raise_on_configuration(ordered, f"{_OBJECTS}*")
        log.debug("salesforce.deleted", records=len(ids), failed=sum(not r.ok for r in ordered))
        return ordered

    async def _upsert(
        self, path: str, keys: Sequence[str], records: Sequence[dict[str, Any]], config_key: str
    ) -> list[WriteResult]:
        """Collections upsert in chunks of 200. A failure mid-way loses nothing: upserts are idempotent."""
        results: list[WriteResult] = []
        for chunk_keys, chunk_records in zip(chunked(keys), chunked(records), strict=True):
            body = {"allOrNone": False, "records": list(chunk_records)}
            reply = await self._call("PATCH", path, json_body=body, config_key=config_key)
            results.extend(decode_upsert_results(chunk_keys, reply.body, self._configured_fields))
        self._raise_on_configuration(results, config_key)
        log.debug("salesforce.upserted", path=path, records=len(keys), failed=sum(not r.ok for r in results))
        return results

    def _raise_on_configuration(self, results: Sequence[WriteResult], config_key: str) -> None:
        """A per-record configuration error means no record can succeed: stop and name the key."""
        for result in results:
            error = result.error
            if error is not None and error.kind is ErrorKind.CONFIGURATION:
                key = self._key_for_error(error) or config_key
                raise ConfigurationError(f"{error.code}: {error.message}; check {key}", key.split("/")[0])

    def _key_for_error(self, error: RecordError) -> str | None:
        """The `salesforce.objects.*` setting whose field the error names, if any."""
        names = self._settings.objects
        for setting in (f.name for f in dataclass_fields(names)):
            value = getattr(names, setting)
            if setting.endswith("_field") and (
                value in error.fields or value.lower() in error.message.lower()
            ):
                return f"{_OBJECTS}{setting}"
        return None

    # ------------------------------------------------------------------------------------ reads

    async def find_events_by_booking(self, booking_ids: Sequence[str]) -> dict[str, str]:
        """Booking id -> Event id for the bookings that have an Event in Salesforce."""
        ext = self._settings.objects.booking_external_id_field
        found: dict[str, str] = {}
        for chunk in chunked(booking_ids, LOOKUP_CHUNK):
            soql = soql_select_in(("Id", ext), "Event", ext, chunk)
            for record in await self._query(soql, False, f"{_OBJECTS}booking_external_id_field"):
                found[str(record[ext])] = str(record["Id"])
        return found

    async def query(self, soql: str, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Raw SOQL, following `nextRecordsUrl`; for salesforce/ internals and tests only."""
        return await self._query(soql, include_deleted, f"{_OBJECTS}*")

    async def _query(self, soql: str, include_deleted: bool, config_key: str) -> list[dict[str, Any]]:
        """Every page of one query."""
        path = "/queryAll" if include_deleted else "/query"
        headers = self._query_headers
        reply = await self._call("GET", path, params={"q": soql}, headers=headers, config_key=config_key)
        records: list[dict[str, Any]] = []
        while True:
            page = reply.body if isinstance(reply.body, dict) else {}
            records.extend(r for r in page.get("records") or () if isinstance(r, dict))
            next_url = page.get("nextRecordsUrl")
            if page.get("done", True) or not isinstance(next_url, str):
                return records
            reply = await self._call("GET", next_url, headers=headers, config_key=config_key)

    @property
    def data_path(self) -> str:
        """The data API's path for the configured version (`/services/data/v60.0`), for composite URLs."""
        return self._base

    async def tooling(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
    ) -> Any:
        """One Tooling API request (`/tooling/...`, relative to the data API); for salesforce/ internals."""
        reply = await self._call(
            method, f"/tooling{path}", params=params, json_body=json_body, config_key="sync.channel"
        )
        return reply.body

    async def describe(self, sobject: str) -> ObjectDescription:
        """Name, field names and External ID fields of an sObject."""
        key = self._key_for_object(sobject)
        reply = await self._call("GET", f"/sobjects/{sobject}/describe", config_key=key)
        return decode_describe(reply.body)

    async def limits(self) -> ApiUsage:
        """The daily API allocation from `/limits`; never refused by the budget check (it is the probe)."""
        reply = await self._call("GET", "/limits", check_budget=False)
        usage = decode_limits(reply.body)
        self._budget.note(usage)
        return usage

    async def event_allocation(self) -> EventAllocation:
        """The delivered change-event allocation from `/limits` (never refused by the budget check)."""
        reply = await self._call("GET", "/limits", check_budget=False)
        return decode_event_allocation(reply.body)

    def _key_for_object(self, sobject: str) -> str:
        """The setting that names this object, for configuration errors."""
        if sobject == self._settings.objects.mogli_event_object:
            return f"{_OBJECTS}mogli_event_object"
        return f"{_OBJECTS}*"

    # ------------------------------------------------------------------------------ HTTP layers

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        config_key: str = f"{_OBJECTS}*",
        check_budget: bool = True,
    ) -> _Reply:
        """One logical API call: budget check, then retried attempts of `_authorized`."""
        if check_budget:
            self._budget.check()
        request = _Request(method, path, params, json_body, headers or {}, config_key)

        async def attempt() -> _Reply:
            """One try of the request (with its own refresh-once on 401)."""
            return await self._authorized(request)

        return await call_with_retries(
            attempt,
            self._policy,
            name=f"{method} {path.split('?')[0]}",
            sleep=self._sleep,
            clock=self._clock,
            host=self._host(),
        )

    def _host(self) -> str:
        """The host calls go to: the current token's instance, else the login host (for log lines)."""
        token = self._tokens.token
        return urlsplit(token.instance_url if token else self._settings.login_url).netloc

    async def _authorized(self, request: _Request) -> _Reply:
        """Send with the current token; on 401 refresh and resend, at most `SESSION_REFRESHES` times.

        Two session invalidations close together can refuse the first fresh token too (or the refresh was
        a no-op because another caller had just replaced the token): one more real refresh is forced. A 401
        after that is transient (`SalesforceUnavailable`, retried with backoff), never a configuration
        error: a login that succeeds proves the credentials, and a stop would not be restarted by systemd.
        """
        token = await self._tokens.get()
        reply = await self._send(token, request)
        refreshes = 0
        while reply.status == 401:
            if not isinstance(classify_response(reply.status, reply.body), SessionExpired):
                _raise(classify_response(reply.status, reply.body, config_key=request.config_key))
            if refreshes == SESSION_REFRESHES:
                raise SalesforceUnavailable(
                    f"{request.method} {request.path.split('?')[0]}: Salesforce refused "
                    f"{refreshes + 1} access tokens in a row (401 INVALID_SESSION_ID); retrying"
                )
            refreshes += 1
            log.info("salesforce.session_expired", method=request.method, refresh=refreshes)
            token = await self._tokens.refresh(token)
            reply = await self._send(token, request)
        if 200 <= reply.status < 300:
            return reply
        _raise(classify_response(reply.status, reply.body, config_key=request.config_key))

    async def _send(self, token: AccessToken, request: _Request) -> _Reply:
        """Exactly one HTTP request; network failures and unreadable answers become SalesforceUnavailable."""
        path = request.path
        url = token.instance_url + (path if path.startswith("/services/") else self._base + path)
        headers = {
            **request.headers,
            "Authorization": token.authorization(),
            "Sforce-Call-Options": f"client={self._settings.client_name}",
            "Accept": "application/json",
        }
        async with self._gate:
            if self._permit is not None:
                self._permit()  # after any wait for a slot: the last moment before the request leaves
            self._calls += 1
            try:
                async with self._session.request(
                    request.method,
                    url,
                    params=request.params,
                    json=request.json_body,
                    headers=headers,
                    timeout=self._timeout,
                ) as response:
                    self._budget.note_header(response.headers.get("Sforce-Limit-Info"))
                    status, raw = response.status, await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                name = f"{request.method} {path.split('?')[0]}"
                raise SalesforceUnavailable(f"{name}: {describe(exc)}") from exc
        return _Reply(status, self._decode(status, raw))

    @staticmethod
    def _decode(status: int, raw: bytes) -> Any:
        """JSON body or None; a 2xx body that is not JSON means something in between mangled it."""
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            if 200 <= status < 300:
                raise SalesforceUnavailable(f"HTTP {status} with a non-JSON body") from None
            return None
