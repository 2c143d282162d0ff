"""The emulator as a real process serving the Pub/Sub API, and a plain gRPC client built from the stubs.

`pubsub_emulator(tmp_path, tls=...)` runs `python -m bridge emulator --port 0 --grpc-port 0` and reads both
bound ports from what it prints. `PubSubOrg` holds the REST side (token, records, control API) and opens
gRPC channels with the call metadata a Salesforce client sends (`accesstoken`, `instanceurl`, `tenantid`).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import ssl
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import fastavro
import grpc

from bridge.salesforce.pubsub_api import pubsub_api_pb2 as pb
from bridge.salesforce.pubsub_api import pubsub_api_pb2_grpc as pb_grpc

API = "v60.0"
EVENTS = "/data/EventChangeEvent"
# A liveness bound for waiting on one response; events are pushed at once, this only stops a hang.
BOUND_SECONDS = 20
_START_BOUND_SECONDS = 60


@dataclass
class PubSubOrg:
    """A running emulator process: its REST URL, its gRPC port, an HTTP session and the org's token."""

    url: str
    grpc_port: int
    ca_file: Path | None
    http: aiohttp.ClientSession
    token: str = ""
    org_id: str = ""

    async def login(self) -> str:
        """A password-grant access token; remembers it and the org id."""
        form = {
            "grant_type": "password",
            "client_id": "test-client",
            "client_secret": "test-secret",
            "username": "bridge@example.com",
            "password": "emulator",
        }
        async with self.http.post(self.url + "/services/oauth2/token", data=form) as response:
            body = await response.json()
            assert response.status == 200, body
        self.token = str(body["access_token"])
        self.org_id = str(body["id"]).split("/")[-2]
        return self.token

    async def rest(self, method: str, path: str, json: Any = None) -> tuple[int, Any]:
        """A REST call with the org's token; answers status and decoded body."""
        headers = {"Authorization": f"Bearer {self.token}"}
        url = f"{self.url}/services/data/{API}{path}"
        async with self.http.request(method, url, json=json, headers=headers) as response:
            body = await response.json() if response.content_type == "application/json" else None
            return response.status, body

    async def control(self, method: str, path: str, json: Any = None) -> Any:
        """A control-API call under `/__emulator`; asserts success."""
        async with self.http.request(method, self.url + "/__emulator" + path, json=json) as response:
            body = await response.json()
            assert response.status < 300, (response.status, body)
            return body

    async def create_event(self, subject: str = "Intro call") -> str:
        """Create an Event through REST; answers its id."""
        body = {
            "Subject": subject,
            "StartDateTime": "2026-06-01T10:00:00Z",
            "EndDateTime": "2026-06-01T10:30:00Z",
        }
        status, reply = await self.rest("POST", "/sobjects/Event", body)
        assert status == 201, reply
        return str(reply["id"])

    def metadata(self, token: str | None = None) -> tuple[tuple[str, str], ...]:
        """The call metadata of a Salesforce Pub/Sub client."""
        return (
            ("accesstoken", self.token if token is None else token),
            ("instanceurl", self.url),
            ("tenantid", self.org_id),
        )

    @asynccontextmanager
    async def stub(self) -> AsyncIterator[pb_grpc.PubSubStub]:
        """A PubSub stub on a fresh channel (TLS with the emulator's CA when it serves TLS)."""
        target = f"localhost:{self.grpc_port}"
        if self.ca_file is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=self.ca_file.read_bytes())
            channel = grpc.aio.secure_channel(target, credentials)
        else:
            channel = grpc.aio.insecure_channel(target)
        try:
            yield pb_grpc.PubSubStub(channel)
        finally:
            await channel.close()


class Requests:
    """The client side of a Subscribe call: FetchRequests a test sends when it wants."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[pb.FetchRequest | None] = asyncio.Queue()

    def send(self, request: pb.FetchRequest) -> None:
        """Queue one FetchRequest."""
        self._queue.put_nowait(request)

    def close(self) -> None:
        """End the request stream."""
        self._queue.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[pb.FetchRequest]:
        while (request := await self._queue.get()) is not None:
            yield request


def org_file_with(tmp_path: Path, streaming_lines: str) -> Path:
    """The default org file with extra lines in its [streaming] table."""
    text = resources.files("bridge.emulator").joinpath("default_org.toml").read_text("utf-8")
    assert "\n[streaming]\n" in text
    path = tmp_path / "org.toml"
    path.write_text(text.replace("\n[streaming]\n", f"\n[streaming]\n{streaming_lines}\n", 1), "utf-8")
    return path


def fetch(
    topic: str = EVENTS, *, preset: int = pb.LATEST, replay_id: bytes = b"", num: int = 100
) -> pb.FetchRequest:
    """A FetchRequest."""
    return pb.FetchRequest(topic_name=topic, replay_preset=preset, replay_id=replay_id, num_requested=num)


async def next_response(call: Any) -> pb.FetchResponse:
    """The next FetchResponse of a Subscribe call, bounded."""
    async with asyncio.timeout(BOUND_SECONDS):
        response = await call.read()
    assert response is not grpc.aio.EOF, "the stream ended"
    return response  # type: ignore[no-any-return]


async def events_until(call: Any, count: int) -> list[pb.ConsumerEvent]:
    """Read responses until `count` events arrived (keepalives skipped)."""
    events: list[pb.ConsumerEvent] = []
    while len(events) < count:
        events.extend((await next_response(call)).events)
    return events


async def decode(stub: pb_grpc.PubSubStub, org: PubSubOrg, event: pb.ConsumerEvent) -> dict[str, Any]:
    """The Avro payload of a delivered event, decoded with the schema fetched by its id."""
    info = await stub.GetSchema(pb.SchemaRequest(schema_id=event.event.schema_id), metadata=org.metadata())
    schema = fastavro.parse_schema(json.loads(info.schema_json))
    return dict(fastavro.schemaless_reader(io.BytesIO(event.event.payload), schema, schema))


async def wait_subscribed(org: PubSubOrg, streams: int = 1) -> None:
    """Until the emulator counts `streams` open Subscribe calls (a LATEST subscription starts there)."""
    async with asyncio.timeout(20):
        while True:
            if (await org.control("GET", "/pubsub/stats"))["open_streams"] >= streams:
                return
            await asyncio.sleep(0.05)


def trailer(error: grpc.aio.AioRpcError, key: str) -> str:
    """One trailing-metadata value of a failed call ('' when absent)."""
    for name, value in error.trailing_metadata() or ():
        if name == key:
            return str(value)
    return ""


@asynccontextmanager
async def pubsub_emulator(
    tmp_path: Path, *, tls: bool = False, org_file: Path | None = None
) -> AsyncIterator[PubSubOrg]:
    """Run the emulator process with the Pub/Sub API; stop it (SIGTERM) afterwards."""
    args = [sys.executable, "-m", "bridge", "emulator", "--port", "0", "--grpc-port", "0"]
    if org_file is not None:
        args += ["--org", str(org_file)]
    ca_file = tmp_path / "emulator-ca.pem" if tls else None
    if ca_file is not None:
        args += ["--tls", "--ca-out", str(ca_file)]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    http: aiohttp.ClientSession | None = None
    drain: asyncio.Task[None] | None = None
    try:
        url, grpc_port = await _read_addresses(proc)
        drain = asyncio.create_task(_drain(proc))  # its JSON log lines must not fill the pipe
        context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))
        org = PubSubOrg(url=url, grpc_port=grpc_port, ca_file=ca_file, http=http)
        await org.login()
        yield org
    finally:
        if http is not None:
            await http.close()
        if proc.returncode is None:
            proc.terminate()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(20):
                    await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if drain is not None:
            await drain


async def _drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    while await proc.stdout.readline():
        pass


async def _read_addresses(proc: asyncio.subprocess.Process) -> tuple[str, int]:
    """The REST URL and gRPC port the process prints once it listens."""
    assert proc.stdout is not None
    url, port = "", 0
    async with asyncio.timeout(_START_BOUND_SECONDS):
        while not (url and port):
            line = (await proc.stdout.readline()).decode()
            assert line, "the emulator exited before it listened"
            words: Sequence[str] = line.split()
            if line.startswith("Salesforce emulator listening on"):
                url = words[4]
            elif line.startswith("Pub/Sub API listening on"):
                port = int(words[-1].rsplit(":", 1)[1])
    return url, port
