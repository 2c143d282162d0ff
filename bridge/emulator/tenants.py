"""Many orgs in one emulator process (CONTRACT §9): `POST /__emulator/orgs` and `GET /__emulator/orgs`.

Each hosted org is an application of its own (its own store, users, tokens, limits, faults, streaming and
request log) on its own port of the main emulator's host, over the main emulator's TLS certificate. It
shares with the main org what never changes per org: the schema objects, the streaming settings, the
connected-app policy (and the JWT key, unless given its own). Ids carry the org's segment, so an id of one
org is never found in another. Nothing is per org but memory: no thread, no certificate, no task.

Readings where Salesforce's documentation is silent, each the least convenient one: a JWT grant for an
unknown or an inactive user answers the same `invalid_grant` / "user hasn't approved this consumer" (the
requester learns nothing about which users exist); deactivating a user ends their access and refresh
tokens at once and reactivating revives none; usernames are unique across every org of the process.
Hosted orgs start with no seed records, keep their records in memory only (even with `--state`), and
are gone when the process stops.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import structlog
from aiohttp import web

from bridge import sfid
from bridge.emulator.context import json_response
from bridge.emulator.listen import base_url, listen
from bridge.emulator.org import OrgConfig, OrgUser, Seed
from bridge.emulator.state import STATE, EmulatorState

log = structlog.get_logger(__name__)

PREFIX = "/__emulator/orgs"
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_SEGMENT_DIGITS = 3
MAX_ORGS = 36**_SEGMENT_DIGITS - 1
_USER_FIELDS = frozenset({"Username", "Email", "LastName", "IsActive", "Password"})


class OrgSpecError(ValueError):
    """A `POST /__emulator/orgs` body the emulator cannot build an org from (the message names the key)."""


@dataclass(frozen=True, slots=True)
class OrgSpec:
    """What a new org is made of."""

    name: str
    jwt_public_key_pem: str | None
    users: tuple[Mapping[str, Any], ...]  # User fields; empty: one integration user


def parse_spec(body: Any) -> OrgSpec:
    """The OrgSpec of a request body; OrgSpecError names the bad key."""
    if not isinstance(body, dict):
        raise OrgSpecError("body: expected a JSON object")
    name, key, users = body.get("name"), body.get("jwt_public_key"), body.get("users", [])
    if not isinstance(name, str) or not name.strip():
        raise OrgSpecError("name: expected a non-empty string")
    if key is not None and (not isinstance(key, str) or "BEGIN PUBLIC KEY" not in key):
        raise OrgSpecError("jwt_public_key: expected a PEM public key")
    if not isinstance(users, list) or not all(isinstance(u, dict) for u in users):
        raise OrgSpecError("users: expected a list of objects of User fields")
    for n, user in enumerate(users, start=1):
        unknown = sorted(set(user) - _USER_FIELDS)
        if unknown:
            raise OrgSpecError(f"users[{n}]: unknown fields {unknown}; known: {sorted(_USER_FIELDS)}")
        if not isinstance(user.get("Username"), str) or "@" not in user["Username"]:
            raise OrgSpecError(f"users[{n}].Username: expected a username in the form of an email address")
    return OrgSpec(name.strip(), key, tuple(users))


def org_segment(number: int) -> str:
    """The id segment of the `number`-th hosted org (1-based): `T` and three base-36 digits."""
    if not 1 <= number <= MAX_ORGS:
        raise OrgSpecError(f"an emulator hosts at most {MAX_ORGS} orgs besides its main org")
    digits = ""
    for _ in range(_SEGMENT_DIGITS):
        number, digit = divmod(number, 36)
        digits = _B36[digit] + digits
    return "T" + digits


def tenant_config(base: OrgConfig, number: int, spec: OrgSpec) -> OrgConfig:
    """The `number`-th hosted org: the main org's schema and policy, with its own users and ids."""
    segment = org_segment(number)
    org_id = sfid.to18(f"00D{segment}{1:08d}")
    wanted = spec.users or ({"Username": f"integration@{org_id.lower()}.example"},)
    users = tuple(_user(fields, sfid.to18(f"005U{segment[1:]}{n:08d}")) for n, fields in enumerate(wanted, 1))
    return replace(
        base,
        org_id=org_id,
        instance_url=None,
        jwt_public_key_pem=spec.jwt_public_key_pem or base.jwt_public_key_pem,
        seed=Seed(users=users, user_keys={u.username: u.id for u in users}, records=()),
        integration_username=users[0].username,
        id_segment=segment,
    )


def _user(fields: Mapping[str, Any], user_id: str) -> OrgUser:
    username = str(fields["Username"])
    return OrgUser(
        id=user_id,
        username=username,
        email=str(fields.get("Email", username)),
        last_name=str(fields.get("LastName", "Integration")),
        is_active=bool(fields.get("IsActive", True)),
        password=fields.get("Password"),
    )


@dataclass(slots=True)
class HostedOrg:
    """One org served by this process besides the main org."""

    name: str
    url: str
    app: web.Application
    runner: web.AppRunner | None

    @property
    def state(self) -> EmulatorState:
        """The org's components (store, tokens, usage, streaming...)."""
        return self.app[STATE]

    def summary(self) -> dict[str, Any]:
        """The `GET /__emulator/orgs` entry of this org."""
        store = self.state.store
        counts = store.record_counts()
        return {
            "org_id": self.state.org.org_id,
            "name": self.name,
            "url": self.url,
            "users": counts.get("User", 0),
            "records": {k: v for k, v in counts.items() if k != "User"},
        }


AppFactory = Callable[[OrgConfig], web.Application]
AppHook = Callable[[web.Application], None]


class Tenants:
    """The orgs this emulator hosts besides its main org, and where new ones listen."""

    def __init__(self, base: OrgConfig, build_app: AppFactory) -> None:
        self._base = base
        self._build_app = build_app
        self._orgs: list[HostedOrg] = []
        self._by_id: dict[str, HostedOrg] = {}
        self._hooks: list[AppHook] = []
        self._usernames: set[str] = set()  # lower case, of every hosted org's initial users
        self.main: HostedOrg | None = None  # set by bind()
        self.host = "127.0.0.1"
        self._ssl: ssl.SSLContext | None = None
        self.grpc_address: str | None = None

    def bind(self, main: web.Application, url: str, *, host: str, ssl_context: ssl.SSLContext | None) -> None:
        """Where the main org listens: new orgs listen on the same host with the same certificate."""
        self.main = HostedOrg("main", url, main, None)
        self.host, self._ssl = host, ssl_context

    def on_create(self, hook: AppHook) -> None:
        """Run `hook` on each new org's application before it serves (e.g. to add its Pub/Sub service)."""
        self._hooks.append(hook)

    async def create(self, spec: OrgSpec) -> HostedOrg:
        """Build, seed and serve a new org on a free port."""
        config = tenant_config(self._base, len(self._orgs) + 1, spec)
        self._check_usernames(config.seed.users)
        app = self._build_app(config)
        for hook in self._hooks:
            hook(app)
        runner, port = await listen(app, self.host, 0, self._ssl)
        hosted = HostedOrg(spec.name, base_url(self.host, port, tls=self._ssl is not None), app, runner)
        self._orgs.append(hosted)
        self._usernames.update(u.username.lower() for u in config.seed.users)
        self._by_id[config.org_id] = self._by_id[config.org_id[:15]] = hosted
        log.info("emulator.org_created", org_id=config.org_id, port=port)
        return hosted

    def _check_usernames(self, users: Sequence[OrgUser]) -> None:
        """A username is unique across every org (as in Salesforce, across all of its orgs): checked
        against the main org's users and the users every hosted org was created with."""
        seen: set[str] = set()
        for n, user in enumerate(users, start=1):
            name = user.username.lower()
            main_has = self.main is not None and self.main.state.store.user_by_username(name) is not None
            if name in seen or name in self._usernames or main_has:
                raise OrgSpecError(
                    f"users[{n}].Username: DUPLICATE_USERNAME: {user.username} already exists in this or"
                    " another org"
                )
            seen.add(name)

    def orgs(self) -> list[HostedOrg]:
        """Every org this process serves, the main org first (when bound)."""
        return ([self.main] if self.main is not None else []) + list(self._orgs)

    def state_of(self, org_id: str) -> EmulatorState | None:
        """The components of the org with this 15- or 18-character id, None when no org has it."""
        hosted = self._by_id.get(org_id)
        if hosted is None and self.main is not None:
            main_id = self.main.state.org.org_id
            hosted = self.main if org_id and org_id in (main_id, main_id[:15]) else None
        return hosted.state if hosted is not None else None

    async def close(self) -> None:
        """Stop serving every hosted org."""
        for hosted in self._orgs:
            if hosted.runner is not None:
                await hosted.runner.cleanup()
        self._orgs.clear()
        self._by_id.clear()
        self._usernames.clear()


TENANTS = web.AppKey("emulator_tenants", Tenants)


async def post_org(request: web.Request) -> web.Response:
    """POST /__emulator/orgs {"name", "jwt_public_key"?, "users"?}: a new org on its own port."""
    raw = await request.read()
    try:
        spec = parse_spec(await request.json() if raw else None)
        hosted = await request.app[TENANTS].create(spec)
    except (OrgSpecError, ValueError) as exc:
        return json_response({"error": str(exc)}, status=400)
    except OSError as exc:
        return json_response({"error": f"cannot listen for the new org: {exc}"}, status=503)
    org = hosted.state.org
    body: dict[str, Any] = {
        "org_id": org.org_id,
        "name": hosted.name,
        "url": hosted.url,
        "users": user_summaries(org.seed.users),
    }
    grpc = request.app[TENANTS].grpc_address
    if grpc is not None:
        body["grpc"] = grpc
    return json_response(body, status=201)


async def get_orgs(request: web.Request) -> web.Response:
    """GET /__emulator/orgs: every org this process serves (the main org first, `"main": true`)."""
    tenants = request.app[TENANTS]
    rows = [dict(o.summary(), main=o is tenants.main) for o in tenants.orgs()]
    return json_response({"orgs": rows})


def register(app: web.Application, tenants: Tenants) -> None:
    """Host orgs from the main emulator: its routes, and closing them with it."""
    app[TENANTS] = tenants
    app.router.add_post(PREFIX, post_org)
    app.router.add_get(PREFIX, get_orgs)

    async def close_tenants(_: web.Application) -> None:
        await tenants.close()

    app.on_cleanup.append(close_tenants)


def user_summaries(users: Sequence[OrgUser]) -> list[dict[str, Any]]:
    """Id, Username and IsActive of each user."""
    return [{"Id": u.id, "Username": u.username, "IsActive": u.is_active} for u in users]
