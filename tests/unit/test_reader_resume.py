"""The replication reader never re-arms a stream that already failed (a server crash closed its socket)."""

from __future__ import annotations

import asyncio
import socket

from bridge.config import SourceSettings
from bridge.source.reader import ReplicationSource


async def test_a_failed_stream_is_not_resumed_on_its_dead_socket() -> None:
    """Between a read that failed and the reconnect, the consumer taking a queued transaction must not add
    the dead socket back to the loop (EBADF there used to stop the daemon with a fatal OSError)."""
    source = ReplicationSource(SourceSettings(), resume_lsn=None)
    left, right = socket.socketpair()
    dead_fd = left.fileno()
    left.close()
    right.close()
    failure: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
    failure.set_result(ConnectionError("server closed the connection"))
    source._cur, source._fd, source._failure, source._reading = object(), dead_fd, failure, False
    source._maybe_resume()
    assert source._reading is False


async def test_a_socket_that_died_before_the_resume_fails_the_stream_instead() -> None:
    """A socket closed under a live stream (nothing read yet) turns into the stream's failure, which the
    reconnect loop handles, rather than an exception raised into the consumer."""
    source = ReplicationSource(SourceSettings(), resume_lsn=None)
    left, right = socket.socketpair()
    dead_fd = left.fileno()
    left.close()
    right.close()
    failure: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
    source._cur, source._fd, source._failure, source._reading = object(), dead_fd, failure, False
    source._maybe_resume()
    assert source._reading is False
    assert failure.done() and isinstance(failure.result(), OSError)
