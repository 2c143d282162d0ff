"""What a Pub/Sub API client sees of the emulator besides payloads: opaque replay ids and error statuses.

Errors end a call with the documented gRPC status and a Salesforce `error-code` trailer beside an `rpc-id`
trailer; the rpc id also ends the message after "rpcId: " (pub-sub-api handling-errors.html).
"""

from __future__ import annotations

import grpc
import structlog

log = structlog.get_logger(__name__)

AUTH_ERROR = "sfdc.platform.eventbus.grpc.service.auth.error"
REPLAY_ID_CORRUPTED = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
REPLAY_ID_INVALID = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.validation.failed"
EVENTS_INVALID = "sfdc.platform.eventbus.grpc.subscription.fetch.requested.events.invalid"
# The delivery allocation is documented with this code; the gRPC status beside it is [mem].
LIMIT_EXCEEDED = "sfdc.platform.eventbus.grpc.subscription.limit.exceeded"
# [mem] not re-verified against the error table: the codes (status NOT_FOUND) for a topic the org does
# not have and for an unknown schema id.
TOPIC_NOT_FOUND = "sfdc.platform.eventbus.grpc.topic.not.found"
SCHEMA_NOT_FOUND = "sfdc.platform.eventbus.grpc.schema.not.found"


class PubSubAbort(Exception):
    """A documented error that ends the call: gRPC status, Salesforce error code and message."""

    def __init__(self, status: grpc.StatusCode, error_code: str, message: str) -> None:
        super().__init__(f"{error_code}: {message}")
        self.status, self.error_code, self.message = status, error_code, message


AUTH_MESSAGE = "An authentication exception occurred. Provide valid authentication via metadata headers."


def encode_replay_id(replay_id: int) -> bytes:
    """The bus's replay id as the opaque bytes a client sees."""
    return max(replay_id, 0).to_bytes(8, "big")


def decode_replay_id(raw: bytes) -> int:
    """The bus's replay id from a client's bytes; PubSubAbort for bytes that are not one of ours."""
    if len(raw) != 8:
        raise replay_id_corrupted()
    return int.from_bytes(raw, "big")


def replay_id_corrupted() -> PubSubAbort:
    """The documented error of a replay id that is invalid or has aged out of retention."""
    message = "The Replay ID validation failed. Ensure that the Replay ID is valid."
    return PubSubAbort(grpc.StatusCode.INVALID_ARGUMENT, REPLAY_ID_CORRUPTED, message)


def limit_exceeded() -> PubSubAbort:
    """The documented error of a used-up daily delivery allocation."""
    message = "You have exceeded the event delivery limit for your org."
    return PubSubAbort(grpc.StatusCode.RESOURCE_EXHAUSTED, LIMIT_EXCEEDED, message)


async def abort(context: grpc.aio.ServicerContext, exc: PubSubAbort, rpc_id: str) -> None:
    """End the call with the error's status, its message with the rpc id, and the trailers."""
    trailers: tuple[tuple[str, str], ...] = (("rpc-id", rpc_id),)
    if exc.error_code:
        trailers = (("error-code", exc.error_code), *trailers)
    log.info("emulator.pubsub.aborted", status=exc.status.name, error_code=exc.error_code)
    await context.abort(exc.status, f"{exc.message} rpcId: {rpc_id}", trailing_metadata=trailers)
