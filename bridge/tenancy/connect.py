"""How the bridge reaches one org: its settings, and why it is paused when it cannot.

Every customer org is reached with the OAuth JWT bearer flow of the bridge's one connected app
(`salesforce.client_id`, `salesforce.private_key_file`), at the connection's `login_url`, as its `username`:
no per-org secret exists anywhere. The default org is reached exactly as `[salesforce]` says.
"""

from __future__ import annotations

from dataclasses import replace

from bridge.config import Settings
from bridge.errors import ApiLimitExhausted, BridgeError, ConfigurationError, TransientError
from bridge.records.ledger import DEFAULT_ORG, OrgRecord
from bridge.redact import describe


class OrgUnusable(BridgeError):
    """The org's connection cannot be served as it is (the message says why, for the `orgs` reason)."""


def org_settings(settings: Settings, org: OrgRecord) -> Settings:
    """The Settings an org's components are built with: `[salesforce]` pointed at the org's connection (JWT
    bearer with the one connected app; no password, secret or refresh token of the default org carried over),
    its calls in flight bounded by `tenancy.org_max_in_flight`. The default org: `settings` unchanged."""
    if org.org_id == DEFAULT_ORG:
        return settings
    if not org.login_url or not org.username:
        raise OrgUnusable("the org's connection names no login URL or no integration user")
    salesforce = replace(
        settings.salesforce,
        auth="jwt",
        login_url=org.login_url,
        username=org.username,
        password="",
        client_secret="",
        refresh_token="",
        audience="",  # from the org's login URL: login.salesforce.com, or test.salesforce.com for sandboxes
        max_in_flight=settings.tenancy.org_max_in_flight,
    )
    return replace(settings, salesforce=salesforce)


def pause_reason(exc: BaseException) -> str:
    """A readable reason for the `orgs` table (no secrets, no user names) from the failure that paused an
    org's work; the leaf of an exception group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, OrgUnusable):
        return str(exc)
    if isinstance(exc, ConfigurationError) and "login failed" in str(exc):
        detail = str(exc).partition("(")[2].rpartition(")")[0] or "no detail"
        return f"Salesforce refused the integration user's token ({detail})"
    if isinstance(exc, ApiLimitExhausted):
        return f"the org's API allocation is used up ({describe(exc)})"
    if isinstance(exc, TransientError):
        return f"Salesforce is unreachable ({describe(exc)})"
    if isinstance(exc, BridgeError):
        return describe(exc)
    return f"unexpected {type(exc).__name__}: {describe(exc)}"
