"""What VS Code Remote-SSH does over its `ssh -T -D PORT -o ConnectTimeout=15 HOST bash`
session, modelled on the script and output its logs show (/work/shared/notes/ide-clients.md
section 1): the remote script probes the platform, asks the client for the server archive
when the remote has no internet (`trigger_server_download`), waits for `<archive>.done`,
unpacks it with tar, starts the server on 127.0.0.1 and reports it between
`<uuid>: start` and `<uuid>: end`; the client parses that block like the extension does.

The "server" in the archive is a small Python program (VS Code's is not available here): it
listens on 127.0.0.1 and greets one connection with the connection token, so the client can
prove that a SOCKS CONNECT through `-D` reached exactly that process.
"""

from __future__ import annotations

import io
import os
import re
import select
import shlex
import tarfile
import time
from pathlib import Path
from typing import IO

SERVER_SOURCE = '''#!/usr/bin/env python3
"""Stand-in for VS Code's server: greets one connection on 127.0.0.1 with its token."""
import argparse, os, socket
p = argparse.ArgumentParser()
p.add_argument("--connection-token-file", required=True)
p.add_argument("--port-file", required=True)
a = p.parse_args()
token = open(a.connection_token_file).read().strip()
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(4)
# Never outlive a client that gave up: the rig checks that nothing is left running.
s.settimeout(60)
with open(a.port_file + ".tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
os.rename(a.port_file + ".tmp", a.port_file)
c, _ = s.accept()
c.sendall(("vscode-server " + token + "\\n").encode())
c.close()
'''

# `{...}` fields are filled in by probe_script (shell-quoted); everything else is POSIX sh
# run by bash, as VS Code's is.
_SCRIPT = """\
UUID={uuid}
COMMIT={commit}
DEST={dest}
TOKEN={token}
echo "$UUID: running"
platform=$(uname -s | tr '[:upper:]' '[:lower:]')
arch=$(uname -m)
bitness=$(getconf LONG_BIT)
osReleaseId=
for f in /etc/os-release /usr/lib/os-release; do
    if [ -r "$f" ]; then osReleaseId=$(sed -n 's/^ID=//p' "$f" | tr -d '"'); break; fi
done
if command -v tar >/dev/null 2>&1; then tarFound=1; else tarFound=0; fi
mkdir -p "$DEST"
ARCHIVE="$DEST/vscode-cli-$COMMIT.tar.gz"
echo trigger_server_download
echo "artifact==cli-alpine-x64=="
echo "destFolder==$DEST/=="
echo "destFolder2==/vscode-cli-$COMMIT.tar.gz=="
echo trigger_server_download_end
echo "Waiting for client to transfer server archive..."
i=0
while [ ! -f "$ARCHIVE.done" ] && [ $i -lt 600 ]; do i=$((i+1)); sleep 0.1; done
if tar -xzf "$ARCHIVE" -C "$DEST" </dev/null; then unpacked=success; else unpacked=error; fi
(umask 077; printf '%s\\n' "$TOKEN" > "$DEST/token")
python3 "$DEST/vscode-server/bin/code-server" --connection-token-file "$DEST/token" \\
    --port-file "$DEST/port" </dev/null >/dev/null 2>&1 &
SERVER_PID=$!
j=0
while [ ! -s "$DEST/port" ] && [ $j -lt 100 ]; do j=$((j+1)); sleep 0.1; done
echo "$UUID: start"
echo "exitCode==0=="
echo "listeningOn==127.0.0.1:$(cat "$DEST/port" 2>/dev/null)=="
echo "osReleaseId==$osReleaseId=="
echo "arch==$arch=="
echo "bitness==$bitness=="
echo "platform==$platform=="
echo "tar==$tarFound=="
echo "unpackResult==$unpacked=="
echo "didLocalDownload==1=="
echo "serverPid==$SERVER_PID=="
echo "$UUID: end"
"""


def probe_script(uuid: str, commit: str, dest: str, token: str) -> str:
    q = shlex.quote
    return _SCRIPT.format(uuid=q(uuid), commit=q(commit), dest=q(dest), token=q(token))


def server_archive(folder: Path, commit: str) -> Path:
    """`vscode-cli-<commit>.tar.gz` holding the stand-in server, and its empty `.done`."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / f"vscode-cli-{commit}.tar.gz"
    data = SERVER_SOURCE.encode()
    info = tarfile.TarInfo("vscode-server/bin/code-server")
    info.size, info.mode = len(data), 0o755
    # Padding makes the copy span many SFTP/scp packets, as the real ~20 MB archive does.
    pad = os.urandom(3 * 1024 * 1024)
    pad_info = tarfile.TarInfo("vscode-server/node_modules.bin")
    pad_info.size = len(pad)
    with tarfile.open(archive, "w:gz") as tar:
        tar.addfile(info, io.BytesIO(data))
        tar.addfile(pad_info, io.BytesIO(pad))
    Path(f"{archive}.done").write_bytes(b"")
    return archive


_FIELD = re.compile(r"^(\w+)==(.*)==$")


def _fields(block: str) -> dict[str, str]:
    out = {}
    for line in block.splitlines():
        m = _FIELD.match(line.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


def parse_result(text: str, uuid: str) -> dict[str, str]:
    """The `key==value==` lines between `<uuid>: start` and `<uuid>: end`, as the client reads
    them (anything the shell prints around the block, e.g. a motd, is ignored)."""
    start, end = f"{uuid}: start", f"{uuid}: end"
    assert start in text and end in text, f"no {start!r} ... {end!r} block in {text!r}"
    return _fields(text.split(start, 1)[1].split(end, 1)[0])


def parse_download_request(text: str) -> dict[str, str]:
    """The `trigger_server_download` block: what to copy where."""
    begin, end = "trigger_server_download\n", "trigger_server_download_end"
    assert begin in text and end in text, f"no download request in {text!r}"
    return _fields(text.split(begin, 1)[1].split(end, 1)[0])


class Output:
    """A child's stdout read as it comes, with deadlines (the session stays open meanwhile)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.fd = stream.fileno()
        self.text = ""

    def until(self, marker: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while marker not in self.text:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {marker!r} within {timeout}s; got {self.text!r}")
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise AssertionError(f"the session ended before {marker!r}: {self.text!r}")
                self.text += chunk.decode(errors="replace")
        return self.text
