"""The Salesforce adapter: OAuth tokens, the REST client, error classification and retries.

`auth.TokenManager` holds the one current token; `rest.SalesforceClient` speaks REST through an injected
aiohttp session; `errors` is the pure response-to-exception table; `retry` is the backoff policy.
"""

from bridge.salesforce.auth import AccessToken, TokenManager, grant_from_settings, make_ssl_context
from bridge.salesforce.payloads import ObjectDescription
from bridge.salesforce.rest import SalesforceClient, make_session

__all__ = [
    "AccessToken",
    "ObjectDescription",
    "SalesforceClient",
    "TokenManager",
    "grant_from_settings",
    "make_session",
    "make_ssl_context",
]
