"""The bridge's filtered change-event channel: a custom channel whose members deliver only what concerns it.

Salesforce (cdc-filter-tooling-api-add-filter.html, cdc-filters.html, cdc-filter-event-allocations.html):
a custom `data` channel (PlatformEventChannel) gets one member (PlatformEventChannelMember) per entity, each
with an optional filter expression over entity fields and scalar ChangeEventHeader fields; the channel is
`/data/<Name>__chn`; the delivered-event allocation counts only what passes the filters; entity fields named
in a filter are enriched into the event when not empty.

Each member's filter drops the bridge's own changes (`ChangeEventHeader.commitUser` is the integration user)
and keeps only records the bridge owns (its External ID field is set). Change types that carry no record
fields cannot match an entity-field condition: DELETE events carry only the header in CometD, and gap and
overflow events carry no fields at all; they are let through by change type (an OR on
`ChangeEventHeader.changeType`), as one member per entity and channel is all Salesforce allows. Leads matter
only once converted (`IsConverted = true`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge import sfid
from bridge.config import SalesforceObjectNames
from bridge.errors import PermanentError
from bridge.records.outbound import RecordError
from bridge.salesforce.errors import classify_response
from bridge.salesforce.payloads import soql_literal
from bridge.salesforce.rest import SalesforceClient

CHANNEL, MEMBER = "PlatformEventChannel", "PlatformEventChannelMember"
# Change types whose events carry no entity field a filter could test.
FIELDLESS_CHANGE_TYPES = (
    "DELETE",
    "GAP_CREATE",
    "GAP_UPDATE",
    "GAP_DELETE",
    "GAP_UNDELETE",
    "GAP_OVERFLOW",
)


@dataclass(frozen=True, slots=True)
class MemberSpec:
    """One channel member as the bridge wants it."""

    full_name: str  # "MogliBridge_chn_EventChangeEvent"
    selected_entity: str  # "EventChangeEvent"
    filter_expression: str


@dataclass(frozen=True, slots=True)
class ChannelCheck:
    """Whether the custom channel is usable; `reason` says what is missing when it is not."""

    path: str | None  # "/data/MogliBridge__chn" when every member is in place
    reason: str


def change_event_name(sobject: str) -> str:
    """`Event` -> `EventChangeEvent`; `Mogli_Event__c` -> `Mogli_Event__ChangeEvent`."""
    return f"{sobject[:-3]}__ChangeEvent" if sobject.endswith("__c") else f"{sobject}ChangeEvent"


def member_specs(
    names: SalesforceObjectNames, channel_name: str, integration_user_id: str
) -> tuple[MemberSpec, ...]:
    """The channel's members: Events and Mogli Events the bridge owns, converted Leads; never its own."""
    user = soql_literal(sfid.to18(integration_user_id))
    fieldless = ", ".join(soql_literal(t) for t in FIELDLESS_CHANGE_TYPES)
    not_ours = f"ChangeEventHeader.commitUser != {user}"
    kinds = f"ChangeEventHeader.changeType IN ({fieldless})"
    wanted = {
        "Event": f"{names.booking_external_id_field} != null",
        names.mogli_event_object: f"{names.link_external_id_field} != null",
        "Lead": "IsConverted = true",
    }
    prefix = channel_name[: -len("__chn")] + "_chn_"
    return tuple(
        MemberSpec(
            prefix + change_event_name(sobject),
            change_event_name(sobject),
            f"{not_ours} AND ({field} OR {kinds})",
        )
        for sobject, field in wanted.items()
    )


async def ensure_channel(
    client: SalesforceClient, names: SalesforceObjectNames, channel_name: str, integration_user_id: str
) -> list[str]:
    """Create or update the channel and its members (idempotent); what was done, one line each. Whatever is
    missing is written in one Tooling composite call, all or none: a new org's channel costs two calls (the
    lookup and the composite) instead of one per record."""
    lines: list[str] = []
    writes: list[dict[str, Any]] = []
    tooling = f"{client.data_path}/tooling/sobjects"
    existing: dict[str, Mapping[str, Any]] = {}  # a channel about to be created has no members
    channel_id = await _channel_id(client, channel_name)
    if channel_id is None:
        body = {"FullName": channel_name, "Metadata": {"channelType": "data", "label": "Mogli bridge"}}
        writes.append({"method": "POST", "url": f"{tooling}/{CHANNEL}", "body": body})
        lines.append(f"channel {channel_name} created")
    else:
        existing = await _members(client, channel_id)
    for spec in member_specs(names, channel_name, integration_user_id):
        found = existing.get(spec.selected_entity.lower())
        if found is None:
            metadata = {
                "eventChannel": channel_name,
                "selectedEntity": spec.selected_entity,
                "filterExpression": spec.filter_expression,
            }
            body = {"FullName": spec.full_name, "Metadata": metadata}
            writes.append({"method": "POST", "url": f"{tooling}/{MEMBER}", "body": body})
            lines.append(f"member {spec.selected_entity} created")
        elif found.get("FilterExpression") != spec.filter_expression:
            body = {"Metadata": {"filterExpression": spec.filter_expression}}
            writes.append({"method": "PATCH", "url": f"{tooling}/{MEMBER}/{found['Id']}", "body": body})
            lines.append(f"member {spec.selected_entity} filter updated")
        else:
            lines.append(f"member {spec.selected_entity} up to date")
    if writes:
        await _write_all_or_none(client, writes)
    return lines


async def _write_all_or_none(client: SalesforceClient, writes: Sequence[Mapping[str, Any]]) -> None:
    """One `POST /tooling/composite` with `allOrNone`; the first real failure raised as the REST call's
    error would be (the others are PROCESSING_HALTED)."""
    requests = [{**write, "referenceId": f"write{i}"} for i, write in enumerate(writes)]
    reply = await client.tooling(
        "POST", "/composite", json_body={"allOrNone": True, "compositeRequest": requests}
    )
    responses = reply.get("compositeResponse") if isinstance(reply, Mapping) else None
    if not isinstance(responses, list) or len(responses) != len(requests):
        raise PermanentError("the Tooling composite answer has no result per subrequest", code=None)
    failed = [
        r for r in responses if not isinstance(r, Mapping) or int(r.get("httpStatusCode") or 500) >= 400
    ]
    if not failed:
        return
    first = next((r for r in failed if isinstance(r, Mapping) and not _halted(r)), failed[0])
    body = first.get("body") if isinstance(first, Mapping) else None
    status = int(first.get("httpStatusCode") or 500) if isinstance(first, Mapping) else 500
    outcome = classify_response(status, body, config_key="sync.channel")
    if isinstance(outcome, RecordError):
        raise PermanentError(f"{outcome.code}: {outcome.message}", code=outcome.code)
    raise outcome


def _halted(response: Mapping[str, Any]) -> bool:
    body = response.get("body")
    return isinstance(body, list) and any(
        isinstance(e, Mapping) and e.get("errorCode") == "PROCESSING_HALTED" for e in body
    )


def provisioned(channel_name: str) -> ChannelCheck:
    """What `check_channel` finds right after `ensure_channel` succeeded: the channel with every member."""
    return ChannelCheck(f"/data/{channel_name}", f"custom channel {channel_name} with filtered members")


async def check_channel(
    client: SalesforceClient, names: SalesforceObjectNames, channel_name: str, integration_user_id: str
) -> ChannelCheck:
    """Whether the channel exists with every member and filter `setup` would give it."""
    channel_id = await _channel_id(client, channel_name)
    if channel_id is None:
        return ChannelCheck(None, f"custom channel {channel_name} does not exist (run `mogli-bridge setup`)")
    existing = await _members(client, channel_id)
    for spec in member_specs(names, channel_name, integration_user_id):
        found = existing.get(spec.selected_entity.lower())
        if found is None or found.get("FilterExpression") != spec.filter_expression:
            state = "lacks" if found is None else "has another filter on"
            return ChannelCheck(
                None,
                f"custom channel {channel_name} {state} member {spec.selected_entity} "
                "(run `mogli-bridge setup`)",
            )
    return provisioned(channel_name)


async def _channel_id(client: SalesforceClient, channel_name: str) -> str | None:
    developer_name = soql_literal(channel_name[: -len("__chn")])
    soql = f"SELECT Id, DeveloperName FROM {CHANNEL} WHERE DeveloperName = {developer_name}"  # noqa: S608
    rows = _records(await client.tooling("GET", "/query", params={"q": soql}))
    return str(rows[0]["Id"]) if rows else None


async def _members(client: SalesforceClient, channel_id: str) -> dict[str, Mapping[str, Any]]:
    """The channel's members by lower-case selected entity."""
    fields = "Id, DeveloperName, SelectedEntity, FilterExpression, EventChannel"
    soql = f"SELECT {fields} FROM {MEMBER} WHERE EventChannel = {soql_literal(channel_id)}"  # noqa: S608
    rows = _records(await client.tooling("GET", "/query", params={"q": soql}))
    return {str(row.get("SelectedEntity", "")).lower(): row for row in rows}


def _records(body: Any) -> Sequence[Mapping[str, Any]]:
    records = body.get("records") if isinstance(body, Mapping) else None
    return [r for r in records or () if isinstance(r, Mapping) and r.get("Id")]
