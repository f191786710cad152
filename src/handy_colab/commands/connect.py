"""`connect`: the laptop side."""

from __future__ import annotations

import sys
from pathlib import Path

from ..client.connect import ConnectResult, connect
from ..errors import AliasConflictError


def cmd_connect(
    source: str,
    identity: str | None,
    ssh_config: str | None,
    known_hosts: str | None,
    name: str | None,
    cloudflared_access: bool = False,
    client_os: str | None = None,
    vscode: bool = True,
    alias: str | None = None,
    replace: bool = False,
) -> int:
    def run(replace: bool) -> ConnectResult:
        return connect(
            Path(source),
            identity=Path(identity) if identity else None,
            ssh_config=Path(ssh_config) if ssh_config else None,
            known_hosts=Path(known_hosts) if known_hosts else None,
            name=name,
            cloudflared_access=cloudflared_access,
            client_os=client_os,
            vscode=vscode,
            alias=alias,
            replace=replace,
        )

    try:
        res = run(replace)
    except AliasConflictError as exc:
        if replace or not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise
        # In a terminal the user can say so at once, as ssh's own host-key prompt lets them.
        print(f"handy-colab: {exc}", file=sys.stderr)
        # The question goes where the error went: stdout may be a pipe.
        print("Replace it? Only if you trust this descriptor [y/N] ", end="", file=sys.stderr)
        sys.stderr.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            raise
        res = run(True)
    print(f"Wrote Host '{res.name}' to {res.config_file}")
    print(f"Pinned its host key in {res.known_hosts}")
    if res.include_in is not None:
        print(f"{res.include_in} includes it")
    if res.quick and res.follows is None:
        print(
            "This quick tunnel's hostname changes when its tunnel restarts, and a pasted line "
            "cannot follow that: run connect again with the new line then (or connect from the "
            "descriptor in a synced folder, which is followed)"
        )
    if res.follows is not None:
        print(
            f"Follows the quick tunnel's hostname through {res.follows} at each connection: "
            f"keep that file synced (e.g. Google Drive for desktop); from a one-off copy, run "
            f"connect again after the runtime restarts"
        )
    for note in res.notes:
        print(note)
    for bak in res.backups:
        print(f"Backup of the previous file: {bak}")
    how = f"ssh -F {res.config_file} {res.name}" if res.include_in is None else f"ssh {res.name}"
    print(f"Now: {how}")
    return 0
