"""Object and field definitions of the emulated org, and the describe JSON built from them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

TEXT_TYPES = frozenset({"string", "textarea", "email", "phone", "url", "picklist", "combobox"})
SYSTEM_FIELDS = ("CreatedDate", "CreatedById", "LastModifiedDate", "LastModifiedById", "SystemModstamp")


@dataclass(frozen=True, slots=True)
class FieldDef:
    """One field of an sObject, as describe reports it."""

    name: str
    type: str  # id | string | textarea | email | phone | url | picklist | boolean | int | double | date | ...
    label: str = ""
    length: int = 0
    reference_to: tuple[str, ...] = ()
    createable: bool = True
    updateable: bool = True
    nillable: bool = True
    default: Any = None
    external_id: bool = False
    unique: bool = False
    custom: bool = False
    picklist: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        """True when a create must carry a value (not nillable, no default, writable)."""
        return self.createable and not self.nillable and self.default is None and self.type != "boolean"

    @property
    def id_label(self) -> str:
        """The label Salesforce puts in front of lookup errors, e.g. `Name ID`."""
        return self.label if self.label.endswith("ID") else f"{self.label} ID"


@dataclass(frozen=True, slots=True)
class ObjectDef:
    """One sObject type: its name, key prefix and fields (keyed by lower-case name)."""

    name: str
    prefix: str
    label: str
    fields: Mapping[str, FieldDef]
    custom: bool = False
    has_owner: bool = True

    def field(self, name: str) -> FieldDef | None:
        """The field named `name` (case-insensitive), or None."""
        return self.fields.get(name.lower())

    def field_names(self) -> list[str]:
        """Canonical field names in definition order."""
        return [f.name for f in self.fields.values()]


def _f(name: str, type_: str, label: str = "", length: int = 0, **kw: Any) -> FieldDef:
    """Shorthand constructor used by the standard object tables."""
    if not length and type_ in TEXT_TYPES:
        length = 255
    return FieldDef(name=name, type=type_, label=label or name, length=length, **kw)


def _ro(name: str, type_: str, label: str = "", **kw: Any) -> FieldDef:
    """A read-only (system or derived) field."""
    return _f(name, type_, label, createable=False, updateable=False, **kw)


def _ref(name: str, to: Sequence[str], label: str, **kw: Any) -> FieldDef:
    """A lookup field."""
    return _f(name, "reference", label, length=18, reference_to=tuple(to), **kw)


def _system(owner: bool, owner_label: str = "Owner ID") -> list[FieldDef]:
    """The fields every object carries."""
    out = [
        _ro("Id", "id", "Record ID", length=18, nillable=False),
        _ro("IsDeleted", "boolean", "Deleted", nillable=False),
        _ro("CreatedDate", "datetime", "Created Date", nillable=False),
        _ro("CreatedById", "reference", "Created By ID", length=18, reference_to=("User",), nillable=False),
        _ro("LastModifiedDate", "datetime", "Last Modified Date", nillable=False),
        _ro("LastModifiedById", "reference", "Last Modified By ID", length=18, reference_to=("User",)),
        _ro("SystemModstamp", "datetime", "System Modstamp", nillable=False),
    ]
    if owner:
        out.append(_ref("OwnerId", ("User",), owner_label, nillable=False, default="$user"))
    return out


def _obj(name: str, prefix: str, fields: Iterable[FieldDef], owner: bool = True, **kw: Any) -> ObjectDef:
    """Build an ObjectDef with the system fields first."""
    allf = _system(owner, kw.pop("owner_label", "Owner ID")) + list(fields)
    return ObjectDef(
        name=name,
        prefix=prefix,
        label=kw.pop("label", name),
        fields={f.name.lower(): f for f in allf},
        has_owner=owner,
        **kw,
    )


_PERSON = [
    _f("FirstName", "string", "First Name", 40),
    _f("LastName", "string", "Last Name", 80, nillable=False),
    _ro("Name", "string", "Full Name", length=121),
    _f("Email", "email", "Email", 80),
    _f("Phone", "phone", "Phone", 40),
    _f("Title", "string", "Title", 128),
    _f("Description", "textarea", "Description", 32000),
]


def standard_objects() -> list[ObjectDef]:
    """The standard objects every emulated org has."""
    # One declarative table entry per object; splitting it would only scatter the field lists.
    return [
        _obj(
            "User",
            "005",
            [
                _f("Username", "string", "Username", 80, nillable=False, unique=True),
                _f("Email", "email", "Email", 128, nillable=False),
                _f("FirstName", "string", "First Name", 40),
                _f("LastName", "string", "Last Name", 80, nillable=False),
                _ro("Name", "string", "Full Name", length=121),
                _f("Alias", "string", "Alias", 8),
                _f("IsActive", "boolean", "Active", default=True),
                _f("TimeZoneSidKey", "picklist", "Time Zone", 40, default="GMT"),
            ],
            owner=False,
        ),
        _obj(
            "Account",
            "001",
            [
                _f("Name", "string", "Account Name", 255, nillable=False),
                _f("Type", "picklist", "Account Type", 255),
                _f("Industry", "picklist", "Industry", 255),
                _f("Phone", "phone", "Account Phone", 40),
                _f("Website", "url", "Website", 255),
                _f("Description", "textarea", "Account Description", 32000),
            ],
        ),
        _obj("Contact", "003", [_ref("AccountId", ("Account",), "Account ID"), *_PERSON]),
        _obj(
            "Lead",
            "00Q",
            [
                *_PERSON,
                _f("Company", "string", "Company", 255, nillable=False),
                _f("Status", "picklist", "Status", 255, nillable=False, default="Open - Not Contacted"),
                _ro("IsConverted", "boolean", "Converted", nillable=False),
                _ro("ConvertedDate", "date", "Converted Date"),
                _ro(
                    "ConvertedAccountId",
                    "reference",
                    "Converted Account ID",
                    length=18,
                    reference_to=("Account",),
                ),
                _ro(
                    "ConvertedContactId",
                    "reference",
                    "Converted Contact ID",
                    length=18,
                    reference_to=("Contact",),
                ),
                _ro(
                    "ConvertedOpportunityId",
                    "reference",
                    "Converted Opportunity ID",
                    length=18,
                    reference_to=("Opportunity",),
                ),
            ],
        ),
        _obj(
            "Opportunity",
            "006",
            [
                _f("Name", "string", "Name", 120, nillable=False),
                _ref("AccountId", ("Account",), "Account ID"),
                _f("StageName", "picklist", "Stage", 255, nillable=False),
                _f("CloseDate", "date", "Close Date", nillable=False),
                _f("Amount", "currency", "Amount"),
                _f("Description", "textarea", "Description", 32000),
            ],
        ),
        _event(),
        _obj(
            "EventRelation",
            "0RE",
            [
                _ref("EventId", ("Event",), "Event ID", nillable=False, updateable=False),
                _ref(
                    "RelationId", ("User", "Contact", "Lead"), "Relation ID", nillable=False, updateable=False
                ),
                _f("IsInvitee", "boolean", "Is Invitee", default=True),
                _f("IsParent", "boolean", "Is Parent", default=False),
                _f("IsWhat", "boolean", "Is What", default=False, updateable=False),
                _f(
                    "Status",
                    "picklist",
                    "Status",
                    40,
                    default="New",
                    picklist=("New", "Accepted", "Declined"),
                ),
                _f("Response", "string", "Response", 255),
                _f("RespondedDate", "datetime", "Response Date"),
            ],
            owner=False,
        ),
    ]


def _event() -> ObjectDef:
    """The Event (activity) object: reference §3.1."""
    what = ("Account", "Opportunity")  # custom objects are added by the org
    return _obj(
        "Event",
        "00U",
        [
            _ref("WhoId", ("Contact", "Lead"), "Name ID"),
            _ref("WhatId", what, "Related To ID"),
            _ro("AccountId", "reference", "Account ID", length=18, reference_to=("Account",)),
            _f("Subject", "combobox", "Subject", 255),
            _f("Location", "string", "Location", 255),
            _f("Description", "textarea", "Description", 32000),
            _f("StartDateTime", "datetime", "Start Date Time"),
            _f("EndDateTime", "datetime", "End Date Time"),
            _f("ActivityDateTime", "datetime", "Due Date Time"),
            _f("ActivityDate", "date", "Due Date Only"),
            _f("DurationInMinutes", "int", "Duration"),
            _f("IsAllDayEvent", "boolean", "All-Day Event", default=False),
            _f("ShowAs", "picklist", "Show Time As", 40, default="Busy"),
            _f("IsPrivate", "boolean", "Private", default=False),
            _f("Type", "picklist", "Type", 40),
            _ro("IsGroupEvent", "boolean", "Is Group Event", nillable=False),
            _ro("IsChild", "boolean", "Is Child", nillable=False),
            _f("IsArchived", "boolean", "Archived", default=False, createable=False, updateable=False),
        ],
        owner_label="Assigned To ID",
    )


def custom_object(name: str, prefix: str, label: str, fields: Iterable[FieldDef]) -> ObjectDef:
    """A custom object: system fields, OwnerId, then `fields`."""
    return _obj(name, prefix, fields, label=label, custom=True)


def with_fields(obj: ObjectDef, extra: Iterable[FieldDef]) -> ObjectDef:
    """A copy of `obj` with more (custom) fields."""
    fields = dict(obj.fields)
    for f in extra:
        fields[f.name.lower()] = f
    return replace(obj, fields=fields)


def with_what_targets(event: ObjectDef, targets: Iterable[str]) -> ObjectDef:
    """A copy of the Event definition whose WhatId also accepts `targets`."""
    what = event.fields["whatid"]
    new = replace(what, reference_to=tuple(dict.fromkeys([*what.reference_to, *targets])))
    return with_fields(event, [new])


@dataclass(frozen=True, slots=True)
class Schema:
    """Every object of one org, looked up by name (case-insensitive) or key prefix."""

    objects: Mapping[str, ObjectDef]
    by_prefix: Mapping[str, ObjectDef] = field(default_factory=dict)

    @classmethod
    def build(cls, objects: Iterable[ObjectDef]) -> Schema:
        """Index the objects by lower-case name and key prefix."""
        objs = list(objects)
        return cls({o.name.lower(): o for o in objs}, {o.prefix: o for o in objs})

    def get(self, name: str) -> ObjectDef | None:
        """The object named `name` (case-insensitive), or None."""
        return self.objects.get(name.lower())

    def for_id(self, record_id: str) -> ObjectDef | None:
        """The object whose key prefix starts `record_id`, or None."""
        return self.by_prefix.get(record_id[:3])


def long_text(f: FieldDef) -> bool:
    """True for long text areas, which SOQL can neither filter nor sort on."""
    return f.type == "textarea" and f.length > 255


def describe_field(f: FieldDef) -> dict[str, Any]:
    """The describe JSON of one field."""
    is_ref = f.type == "reference"
    return {
        "name": f.name,
        "label": f.label,
        "type": f.type,
        "length": f.length,
        "custom": f.custom,
        "calculated": False,
        "createable": f.createable,
        "updateable": f.updateable,
        "nillable": f.nillable,
        "defaultedOnCreate": f.default is not None or f.type == "boolean",
        "defaultValue": f.default if f.default != "$user" else None,
        "externalId": f.external_id,
        "unique": f.unique,
        "idLookup": f.type == "id" or f.external_id or f.unique,
        "filterable": not long_text(f),
        "sortable": not long_text(f),
        "referenceTo": list(f.reference_to),
        "relationshipName": (f.name[:-2] if f.name.endswith("Id") else f.name[:-1] + "r") if is_ref else None,
        "polymorphicForeignKey": is_ref and len(f.reference_to) > 1,
        "picklistValues": [
            {"active": True, "defaultValue": v == f.default, "label": v, "value": v} for v in f.picklist
        ],
        "soapType": _SOAP_TYPES.get(f.type, "xsd:string"),
    }


_SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "int": "xsd:int",
    "double": "xsd:double",
    "currency": "xsd:double",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
}


def describe_object(obj: ObjectDef, api_version: str, full: bool) -> dict[str, Any]:
    """The describe JSON of one object (`full` adds fields and urls)."""
    base = f"/services/data/v{api_version}/sobjects/{obj.name}"
    out: dict[str, Any] = {
        "name": obj.name,
        "label": obj.label,
        "labelPlural": obj.label + "s",
        "keyPrefix": obj.prefix,
        "custom": obj.custom,
        "createable": True,
        "updateable": True,
        "deletable": True,
        "undeletable": True,
        "queryable": True,
        "retrieveable": True,
        "searchable": True,
        "triggerable": True,
        "replicateable": True,
        "layoutable": True,
        "urls": {"sobject": base, "describe": base + "/describe", "rowTemplate": base + "/{ID}"},
    }
    if full:
        out["fields"] = [describe_field(f) for f in obj.fields.values()]
        out["childRelationships"] = []
        out["recordTypeInfos"] = []
    return out
