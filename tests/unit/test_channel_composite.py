"""How `ensure_channel` reads the Tooling Composite's answer: the failure that caused an allOrNone rollback is
the one raised, never a PROCESSING_HALTED neighbour; an answer without a result per write is an error too."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.config import SalesforceObjectNames
from bridge.errors import BridgeError
from bridge.salesforce.channels import ensure_channel

HALTED = [{"errorCode": "PROCESSING_HALTED", "message": "rolled back"}]
REFUSED = [{"errorCode": "FIELD_INTEGRITY_EXCEPTION", "message": "LeadChangeEvent is not enabled"}]


class ToolingOnly:
    """Answers the channel lookup (no channel) and the composite with a fixed answer; records the calls."""

    data_path = "/services/data/v60.0"

    def __init__(self, composite: Any) -> None:
        self.composite = composite
        self.calls: list[tuple[str, str, Any]] = []

    async def tooling(self, method: str, path: str, *, params: Any = None, json_body: Any = None) -> Any:
        self.calls.append((method, path, json_body))
        if path == "/query":
            return {"records": []}
        return self.composite


def _answer(*statuses_and_bodies: tuple[int, Any]) -> dict[str, Any]:
    return {
        "compositeResponse": [
            {"httpStatusCode": status, "body": body, "referenceId": f"write{i}"}
            for i, (status, body) in enumerate(statuses_and_bodies)
        ]
    }


async def test_the_failure_behind_the_rollback_is_raised() -> None:
    client = ToolingOnly(_answer((400, HALTED), (400, HALTED), (400, HALTED), (400, REFUSED)))
    with pytest.raises(BridgeError, match="FIELD_INTEGRITY_EXCEPTION"):
        await ensure_channel(client, SalesforceObjectNames(), "MogliBridge__chn", "005000000000001AAA")  # type: ignore[arg-type]
    (_, _, body) = client.calls[-1]
    assert body["allOrNone"] is True and len(body["compositeRequest"]) == 4  # the channel and 3 members


async def test_an_answer_without_a_result_per_write_is_an_error() -> None:
    client = ToolingOnly(_answer((201, {"id": "0YL000000000001AAA"})))
    with pytest.raises(BridgeError, match="no result per subrequest"):
        await ensure_channel(client, SalesforceObjectNames(), "MogliBridge__chn", "005000000000001AAA")  # type: ignore[arg-type]


async def test_every_write_done_gives_the_lines() -> None:
    created = {"id": "0YL000000000001AAA", "success": True}
    client = ToolingOnly(_answer(*[(201, created)] * 4))
    lines = await ensure_channel(client, SalesforceObjectNames(), "MogliBridge__chn", "005000000000001AAA")  # type: ignore[arg-type]
    assert lines[0] == "channel MogliBridge__chn created" and len(lines) == 4
