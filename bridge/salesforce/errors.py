"""One pure table from Salesforce error responses to the bridge's error kinds.

Everything that decides "retry, record on the row, or stop and name a key" lives here and does no I/O:

- `CODE_RULES`: REST `errorCode` / collections `statusCode` -> ErrorKind, separately for an error that
  fails the whole call and for an error on one record of a collections call (the same code can mean "the
  configuration is wrong" for a whole call and "this one record is bad" for a single record).
- `OAUTH_KEYS`: OAuth `error` -> the settings keys an operator must fix.
- `classify_response(...)`: a non-2xx REST response -> the exception to raise (or a RecordError for an
  upsert that matched several records, HTTP 300).
- `classify_record_errors(...)`: the `errors` array of one collections result -> RecordError.
- `classify_oauth_error(...)`: a failed token request -> ConfigurationError or SalesforceUnavailable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from bridge.errors import (
    ApiLimitExhausted,
    BridgeError,
    ConfigurationError,
    ErrorKind,
    PermanentError,
    SalesforceUnavailable,
    TransientError,
)
from bridge.records.outbound import RecordError

T = ErrorKind.TRANSIENT
P = ErrorKind.PERMANENT
C = ErrorKind.CONFIGURATION

# Salesforce sends no Retry-After and the daily allocation is a rolling 24-hour window, so when it is
# used up nobody knows when calls free up again. Five minutes is long enough not to burn calls probing
# and short enough to resume soon after other integrations calm down.
LIMIT_RETRY_AFTER_SECONDS: Final = 300.0

INVALID_SESSION: Final = "INVALID_SESSION_ID"
REQUEST_LIMIT: Final = "REQUEST_LIMIT_EXCEEDED"
DUPLICATE_EXTERNAL_ID: Final = "DUPLICATE_EXTERNAL_ID"
# Deleting a record that is already gone is what we wanted: these count as success for deletes.
ALREADY_DELETED_CODES: Final = frozenset({"ENTITY_IS_DELETED", "NOT_FOUND"})
# Codes that mean "this field does not exist or is not accessible"; see record_kind.
_FIELD_CODES: Final = frozenset({"INVALID_FIELD", "NOT_FOUND", "INVALID_FIELD_FOR_INSERT_UPDATE"})
_EXTERNAL_ID_FIELD_MISSING = "external id field does not exist"
# The 401 variant that re-authentication never fixes (session policy), reference §1.
_REST_SESSION_UNUSABLE = "not valid for use with the rest api"


@dataclass(frozen=True, slots=True)
class CodeRule:
    """How one error code is handled when it fails a whole call and when it fails one record."""

    call: ErrorKind
    record: ErrorKind


CODE_RULES: Final[Mapping[str, CodeRule]] = {
    # Transient: nothing is wrong with the data; the same request succeeds later.
    "UNABLE_TO_LOCK_ROW": CodeRule(T, T),
    "SERVER_UNAVAILABLE": CodeRule(T, T),
    "UNKNOWN_EXCEPTION": CodeRule(T, T),
    "REQUEST_RUNNING_TOO_LONG": CodeRule(T, T),
    "QUERY_TIMEOUT": CodeRule(T, T),
    "ALL_OR_NONE_OPERATION_ROLLED_BACK": CodeRule(T, T),
    "PROCESSING_HALTED": CodeRule(T, T),
    REQUEST_LIMIT: CodeRule(T, T),
    INVALID_SESSION: CodeRule(T, T),
    # Permanent: this record (or request) cannot be written as it is.
    "FIELD_INTEGRITY_EXCEPTION": CodeRule(P, P),
    "FIELD_CUSTOM_VALIDATION_EXCEPTION": CodeRule(P, P),
    "INVALID_CROSS_REFERENCE_KEY": CodeRule(P, P),
    "STRING_TOO_LONG": CodeRule(P, P),
    "REQUIRED_FIELD_MISSING": CodeRule(P, P),
    "MALFORMED_ID": CodeRule(P, P),
    "DUPLICATE_VALUE": CodeRule(P, P),
    DUPLICATE_EXTERNAL_ID: CodeRule(P, P),
    "ENTITY_IS_DELETED": CodeRule(P, P),
    "INACTIVE_OWNER_OR_USER": CodeRule(P, P),
    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST": CodeRule(P, P),
    "INVALID_ID_FIELD": CodeRule(P, P),
    "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY": CodeRule(P, P),
    "MALFORMED_QUERY": CodeRule(P, P),
    "INVALID_QUERY_LOCATOR": CodeRule(P, P),
    "EXCEEDED_ID_LIMIT": CodeRule(P, P),
    "JSON_PARSER_ERROR": CodeRule(P, P),
    # Configuration for a whole call (the object, the External ID field or the user's rights are wrong),
    # but on one record of a collection it concerns that record only (a field value, one record's sharing).
    "INVALID_FIELD": CodeRule(C, P),
    "NOT_FOUND": CodeRule(C, P),
    "INSUFFICIENT_ACCESS_OR_READONLY": CodeRule(C, P),
    "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY": CodeRule(C, P),
    # Configuration wherever it shows up: no record will ever succeed until an operator acts.
    "INVALID_TYPE": CodeRule(C, C),
    "INVALID_FIELD_FOR_INSERT_UPDATE": CodeRule(C, C),
    "API_DISABLED_FOR_ORG": CodeRule(C, C),
    "API_CURRENTLY_DISABLED": CodeRule(C, C),
    "INVALID_AUTH_HEADER": CodeRule(C, C),
    "STORAGE_LIMIT_EXCEEDED": CodeRule(C, C),
    "LICENSE_LIMIT_EXCEEDED": CodeRule(C, C),
}

# OAuth `error` values -> the settings keys that must be fixed, per auth flow where it differs.
OAUTH_KEYS: Final[Mapping[str, Mapping[str, str]]] = {
    "invalid_grant": {
        "password": "salesforce.username/salesforce.password",
        "jwt": "salesforce.username/salesforce.private_key_file/salesforce.client_id",
        "refresh_token": "salesforce.refresh_token",
        "client_credentials": "salesforce.login_url/salesforce.client_id/salesforce.client_secret",
    },
    "invalid_client": {"*": "salesforce.client_id/salesforce.client_secret"},
    "invalid_client_id": {"*": "salesforce.client_id"},
    "invalid_client_credentials": {"*": "salesforce.client_id/salesforce.client_secret"},
    "unsupported_grant_type": {"*": "salesforce.auth"},
    "invalid_request": {"*": "salesforce.auth"},
    "inactive_user": {"*": "salesforce.username"},
    "inactive_org": {"*": "salesforce.login_url"},
}


class SessionExpired(TransientError):
    """HTTP 401 INVALID_SESSION_ID: the access token must be refreshed (handled inside the client)."""


def call_kind(code: str, status: int) -> ErrorKind:
    """The kind of an error code that failed a whole call; unknown codes are judged by HTTP status."""
    rule = CODE_RULES.get(code)
    if rule is not None:
        return rule.call
    if status >= 500:
        return T
    if status in (401, 403):
        return C
    return P


def record_kind(
    code: str,
    *,
    message: str = "",
    fields: Sequence[str] = (),
    configured_fields: frozenset[str] = frozenset(),
) -> ErrorKind:
    """The kind of an error code on one record of a collections call; unknown codes are permanent.

    A missing-field error is about the org, not the record, when it names one of the fields the
    settings configure (or the External ID field of the call): every record would fail the same way.
    """
    rule = CODE_RULES.get(code)
    kind = rule.record if rule is not None else P
    if code in _FIELD_CODES and names_configured_field(message, fields, configured_fields):
        return C
    return kind


def names_configured_field(message: str, fields: Sequence[str], configured_fields: frozenset[str]) -> bool:
    """True when an error is about the External ID field or one of the configured fields."""
    lowered = message.lower()
    if _EXTERNAL_ID_FIELD_MISSING in lowered:
        return True
    return any(f in configured_fields for f in fields) or any(n.lower() in lowered for n in configured_fields)


def first_error(body: Any) -> tuple[str, str, tuple[str, ...]]:
    """(errorCode, message, fields) of a REST error body; ("", "", ()) when it has none."""
    entries = body if isinstance(body, list) else [body] if isinstance(body, dict) else []
    for entry in entries:
        if isinstance(entry, dict):
            code = str(entry.get("errorCode") or entry.get("statusCode") or "")
            message = str(entry.get("message") or "")
            fields = entry.get("fields") or ()
            return code, message, tuple(str(f) for f in fields) if isinstance(fields, list) else ()
    return "", "", ()


def classify_record_errors(
    errors: Sequence[Mapping[str, Any]], *, configured_fields: frozenset[str] = frozenset()
) -> RecordError:
    """One RecordError for the `errors` array of a failed collections result.

    A record is only as retryable as its worst error: any configuration or permanent error wins over a
    transient one, because retrying cannot fix it.
    """
    parsed = []
    for entry in errors:
        code = str(entry.get("statusCode") or entry.get("errorCode") or "UNKNOWN_ERROR")
        message = str(entry.get("message") or "")
        raw_fields = entry.get("fields")
        fields = tuple(str(f) for f in raw_fields) if isinstance(raw_fields, list) else ()
        kind = record_kind(code, message=message, fields=fields, configured_fields=configured_fields)
        parsed.append(RecordError(code=code, message=message, kind=kind, fields=fields))
    if not parsed:
        return RecordError(code="UNKNOWN_ERROR", message="Salesforce reported failure without errors", kind=P)
    for wanted in (C, P):
        for error in parsed:
            if error.kind is wanted:
                return error
    return parsed[0]


def classify_response(
    status: int, body: Any, *, config_key: str = "salesforce.objects"
) -> BridgeError | RecordError:
    """The exception for a non-2xx REST response, or a RecordError for an upsert's HTTP 300.

    `body` is the decoded JSON (None when the body was not JSON). `config_key` names the settings that
    a configuration error points at (the object and External ID field the call used).
    """
    if status == 300:
        return RecordError(
            code=DUPLICATE_EXTERNAL_ID, message="the External ID value matches several records", kind=P
        )
    code, message, fields = first_error(body)
    where = f"{code or 'HTTP ' + str(status)}: {message}".rstrip(": ")
    if status == 401 and code in (INVALID_SESSION, ""):
        if _REST_SESSION_UNUSABLE in message.lower():
            return ConfigurationError(
                f"Salesforce refuses this session for the REST API ({where}); the connected app's session "
                "policy must allow API access",
                "salesforce.auth",
            )
        return SessionExpired(where)
    if code == REQUEST_LIMIT:
        return ApiLimitExhausted(
            f"Salesforce daily API allocation exhausted ({where})", retry_after=LIMIT_RETRY_AFTER_SECONDS
        )
    if body is None and status >= 500:
        return SalesforceUnavailable(f"HTTP {status} with a non-JSON body")
    kind = call_kind(code, status)
    if kind is T:  # the status too: a retry line says what the server answered
        return SalesforceUnavailable(where if where.startswith("HTTP ") else f"HTTP {status} {where}")
    if kind is C:
        field_note = f" (fields: {', '.join(fields)})" if fields else ""
        return ConfigurationError(f"{where}{field_note}; check {config_key}", config_key.split("/")[0])
    return PermanentError(where, code=code or None)


def classify_oauth_error(status: int, body: Any, *, auth: str) -> BridgeError:
    """The exception for a failed token request: configuration naming the keys, or transient on 5xx."""
    error = str(body.get("error") or "") if isinstance(body, dict) else ""
    description = str(body.get("error_description") or "") if isinstance(body, dict) else ""
    if status >= 500 or status == 429:
        return SalesforceUnavailable(f"token endpoint answered HTTP {status}")
    keys = OAUTH_KEYS.get(error, {})
    key = keys.get(auth) or keys.get("*") or "salesforce.auth"
    detail = f"{error}: {description}" if error else f"HTTP {status}"
    return ConfigurationError(
        f"Salesforce login failed with salesforce.auth = {auth!r} ({detail}); check {key}", key.split("/")[0]
    )
