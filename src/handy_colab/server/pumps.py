"""The embedded server's data path: copying between a child's fds and an SSH channel.

A session's stdin, stdout and stderr (or its PTY master) are non-blocking fds read and
written straight from the event loop, in large chunks, with asyncssh's channel flow control
as the only back-pressure: this is where the server's throughput is won or lost (see
bench/bench_server_loopback.py), so it avoids threads and per-packet work.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os

import asyncssh

# Reads of this size let one pipe read become a whole window's worth of channel packets;
# the per-read cost is then paid once per ~32 packets instead of once per packet.
CHUNK = 1 << 20
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, named only from Python 3.10 on Linux


def grow_pipe(fd: int) -> None:
    # 1 MiB is the default unprivileged maximum; fewer, larger reads and writes.
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, CHUNK)


async def _wait_fd(fd: int, writable: bool) -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    if writable:
        loop.add_writer(fd, ready)
    else:
        loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        if writable:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def fd_to_channel(fd: int, writer: asyncssh.SSHWriter[bytes], close: bool) -> None:
    """Copy a child's output to the client until EOF (EIO: a PTY nobody holds any more).

    With ``close``, the fd is closed however this ends: once the client is gone the child
    gets EPIPE/SIGPIPE on its next write, as under sshd, instead of blocking on a full pipe.
    """
    try:
        while True:
            try:
                data = os.read(fd, CHUNK)
            except BlockingIOError:
                await _wait_fd(fd, writable=False)
                continue
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return
                raise
            if not data:
                return
            writer.write(data)
            # Returns at once unless the channel's window or buffer is full: flow control
            # is asyncssh's, and a slow client simply stops us reading the pipe.
            await writer.drain()
    finally:
        if close:
            with contextlib.suppress(OSError):
                os.close(fd)


async def channel_to_fd(reader: asyncssh.SSHReader[bytes], fd: int, close: bool) -> None:
    """Copy the client's input to the child; EOF from the client closes the child's stdin."""
    broken = False
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                return
            if broken:
                # The child closed its stdin: keep the channel flowing, drop the data.
                continue
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:
                    await _wait_fd(fd, writable=True)
                except OSError:
                    broken = True
                    break
    finally:
        if close:
            with contextlib.suppress(OSError):
                os.close(fd)
