"""The org file: users, seed records, custom objects, allocations and switches of one emulated org (TOML)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from bridge import sfid
from bridge.emulator.contracts import StreamingSettings
from bridge.emulator.schema import (
    TEXT_TYPES,
    FieldDef,
    Schema,
    custom_object,
    standard_objects,
    with_fields,
    with_what_targets,
)

API_VERSIONS = tuple(f"{v}.0" for v in range(45, 63))
DEFAULT_ORG_ID = "00DEm0000000001"


class OrgFileError(ValueError):
    """The org file is malformed; the message names the key."""


@dataclass(frozen=True)
class OrgUser:
    """A user of the org; `password` is None for users that cannot log in with the password grant."""

    id: str
    username: str
    email: str
    last_name: str
    is_active: bool
    password: str | None


@dataclass(frozen=True)
class SeedRecord:
    """One record the org starts with; string values `@key` name another seed record or user."""

    sobject: str
    key: str | None
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class Seed:
    """What `reset()` brings the org back to."""

    users: tuple[OrgUser, ...] = ()
    user_keys: Mapping[str, str] = field(default_factory=dict)  # key -> user id
    records: tuple[SeedRecord, ...] = ()


@dataclass(frozen=True)
class OrgConfig:
    """Everything the org file says about one emulated org."""

    org_id: str
    instance_url: str | None
    api_versions: tuple[str, ...]
    accept_any_client: bool
    clients: Mapping[str, str]
    jwt_public_key_pem: str | None
    refresh_token_rotation: bool
    daily_api_requests: int
    lead_whatid_rule: bool
    multiday_events: bool
    streaming: StreamingSettings
    seed: Seed
    schema: Schema
    integration_username: str = "bridge@example.com"
    id_segment: str = "Em"  # the org's part of every id it makes (ids are unique across hosted orgs)


def load_org(path: Path | None) -> OrgConfig:
    """Read an org file; None reads the default org shipped with the package."""
    if path is None:
        text = resources.files("bridge.emulator").joinpath("default_org.toml").read_text("utf-8")
        return parse_org(tomllib.loads(text), base_dir=None)
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise OrgFileError(f"{path}: {exc}") from exc
    return parse_org(data, base_dir=path.parent)


def parse_org(data: Mapping[str, Any], base_dir: Path | None) -> OrgConfig:
    """Build an OrgConfig from parsed TOML."""
    org = _table(data, "org")
    versions = tuple(str(v) for v in org.get("api_versions", API_VERSIONS))
    if not versions:
        raise OrgFileError("org.api_versions: must list at least one version")
    seed = _seed(data)
    if not seed.users:
        raise OrgFileError("users: the org needs at least one user (the first one acts for the seed)")
    integration = str(org.get("integration_username", seed.users[0].username if seed.users else ""))
    return OrgConfig(
        org_id=sfid.to18(str(org.get("id", DEFAULT_ORG_ID))),
        instance_url=org.get("instance_url"),
        api_versions=versions,
        accept_any_client=bool(org.get("accept_any_client", True)),
        clients={str(c["client_id"]): str(c["client_secret"]) for c in _list(data, "clients")},
        jwt_public_key_pem=_pem(org.get("jwt_public_key_file"), base_dir),
        refresh_token_rotation=bool(org.get("refresh_token_rotation", False)),
        daily_api_requests=int(org.get("daily_api_requests", 15000)),
        lead_whatid_rule=bool(org.get("lead_whatid_rule", True)),
        multiday_events=bool(org.get("multiday_events", False)),
        streaming=_streaming(_table(data, "streaming")),
        seed=seed,
        schema=_schema(data),
        integration_username=integration,
    )


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise OrgFileError(f"{key}: expected a table")
    return value


def _list(data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise OrgFileError(f"{key}: expected an array of tables")
    return value


def _pem(name: Any, base_dir: Path | None) -> str | None:
    if not name:
        return None
    path = Path(str(name))
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        return path.read_text("utf-8")
    except OSError as exc:
        raise OrgFileError(f"org.jwt_public_key_file: cannot read {path}: {exc}") from exc


def _streaming(data: Mapping[str, Any]) -> StreamingSettings:
    known = {f.name for f in fields(StreamingSettings)} - {"extra"}
    kwargs: dict[str, Any] = {k: v for k, v in data.items() if k in known}
    if "cdc_entities" in kwargs:
        kwargs["cdc_entities"] = tuple(kwargs["cdc_entities"])
    kwargs["extra"] = {k: v for k, v in data.items() if k not in known}
    try:
        return StreamingSettings(**kwargs)
    except TypeError as exc:
        raise OrgFileError(f"streaming: {exc}") from exc


def _seed(data: Mapping[str, Any]) -> Seed:
    users: list[OrgUser] = []
    keys: dict[str, str] = {}
    for n, u in enumerate(_list(data, "users"), start=1):
        for req in ("username", "email", "last_name"):
            if req not in u:
                raise OrgFileError(f"users[{n}].{req}: required")
        uid = sfid.to18(str(u["id"])) if "id" in u else seed_id("005", n)
        users.append(
            OrgUser(
                id=uid,
                username=str(u["username"]),
                email=str(u["email"]),
                last_name=str(u["last_name"]),
                is_active=bool(u.get("is_active", True)),
                password=u.get("password"),
            )
        )
        keys[str(u.get("key", u["username"]))] = uid
    records = tuple(
        SeedRecord(sobject=str(r["sobject"]), key=r.get("key"), fields=dict(r.get("fields", {})))
        for r in _list(data, "records")
    )
    return Seed(users=tuple(users), user_keys=keys, records=records)


def seed_id(prefix: str, n: int) -> str:
    """The stable 18-character id of the n-th seed record with key prefix `prefix`."""
    return sfid.to18(f"{prefix}Sd{n:010d}")


def _schema(data: Mapping[str, Any]) -> Schema:
    objects = {o.name: o for o in standard_objects()}
    activity_targets: list[str] = []
    for n, spec in enumerate(_list(data, "objects"), start=1):
        name = str(spec.get("name", ""))
        prefix = str(spec.get("prefix", ""))
        if not name.endswith("__c") or len(prefix) != 3:
            raise OrgFileError(f"objects[{n}]: needs a name ending in __c and a 3-character prefix")
        name_field = FieldDef("Name", "string", str(spec.get("name_label", "Name")), 80, nillable=False)
        custom = [_custom_field(f, f"objects[{n}]") for f in spec.get("fields", [])]
        label = str(spec.get("label", name[:-3].replace("_", " ")))
        objects[name] = custom_object(name, prefix, label, [name_field, *custom])
        if spec.get("activities", True):
            activity_targets.append(name)
    for n, spec in enumerate(_list(data, "fields"), start=1):
        target = objects.get(str(spec.get("object", "")))
        if target is None:
            raise OrgFileError(f"fields[{n}].object: unknown object {spec.get('object')!r}")
        objects[target.name] = with_fields(target, [_custom_field(spec, f"fields[{n}]")])
    objects["Event"] = with_what_targets(objects["Event"], activity_targets)
    return Schema.build(objects.values())


_CUSTOM_TYPES = TEXT_TYPES | {"boolean", "int", "double", "currency", "date", "datetime", "reference"}


def _custom_field(spec: Mapping[str, Any], where: str) -> FieldDef:
    name = str(spec.get("name", ""))
    type_ = str(spec.get("type", "string"))
    if not name.endswith("__c"):
        raise OrgFileError(f"{where}.name: custom field names end in __c, got {name!r}")
    if type_ not in _CUSTOM_TYPES:
        raise OrgFileError(f"{where}.type: unsupported type {type_!r}")
    length = int(spec.get("length", 32000 if type_ == "textarea" else 255 if type_ in TEXT_TYPES else 0))
    return FieldDef(
        name=name,
        type=type_,
        label=str(spec.get("label", name[:-3].replace("_", " "))),
        length=18 if type_ == "reference" else length,
        reference_to=tuple(spec.get("reference_to", ())),
        nillable=not spec.get("required", False),
        default=spec.get("default"),
        external_id=bool(spec.get("external_id", False)),
        unique=bool(spec.get("unique", False)),
        custom=True,
        picklist=tuple(spec.get("values", ())),
    )
