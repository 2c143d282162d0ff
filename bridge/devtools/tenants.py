"""The many-org test world: customer orgs in the emulator, their rows in the scheduling database, and the
cross-org verdict (CONTRACT §9).

`TenantWorld` creates orgs in one emulator process (each on its own URL, trusting the bridge's one JWT key),
writes the matching `organizations`, `salesforce_connections` and `users` rows, books on their links and
breaks them the ways the e2e tests need (a deactivated integration user, a used-up API allocation, a
disconnected connection). `verdict` judges, from plain rows and records, that every booking's Event is in
its own org only. (Just over 400 lines: the world, the config the tests, demo and bench share, and the
verdict that judges it read together.)
"""

from __future__ import annotations

import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.devtools.invariants import Difference, check, tally
from bridge.devtools.stack import EmulatorProcess, HttpError, Scheduler, http_json, write_config
from bridge.records.ledger import DEFAULT_ORG

ADMIN_PASSWORD = "tenant-admin-pw"  # the world's own user in each org (never the bridge's)
BOOKING_FIELD, LINK_FIELD = "Scheduling_Booking_Id__c", "Scheduling_Link_Id__c"


def write_key_pair(directory: Path) -> tuple[Path, str]:
    """A new RSA key: the private key as a 0600 PEM file for the config, and the public key's PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = directory / "connected-app.key"
    pem = serialization.Encoding.PEM
    path.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path.chmod(0o600)
    public = key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, public.decode()


class OrgClient:
    """Plain REST and the control API of one hosted org, as the world's admin user of that org."""

    def __init__(self, url: str, admin_username: str) -> None:
        self.url = url
        self._admin = admin_username
        self._token: str | None = None

    def _bearer(self) -> dict[str, str]:
        if self._token is None:
            _, body = http_json(
                "POST",
                f"{self.url}/services/oauth2/token",
                form={
                    "grant_type": "password",
                    "client_id": "tenant-world",
                    "client_secret": "tenant-world",
                    "username": self._admin,
                    "password": ADMIN_PASSWORD,
                },
            )
            self._token = str(body["access_token"])
        return {"Authorization": f"Bearer {self._token}"}

    def rest(self, method: str, path: str, body: Any = None) -> Any:
        """One REST call under /services/data/v60.0 (a new token once when the session died)."""
        url = f"{self.url}/services/data/v60.0/{path.lstrip('/')}"
        try:
            return http_json(method, url, body, headers=self._bearer())[1]
        except HttpError as exc:
            if exc.status != 401:
                raise
            self._token = None
            return http_json(method, url, body, headers=self._bearer())[1]

    def create(self, sobject: str, fields: Mapping[str, Any]) -> str:
        """Create a record; returns its id."""
        return str(self.rest("POST", f"sobjects/{sobject}/", dict(fields))["id"])

    def update(self, sobject: str, record_id: str, fields: Mapping[str, Any]) -> None:
        """Update fields of a record."""
        self.rest("PATCH", f"sobjects/{sobject}/{record_id}", dict(fields))

    def records(self, sobject: str) -> list[dict[str, Any]]:
        """Every live record of an object, from the org's control API."""
        body = http_json("GET", f"{self.url}/__emulator/records/{sobject}")[1]
        return list(body["records"] if isinstance(body, dict) else body)

    def control(self, path: str, body: Any = None) -> Any:
        """POST to one of the org's control routes."""
        return http_json("POST", f"{self.url}/__emulator/{path}", body or {})[1]

    def requests(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """The org's logged API requests (`at, method, path, status, token` fingerprint)."""
        query = "?" + urllib.parse.urlencode({"since": since.isoformat()}) if since else ""
        return list(http_json("GET", f"{self.url}/__emulator/requests{query}")[1]["requests"])


@dataclass
class TenantOrg:
    """One customer: its scheduler organization, its emulated org and what the world seeded in both."""

    org_id: str  # scheduler.organizations.id, and the bridge's org_id
    name: str
    salesforce_org_id: str
    client: OrgClient
    integration_username: str
    integration_user_id: str
    users: list[str] = field(default_factory=list)  # scheduler user ids (organization_id = org_id)
    salesforce_users: list[str] = field(default_factory=list)  # their 005 ids in this org, same order
    contacts: list[str] = field(default_factory=list)
    leads: list[str] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)
    usernames: dict[str, str] = field(default_factory=dict)  # Username by 005 id, every user of the org

    @property
    def url(self) -> str:
        """The org's login URL, which is also its instance URL."""
        return self.client.url


@dataclass(frozen=True, slots=True)
class OrgRecords:
    """What one org holds: its live Events and Mogli Events (`org` is the bridge's org_id)."""

    org: str
    events: Sequence[Mapping[str, Any]]
    mogli_events: Sequence[Mapping[str, Any]]


class TenantWorld:
    """Customer orgs in one emulator, their scheduler rows, and the faults the tenancy tests inject."""

    def __init__(self, emulator: EmulatorProcess, scheduler: Scheduler, workdir: Path) -> None:
        self.emulator = emulator
        self.scheduler = scheduler
        self.key_path, self.public_key = write_key_pair(workdir)
        self.orgs: list[TenantOrg] = []

    def add_org(self, name: str, *, hosts: int = 3, connected: bool = True) -> TenantOrg:
        """A new emulated org (integration user, the world's admin, `hosts` booking users, two Contacts, a
        Lead and an Account) and its organization, users and connection rows in the scheduler."""
        tag = uuid.uuid4().hex[:10]
        wanted = [{"Username": f"integration.{tag}@tenant.example", "LastName": "Integration"}]
        wanted.append({"Username": f"admin.{tag}@tenant.example", "Password": ADMIN_PASSWORD})
        wanted += [
            {"Username": f"host{i}.{tag}@tenant.example", "LastName": f"Host{i}"} for i in range(hosts)
        ]
        body = self.emulator.create_org(name, jwt_public_key=self.public_key, users=wanted)
        ids = {u["Username"]: u["Id"] for u in body["users"]}
        org = TenantOrg(
            org_id=str(uuid.uuid4()),
            name=name,
            salesforce_org_id=body["org_id"],
            client=OrgClient(body["url"], wanted[1]["Username"]),
            integration_username=wanted[0]["Username"],
            integration_user_id=ids[wanted[0]["Username"]],
            usernames={user_id: username for username, user_id in ids.items()},
        )
        org.contacts = [org.client.create("Contact", {"LastName": f"Contact{i}"}) for i in range(2)]
        org.leads = [org.client.create("Lead", {"LastName": "Lead0", "Company": "Acme"})]
        org.accounts = [org.client.create("Account", {"Name": "Account 0"})]
        self.scheduler.execute(
            "INSERT INTO scheduler.organizations (id, name) VALUES (%s, %s)", (org.org_id, name)
        )
        for user in wanted[2:]:
            org.users.append(self.add_user(org, ids[user["Username"]]))
            org.salesforce_users.append(ids[user["Username"]])
        self.scheduler.execute(
            "INSERT INTO scheduler.salesforce_connections (organization_id, login_url, username, status) "
            "VALUES (%s, %s, %s, %s)",
            (org.org_id, org.url, org.integration_username, "connected" if connected else "disconnected"),
        )
        self.orgs.append(org)
        return org

    def add_user(self, org: TenantOrg | None, salesforce_user_id: str | None) -> str:
        """A scheduler user of `org` (None: the default org); returns its id."""
        uid = str(uuid.uuid4())
        self.scheduler.execute(
            "INSERT INTO scheduler.users (id, email, full_name, salesforce_user_id, organization_id) "
            "VALUES (%s, %s, %s, %s, %s)",
            (uid, f"u{uid[:8]}@example.com", "Private Person", salesforce_user_id, org and org.org_id),
        )
        return uid

    # -- links and bookings
    def add_link(self, org: TenantOrg, link_type: str = "one_on_one", *, title: str = "Intro call") -> str:
        """A link owned by the org's first booking user; returns its id."""
        return self.scheduler.add_link(link_type, org.users[0], title=title, description=f"{title} agenda")

    def book(
        self,
        org: TenantOrg,
        link_id: str,
        *,
        related: str | None = None,
        assigned: str | None = None,
        start: datetime | None = None,
    ) -> str:
        """A booking on an org's link (related: a Contact of the org unless told; round robin: `assigned`)."""
        start = start or (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
        return self.scheduler.add_booking(
            link_id, start=start, related=related or org.contacts[0], assigned=assigned
        )

    def book_every_kind(self, org: TenantOrg) -> list[str]:
        """One link of each type and bookings on them with a Contact, a Lead, an Account and no record."""
        one = self.add_link(org, "one_on_one", title=f"{org.name} intro")
        rr = self.add_link(org, "round_robin", title=f"{org.name} demo")
        rsvp = self.add_link(org, "rsvp", title=f"{org.name} webinar")
        day = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
        return [
            self.book(org, one, start=day),
            self.book(org, rr, related=org.leads[0], assigned=org.users[1], start=day + timedelta(hours=1)),
            self.book(
                org, rr, related=org.accounts[0], assigned=org.users[-1], start=day + timedelta(hours=2)
            ),
            self.book(org, rsvp, related=org.contacts[1], start=day + timedelta(hours=3)),
        ]

    # -- what the tests break and mend
    def set_integration_user_active(self, org: TenantOrg, active: bool) -> None:
        """Deactivate (its sessions end, its JWT grants are refused) or reactivate the integration user."""
        org.client.update("User", org.integration_user_id, {"IsActive": active})

    def set_integration_user(self, org: TenantOrg, salesforce_user_id: str) -> None:
        """Make another user of the org its integration user (the connection's username)."""
        username = org.usernames[salesforce_user_id]
        self._set_connection(org, "username", username)
        org.integration_username, org.integration_user_id = username, salesforce_user_id

    def set_allocation(self, org: TenantOrg, *, exhausted: bool) -> None:
        """Use up the org's daily API allocation (every call answers REQUEST_LIMIT_EXCEEDED), or free it."""
        org.client.control("limits", {"allocation": 15000, "used": 15000 if exhausted else 0})

    def set_connected(self, org: TenantOrg, connected: bool) -> None:
        """Connect or disconnect the org."""
        self._set_connection(org, "status", "connected" if connected else "disconnected")

    def _set_connection(self, org: TenantOrg, column: str, value: str) -> None:
        """One column of the org's connection row, as the scheduler's settings page would change it."""
        assert column in ("status", "username", "login_url")
        self.scheduler.execute(
            f"UPDATE scheduler.salesforce_connections SET {column} = %s, updated_at = now() "  # noqa: S608
            "WHERE organization_id = %s",
            (value, org.org_id),
        )

    # -- the verdict's inputs
    def org_records(self) -> list[OrgRecords]:
        """The live Events and Mogli Events of the default org and of every customer org."""
        main = OrgRecords(
            DEFAULT_ORG, self.emulator.records("Event"), self.emulator.records("Mogli_Event__c")
        )
        return [main] + [
            OrgRecords(org.org_id, org.client.records("Event"), org.client.records("Mogli_Event__c"))
            for org in self.orgs
        ]

    def verdict(self, failed_ok: frozenset[str] = frozenset(), on_cancel: str = "delete") -> Verdict:
        """Judge every org against the scheduler (before any repair)."""
        s = self.scheduler
        return verdict(
            bookings=s.rows("bookings"),
            links={r["id"]: r for r in s.rows("scheduling_links")},
            users={r["id"]: r for r in s.rows("users")},
            orgs=self.org_records(),
            failed_ok=failed_ok,
            on_cancel=on_cancel,
        )


def write_tenancy_config(
    path: Path,
    world: TenantWorld,
    *,
    dsn: str,
    ledger_url: str,
    slot: str = "mogli_bridge",
    extra: str = "",
    **options: Any,
) -> Path:
    """A daemon config in tenancy mode: the default org of the main emulator by the JWT bearer flow, every
    connected organization through the one connected app's key; short resume checks, so a paused org
    resumes within seconds of its cause being gone. `options` go to `write_config` (backfill, admin...)."""
    return write_config(
        path,
        dsn=dsn,
        ledger_url=ledger_url,
        emulator_url=world.emulator.url,
        slot=slot,
        auth="jwt",
        **options,
        # A budget reading below the reserve is trusted this long: short, so a freed allocation shows soon.
        salesforce_extra=f'private_key_file = "{world.key_path}"\napi_budget_recheck_seconds = 2.0\n',
        extra=f"""
[tenancy]
enabled = true
org_max_in_flight = 2
resume_check_seconds = 1.0
{extra}""",
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the cross-org check counts (each figure counted from the records, never set by hand)."""

    lost: int  # bookings whose Event is in no live record of their own org
    doubled: int  # Events beyond one per booking, Mogli Events beyond one per link, in their own org
    wrong_fields: (
        int  # bookings whose one Event has a field not the scheduler's; booked links without Mogli Event
    )
    cross_org: int  # records in an org that carry a booking or link id of another org
    orphans: int  # Events or Mogli Events whose External ID names no booking or link at all
    differences: tuple[Difference, ...] = ()

    @property
    def clean(self) -> bool:
        """True when nothing is lost, doubled, wrong, misplaced or orphaned."""
        return not (self.lost or self.doubled or self.wrong_fields or self.cross_org or self.orphans)


def org_of_links(
    links: Mapping[str, Mapping[str, Any]], users: Mapping[str, Mapping[str, Any]]
) -> dict[str, str]:
    """Each link's org: its owner's organization, the default org when the owner has none."""
    return {
        link_id: str(users[str(link["owner_id"])].get("organization_id") or DEFAULT_ORG)
        for link_id, link in links.items()
    }


def verdict(
    *,
    bookings: Sequence[Mapping[str, Any]],
    links: Mapping[str, Mapping[str, Any]],
    users: Mapping[str, Mapping[str, Any]],
    orgs: Iterable[OrgRecords],
    failed_ok: frozenset[str] = frozenset(),
    on_cancel: str = "delete",
) -> Verdict:
    """Compare every org's records with the scheduler: each booking's Event once, right, in its own org."""
    link_org = org_of_links(links, users)
    booking_org = {str(b["id"]): link_org[str(b["link_id"])] for b in bookings}
    lost = doubled = wrong = cross = orphans = 0
    diffs: list[Difference] = []
    for held in orgs:
        events, moglis, misplaced = _own_records(held, booking_org, link_org)
        cross += len(misplaced)
        orphans += sum(1 for d in misplaced if d.kind == "orphan")
        diffs += misplaced
        own_bookings = [b for b in bookings if booking_org[str(b["id"])] == held.org]
        own_links = {k: v for k, v in links.items() if link_org[k] == held.org}
        counted = tally(
            bookings=own_bookings,
            events=events,
            mogli_events=moglis,
            on_cancel=on_cancel,
            failed_ok=failed_ok,
        )
        lost, doubled = lost + counted.lost, doubled + counted.doubled
        found = check(
            bookings=own_bookings,
            links=own_links,
            users=users,
            events=events,
            mogli_events=moglis,
            on_cancel=on_cancel,
            failed_ok=failed_ok,
        )
        wrong += len({d.key for d in found if d.kind in ("field_mismatch", "mogli_event_missing")})
        diffs += [Difference(d.kind, f"{held.org}:{d.key}", d.detail) for d in found]
    return Verdict(lost, doubled, wrong, cross - orphans, orphans, tuple(diffs))


def _own_records(
    held: OrgRecords, booking_org: Mapping[str, str], link_org: Mapping[str, str]
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]], list[Difference]]:
    """The org's Events and Mogli Events that belong to it, and one Difference per record that does not
    (`cross_org` when its External ID is another org's, `orphan` when it is nobody's)."""
    events: list[Mapping[str, Any]] = []
    moglis: list[Mapping[str, Any]] = []
    misplaced: list[Difference] = []
    for records, owners, key_field, keep in (
        (held.events, booking_org, BOOKING_FIELD, events),
        (held.mogli_events, link_org, LINK_FIELD, moglis),
    ):
        for record in records:
            key = str(record.get(key_field) or "")
            owner = owners.get(key)
            if owner == held.org:
                keep.append(record)
            elif owner is None:
                misplaced.append(Difference("orphan", f"{held.org}:{key}", f"{key_field} names nothing"))
            else:
                misplaced.append(Difference("cross_org", f"{held.org}:{key}", f"belongs to org {owner}"))
    return events, moglis, misplaced


def kinds(result: Verdict) -> Counter[str]:
    """How many differences of each kind a verdict found (for assertion messages)."""
    return Counter(d.kind for d in result.differences)
