"""The pure Salesforce error table: response -> exception, record errors -> RecordError, OAuth -> key."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.errors import (
    ApiLimitExhausted,
    BridgeError,
    ConfigurationError,
    ErrorKind,
    PermanentError,
    SalesforceUnavailable,
)
from bridge.records.outbound import RecordError
from bridge.salesforce.errors import (
    CODE_RULES,
    LIMIT_RETRY_AFTER_SECONDS,
    SessionExpired,
    call_kind,
    classify_oauth_error,
    classify_record_errors,
    classify_response,
    first_error,
    record_kind,
)


def rest_error(code: str, message: str = "boom", fields: list[str] | None = None) -> list[dict[str, Any]]:
    """A REST error array as Salesforce sends it."""
    entry: dict[str, Any] = {"message": message, "errorCode": code}
    if fields is not None:
        entry["fields"] = fields
    return [entry]


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (503, rest_error("SERVER_UNAVAILABLE"), SalesforceUnavailable),
        (500, rest_error("UNKNOWN_EXCEPTION"), SalesforceUnavailable),
        (502, None, SalesforceUnavailable),
        (504, rest_error("SOMETHING_NEW"), SalesforceUnavailable),
        (400, rest_error("UNABLE_TO_LOCK_ROW"), SalesforceUnavailable),
        (401, rest_error("INVALID_SESSION_ID", "Session expired or invalid"), SessionExpired),
        (401, None, SessionExpired),
        (403, rest_error("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."), ApiLimitExhausted),
        (404, rest_error("NOT_FOUND", "The requested resource does not exist"), ConfigurationError),
        (400, rest_error("INVALID_TYPE", "sObject type 'Nope__c' is not supported."), ConfigurationError),
        (400, rest_error("INVALID_FIELD", "No such column 'X__c'", ["X__c"]), ConfigurationError),
        (403, rest_error("INSUFFICIENT_ACCESS_OR_READONLY"), ConfigurationError),
        (403, rest_error("API_DISABLED_FOR_ORG"), ConfigurationError),
        (403, rest_error("SOME_UNKNOWN_403"), ConfigurationError),
        (400, rest_error("MALFORMED_QUERY", "unexpected token"), PermanentError),
        (400, rest_error("EXCEEDED_ID_LIMIT"), PermanentError),
        (400, rest_error("A_CODE_NOBODY_KNOWS"), PermanentError),
        (400, None, PermanentError),
    ],
)
def test_classify_response_maps_status_and_code_to_exception(
    status: int, body: Any, expected: type[BridgeError]
) -> None:
    """Each HTTP status / errorCode pair becomes the documented exception type (exact type, not a base)."""
    outcome = classify_response(status, body)
    assert type(outcome) is expected


def test_session_expired_is_transient_but_not_unavailable() -> None:
    """A 401 is handled by refresh, never by the generic retry of SalesforceUnavailable."""
    outcome = classify_response(401, rest_error("INVALID_SESSION_ID"))
    assert isinstance(outcome, SessionExpired)
    assert not isinstance(outcome, SalesforceUnavailable)


def test_session_not_valid_for_rest_is_configuration_at_once() -> None:
    """The 'not valid for use with the REST API' 401 is a configuration error: re-auth never fixes it."""
    body = rest_error("INVALID_SESSION_ID", "This session is not valid for use with the REST API")
    outcome = classify_response(401, body)
    assert isinstance(outcome, ConfigurationError)
    assert outcome.key == "salesforce.auth"


def test_request_limit_carries_retry_after() -> None:
    """REQUEST_LIMIT_EXCEEDED tells the pipeline how long to wait (Salesforce gives no Retry-After)."""
    outcome = classify_response(403, rest_error("REQUEST_LIMIT_EXCEEDED"))
    assert isinstance(outcome, ApiLimitExhausted)
    assert outcome.retry_after == LIMIT_RETRY_AFTER_SECONDS


def test_configuration_error_names_the_settings_key() -> None:
    """A configuration error points at the settings key the caller passed, message and attribute."""
    key = "salesforce.objects.mogli_event_object/salesforce.objects.link_external_id_field"
    outcome = classify_response(404, rest_error("NOT_FOUND"), config_key=key)
    assert isinstance(outcome, ConfigurationError)
    assert outcome.key == "salesforce.objects.mogli_event_object"
    assert "salesforce.objects.link_external_id_field" in str(outcome)


def test_permanent_error_keeps_the_code() -> None:
    """A permanent whole-call error keeps Salesforce's code for the ledger."""
    outcome = classify_response(400, rest_error("MALFORMED_QUERY"))
    assert isinstance(outcome, PermanentError)
    assert outcome.code == "MALFORMED_QUERY"


def test_upsert_multiple_matches_is_a_permanent_record_error() -> None:
    """HTTP 300 (External ID matches several records) is DUPLICATE_EXTERNAL_ID on that record."""
    outcome = classify_response(300, ["/services/data/v60.0/sobjects/Event/00U1", "/x/00U2"])
    assert outcome == RecordError(
        code="DUPLICATE_EXTERNAL_ID",
        message="the External ID value matches several records",
        kind=ErrorKind.PERMANENT,
    )


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("UNABLE_TO_LOCK_ROW", ErrorKind.TRANSIENT),
        ("ALL_OR_NONE_OPERATION_ROLLED_BACK", ErrorKind.TRANSIENT),
        ("FIELD_INTEGRITY_EXCEPTION", ErrorKind.PERMANENT),
        ("INVALID_CROSS_REFERENCE_KEY", ErrorKind.PERMANENT),
        ("STRING_TOO_LONG", ErrorKind.PERMANENT),
        ("REQUIRED_FIELD_MISSING", ErrorKind.PERMANENT),
        ("MALFORMED_ID", ErrorKind.PERMANENT),
        ("DUPLICATE_VALUE", ErrorKind.PERMANENT),
        ("DUPLICATE_EXTERNAL_ID", ErrorKind.PERMANENT),
        ("ENTITY_IS_DELETED", ErrorKind.PERMANENT),
        ("INACTIVE_OWNER_OR_USER", ErrorKind.PERMANENT),
        ("INVALID_FIELD", ErrorKind.PERMANENT),
        ("INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY", ErrorKind.PERMANENT),
        ("INVALID_TYPE", ErrorKind.CONFIGURATION),
        ("INVALID_FIELD_FOR_INSERT_UPDATE", ErrorKind.CONFIGURATION),
        ("API_DISABLED_FOR_ORG", ErrorKind.CONFIGURATION),
        ("NEVER_HEARD_OF_IT", ErrorKind.PERMANENT),
    ],
)
def test_record_kind_table(code: str, kind: ErrorKind) -> None:
    """Per-record codes: locks retry, data problems are recorded, org problems stop the bridge."""
    assert record_kind(code) is kind


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("INVALID_FIELD", 400, ErrorKind.CONFIGURATION),
        ("NOT_FOUND", 404, ErrorKind.CONFIGURATION),
        ("UNABLE_TO_LOCK_ROW", 400, ErrorKind.TRANSIENT),
        ("", 500, ErrorKind.TRANSIENT),
        ("", 401, ErrorKind.CONFIGURATION),
        ("", 409, ErrorKind.PERMANENT),
    ],
)
def test_call_kind_table(code: str, status: int, kind: ErrorKind) -> None:
    """Whole-call codes; unknown codes fall back on the HTTP status."""
    assert call_kind(code, status) is kind


def test_every_rule_is_total() -> None:
    """Every row of the table has a kind for both scopes (no half-filled rows)."""
    for code, rule in CODE_RULES.items():
        assert code.isupper()
        assert isinstance(rule.call, ErrorKind)
        assert isinstance(rule.record, ErrorKind)


def test_record_errors_use_status_code_key_and_keep_fields() -> None:
    """Collections results say `statusCode`; the RecordError keeps code, message and fields."""
    error = classify_record_errors(
        [
            {
                "statusCode": "FIELD_INTEGRITY_EXCEPTION",
                "message": "Name ID: id value of incorrect type",
                "fields": ["WhoId"],
            }
        ]
    )
    assert error == RecordError(
        code="FIELD_INTEGRITY_EXCEPTION",
        message="Name ID: id value of incorrect type",
        kind=ErrorKind.PERMANENT,
        fields=("WhoId",),
    )


def test_worst_record_error_wins() -> None:
    """A record with a lock error and a data error is permanent: retrying cannot fix the data."""
    error = classify_record_errors(
        [
            {"statusCode": "UNABLE_TO_LOCK_ROW", "message": "unable to obtain exclusive access"},
            {
                "statusCode": "STRING_TOO_LONG",
                "message": "Subject: data value too large",
                "fields": ["Subject"],
            },
        ]
    )
    assert error.code == "STRING_TOO_LONG"
    assert error.kind is ErrorKind.PERMANENT


def test_lone_lock_error_is_transient() -> None:
    """UNABLE_TO_LOCK_ROW on a record is transient, so the pipeline re-queues that record."""
    error = classify_record_errors([{"statusCode": "UNABLE_TO_LOCK_ROW", "message": "locked"}])
    assert error.kind is ErrorKind.TRANSIENT


def test_failure_without_errors_is_permanent_unknown() -> None:
    """`success: false` with an empty errors list is still recorded, as UNKNOWN_ERROR."""
    error = classify_record_errors([])
    assert (error.code, error.kind) == ("UNKNOWN_ERROR", ErrorKind.PERMANENT)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ([{"errorCode": "X", "message": "m", "fields": ["A"]}], ("X", "m", ("A",))),
        ([{"statusCode": "Y", "message": "n"}], ("Y", "n", ())),
        ({"errorCode": "Z", "message": "o"}, ("Z", "o", ())),
        ([], ("", "", ())),
        ("<html>", ("", "", ())),
        (None, ("", "", ())),
    ],
)
def test_first_error_reads_every_body_shape(body: Any, expected: tuple[str, str, tuple[str, ...]]) -> None:
    """Arrays, single objects, and non-JSON bodies are all read without raising."""
    assert first_error(body) == expected


def oauth(error: str, description: str = "") -> dict[str, str]:
    """An OAuth error body."""
    return {"error": error, "error_description": description}


@pytest.mark.parametrize(
    ("auth", "status", "body", "key"),
    [
        ("password", 400, oauth("invalid_grant", "authentication failure"), "salesforce.username"),
        ("jwt", 400, oauth("invalid_grant", "user hasn't approved this consumer"), "salesforce.username"),
        (
            "refresh_token",
            400,
            oauth("invalid_grant", "expired access/refresh token"),
            "salesforce.refresh_token",
        ),
        (
            "client_credentials",
            400,
            oauth("invalid_grant", "not supported on this domain"),
            "salesforce.login_url",
        ),
        ("password", 400, oauth("invalid_client_id", "client identifier invalid"), "salesforce.client_id"),
        ("jwt", 400, oauth("invalid_client", "invalid client credentials"), "salesforce.client_id"),
        ("password", 400, oauth("unsupported_grant_type"), "salesforce.auth"),
        ("password", 401, oauth("something_else"), "salesforce.auth"),
    ],
)
def test_oauth_errors_name_the_key(auth: str, status: int, body: dict[str, str], key: str) -> None:
    """A refused login is a configuration error whose key (and message) say what to fix."""
    outcome = classify_oauth_error(status, body, auth=auth)
    assert isinstance(outcome, ConfigurationError)
    assert outcome.key == key
    assert key in str(outcome)


def test_jwt_invalid_grant_mentions_private_key_file() -> None:
    """For JWT the message also points at the private key file, the usual culprit."""
    outcome = classify_oauth_error(400, {"error": "invalid_grant"}, auth="jwt")
    assert "salesforce.private_key_file" in str(outcome)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_oauth_server_errors_are_transient(status: int) -> None:
    """A token endpoint that is down is retried, not reported as bad credentials."""
    assert isinstance(classify_oauth_error(status, None, auth="password"), SalesforceUnavailable)


CONFIGURED = frozenset({"Scheduling_Booking_Id__c", "Mogli_Event_Id__c"})
NO_EXT_FIELD = "Provided external ID field does not exist or is not accessible: X"


def err(code: str, message: str, fields: list[str] | None = None) -> dict[str, Any]:
    """One collections error entry."""
    return {"statusCode": code, "message": message, "fields": fields or []}


@pytest.mark.parametrize(
    ("entry", "kind"),
    [
        (err("NOT_FOUND", NO_EXT_FIELD), ErrorKind.CONFIGURATION),
        (err("INVALID_FIELD", "No such column", ["Mogli_Event_Id__c"]), ErrorKind.CONFIGURATION),
        (err("INVALID_FIELD", "No such column 'Mogli_Event_Id__c' on Event"), ErrorKind.CONFIGURATION),
        (err("INVALID_FIELD", "bad value", ["Subject"]), ErrorKind.PERMANENT),
        (err("NOT_FOUND", "entity not found"), ErrorKind.PERMANENT),
        (err("STRING_TOO_LONG", "x", ["Mogli_Event_Id__c"]), ErrorKind.PERMANENT),
    ],
)
def test_missing_configured_field_on_a_record_is_configuration(
    entry: dict[str, Any], kind: ErrorKind
) -> None:
    """A per-record 'no such field' error about a configured or External ID field concerns every record."""
    assert classify_record_errors([entry], configured_fields=CONFIGURED).kind is kind
