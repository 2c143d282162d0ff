"""The names of the ledger's org scope: which org_id the tables hold for an org, which key `orgs` holds,
which checkpoint stream a channel of an org is stored under, and back."""

from __future__ import annotations

import pytest

from bridge.ledger.scope import EVERY_ORG, OrgScope, ledger_org, org_key, org_stream, split_stream

ORG = "0a0a0a0a-0000-4000-8000-00000000000a"
CHANNEL = "/data/EventChangeEvent"


@pytest.mark.parametrize(
    ("asked", "held", "key"),
    [(None, None, "default"), ("default", None, "default"), (ORG, ORG, ORG)],
)
def test_default_org_is_null_in_the_tables_and_default_in_orgs(
    asked: str | None, held: str | None, key: str
) -> None:
    """The default org (asked as None or 'default') is NULL in the tables and 'default' in `orgs`."""
    assert ledger_org(asked) == held
    assert org_key(held) == key


@pytest.mark.parametrize(
    ("org", "channel", "stream"),
    [
        (None, CHANNEL, CHANNEL),  # the default org keeps bare channel names
        (ORG, CHANNEL, f"org/{ORG}/{CHANNEL}"),
        (ORG, "source", "source"),  # the source position is global
        (ORG, f"org/{ORG}/{CHANNEL}", f"org/{ORG}/{CHANNEL}"),  # already an org's stream: not mapped twice
    ],
)
def test_org_stream(org: str | None, channel: str, stream: str) -> None:
    """A channel of a customer org is stored as 'org/<org_id>/<channel>'; nothing else is renamed."""
    assert org_stream(org, channel) == stream


@pytest.mark.parametrize(
    ("stream", "parts"),
    [
        (f"org/{ORG}/{CHANNEL}", (ORG, CHANNEL)),
        (CHANNEL, (None, CHANNEL)),
        ("source", (None, "source")),
        ("org/", (None, "org/")),  # no org id and no channel: a bare name
        (f"org/{ORG}", (None, f"org/{ORG}")),
    ],
)
def test_split_stream(stream: str, parts: tuple[str | None, str]) -> None:
    """split_stream undoes org_stream, and leaves any other name to the default org."""
    assert split_stream(stream) == parts


def test_scope_membership_and_written_org() -> None:
    """A scope holds its org's rows only (the default org's: NULL), every org holds all; a new row takes
    its own org, else the scope's (NULL for every org)."""
    default, org = OrgScope(None), OrgScope(ORG)
    assert default.holds(None) and not default.holds(ORG)
    assert org.holds(ORG) and not org.holds(None)
    assert EVERY_ORG.holds(None) and EVERY_ORG.holds(ORG)
    assert (default.key, org.key, EVERY_ORG.key) == ("default", ORG, None)
    assert (org.written_org(), org.written_org("x"), EVERY_ORG.written_org(), default.written_org()) == (
        ORG,
        "x",
        None,
        None,
    )
    assert (org.stream(CHANNEL), EVERY_ORG.stream(CHANNEL)) == (f"org/{ORG}/{CHANNEL}", CHANNEL)
