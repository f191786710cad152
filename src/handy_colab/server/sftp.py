"""The embedded server's SFTP subsystem (also what OpenSSH's scp speaks by default).

asyncssh's SFTP server does the protocol and the file I/O; this class only makes it behave
like OpenSSH's sftp-server where clients notice: relative paths resolve in the session's
start directory, and the subsystem reports an exit status when it ends. Legacy ``scp -O``
is served by asyncssh directly (allow_scp in shell.SessionProcess), with no scp binary.
"""

from __future__ import annotations

import contextlib
import posixpath

import asyncssh


class SessionSFTPServer(asyncssh.SFTPServer):
    """asyncssh's SFTP server, with relative paths anchored at the session directory."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], cwd: bytes) -> None:
        super().__init__(chan)
        self._cwd = cwd

    def map_path(self, path: bytes) -> bytes:
        # By default a relative path resolves against this server process's cwd; clients
        # expect their home (sftp's "." and scp's "host:file").
        return posixpath.join(self._cwd, path)

    def exit(self) -> None:
        # OpenSSH's scp (SFTP mode) exits 1 unless the subsystem reports an exit status.
        with contextlib.suppress(OSError):
            self.channel.exit(0)
