"""The pure parts of the emulator's many orgs: org specs, id segments, a hosted org's config, the request
log and token revocation of a deactivated user."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bridge import sfid
from bridge.emulator.oauth import TokenStore
from bridge.emulator.org import load_org
from bridge.emulator.requests_log import RequestLog, fingerprint
from bridge.emulator.tenants import MAX_ORGS, OrgSpec, OrgSpecError, org_segment, parse_spec, tenant_config

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)


def test_every_hosted_org_gets_its_own_id_segment() -> None:
    """Segments of orgs 1..MAX_ORGS are all different, four characters long and unlike the main org's."""
    segments = {org_segment(n) for n in range(1, MAX_ORGS + 1)}
    assert len(segments) == MAX_ORGS
    assert {len(s) for s in segments} == {4}
    assert not {s[:2] for s in segments} & {"Em", "Sd"}


@pytest.mark.parametrize("number", [0, MAX_ORGS + 1])
def test_an_org_number_out_of_range_is_refused(number: int) -> None:
    """There is no segment for org 0 (the main org) nor beyond the last one."""
    with pytest.raises(OrgSpecError):
        org_segment(number)


def test_a_hosted_org_shares_the_schema_and_has_its_own_ids_and_users() -> None:
    """The config of a hosted org keeps the main org's schema object and streaming settings, and has its
    own org id, id segment, integration user (the default one) and no seed records."""
    base = load_org(None)
    first = tenant_config(base, 1, OrgSpec("A", None, ()))
    second = tenant_config(base, 2, OrgSpec("B", None, ()))

    assert first.schema is base.schema and first.streaming is base.streaming
    assert len({base.org_id, first.org_id, second.org_id}) == 3
    assert all(sfid.is_valid(c.org_id) and c.org_id.startswith("00D") for c in (first, second))
    assert first.seed.records == ()
    assert [u.username for u in first.seed.users] == [f"integration@{first.org_id.lower()}.example"]
    assert first.integration_username == first.seed.users[0].username
    assert first.seed.users[0].id != second.seed.users[0].id


def test_a_hosted_org_takes_its_own_key_or_the_main_one() -> None:
    """Without a key of its own, a hosted org trusts the main org's JWT key; with one, only its own."""
    base = load_org(None)
    inherited = tenant_config(base, 1, OrgSpec("A", None, ()))
    own = tenant_config(base, 2, OrgSpec("B", "-----BEGIN PUBLIC KEY-----x", ()))
    assert inherited.jwt_public_key_pem == base.jwt_public_key_pem
    assert own.jwt_public_key_pem == "-----BEGIN PUBLIC KEY-----x"


def test_users_of_the_spec_become_the_org_users_in_order() -> None:
    """The given User fields make the users; the first is the integration user; IsActive defaults true."""
    users = ({"Username": "a@x.example", "LastName": "A"}, {"Username": "b@x.example", "IsActive": False})
    config = tenant_config(load_org(None), 3, OrgSpec("X", None, users))
    assert [(u.username, u.last_name, u.is_active) for u in config.seed.users] == [
        ("a@x.example", "A", True),
        ("b@x.example", "Integration", False),
    ]
    assert config.integration_username == "a@x.example"


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ([], "body"),
        ({"name": " "}, "name"),
        ({"name": "A", "jwt_public_key": "not a key"}, "jwt_public_key"),
        ({"name": "A", "users": {}}, "users"),
        ({"name": "A", "users": [{"Username": "a@x.example", "Profile": "x"}]}, "users[1]"),
        ({"name": "A", "users": [{"Username": "no-at-sign"}]}, "users[1].Username"),
    ],
)
def test_a_bad_spec_names_the_key(body: object, key: str) -> None:
    """Each malformed part of a POST /__emulator/orgs body is refused with its key first."""
    with pytest.raises(OrgSpecError) as refused:
        parse_spec(body)
    assert str(refused.value).split(":")[0] == key


def test_the_request_log_keeps_fingerprints_and_the_last_entries() -> None:
    """The log holds a token's fingerprint (never the token), None without one, and only the newest
    `size` entries; `since` keeps entries at or after the time."""
    log = RequestLog(size=3)
    for n in range(5):
        log.record(T0 + timedelta(seconds=n), "GET", f"/p{n}", 200, f"Bearer secret-{n}" if n % 2 else None)
    entries = log.since()
    assert [e.path for e in entries] == ["/p2", "/p3", "/p4"]
    assert [e.token for e in entries] == [None, fingerprint("secret-3"), None]
    assert all("secret" not in str(e.to_json()) for e in entries)
    assert [e.path for e in log.since(T0 + timedelta(seconds=3))] == ["/p3", "/p4"]


def test_revoking_a_user_ends_their_access_and_refresh_tokens_only() -> None:
    """revoke_user drops every session and refresh token of that user and keeps other users' tokens."""
    tokens = TokenStore("00DT00100000001")
    gone = [tokens.issue_access("005A", "c"), tokens.issue_access("005A", "c")]
    refresh = tokens.issue_refresh("005A")
    kept = tokens.issue_access("005B", "c")
    assert tokens.revoke_user("005A") == 3
    assert [tokens.session(t) for t in gone] == [None, None]
    assert tokens.redeem_refresh(refresh) is None
    assert tokens.session(kept) is not None
