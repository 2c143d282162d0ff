"""One gRPC Pub/Sub API for every org of the process: each call goes to the org its `tenantid` names.

The org's own service then checks the access token against that org alone, so a token of another org
gets the same UNAUTHENTICATED answer as a bad token; so does a tenant id no hosted org has. Each routed
call is listed in that org's request log (`GET /__emulator/requests`) as method `GRPC`, path
`/eventbus.v1.PubSub/<Method>`, status 200, or 401 when the token is no live session of the org.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc

from bridge.emulator.pubsub import PubSubService
from bridge.emulator.pubsub_wire import AUTH_ERROR, AUTH_MESSAGE, PubSubAbort, abort
from bridge.salesforce.pubsub_api import pubsub_api_pb2_grpc as pb_grpc

_SERVICE = "eventbus.v1.PubSub"


class PubSubRouter(pb_grpc.PubSubServicer):  # type: ignore[misc]
    """Routes Subscribe, GetSchema and GetTopic by `tenantid` (Publish answers UNIMPLEMENTED)."""

    def __init__(self) -> None:
        self._services: dict[str, PubSubService] = {}

    def add(self, org_id: str, service: PubSubService) -> None:
        """Serve the org with this 18-character id (also reachable by its 15-character form)."""
        self._services[org_id] = self._services[org_id[:15]] = service

    def routes(self) -> int:
        """How many orgs the router serves."""
        return len(set(map(id, self._services.values())))

    async def _route(self, context: grpc.aio.ServicerContext, method: str) -> PubSubService:
        metadata = {key: value for key, value in context.invocation_metadata() or ()}
        service = self._services.get(str(metadata.get("tenantid", "")))
        if service is None:
            exc = PubSubAbort(grpc.StatusCode.UNAUTHENTICATED, AUTH_ERROR, AUTH_MESSAGE)
            await abort(context, exc, str(uuid.uuid4()))
            raise exc  # abort() raises; this only tells the type checker
        state = service.state
        token = str(metadata.get("accesstoken", ""))
        status = 200 if token and state.tokens.session(token) is not None else 401
        state.requests.record(state.clock(), "GRPC", f"/{_SERVICE}/{method}", status, f"Bearer {token}")
        return service

    async def GetTopic(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """The tenant's GetTopic."""
        return await (await self._route(context, "GetTopic")).GetTopic(request, context)

    async def GetSchema(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """The tenant's GetSchema."""
        return await (await self._route(context, "GetSchema")).GetSchema(request, context)

    async def Subscribe(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """The tenant's Subscribe stream."""
        service = await self._route(context, "Subscribe")
        async for response in service.Subscribe(request_iterator, context):
            yield response
