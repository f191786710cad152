"""The connection block ``up`` prints: how to reach the runtime from the laptop, by paste,
by the synced descriptor, by hand, and from VS Code and PyCharm.
"""

from __future__ import annotations

from pathlib import Path

from ..descriptor import Descriptor
from ..keys import fingerprint
from .pins import known_hosts_lines
from .pycharm import pycharm_settings
from .sshconfig import render_host_blocks


def ssh_command(desc: Descriptor, identity: str | None = None) -> str:
    """The one ssh command that reaches the runtime with no config written (the block's "by
    hand" line): the route's ProxyCommand, or straight to the public address."""
    ident = f"-i {identity} " if identity else ""
    if desc.cloudflared:
        return (
            f"ssh {ident}-o 'ProxyCommand=handy-colab proxy --ws {desc.hostname}' "
            f"-o HostKeyAlias={desc.name} {desc.user}@{desc.name}"
        )
    if desc.mode == "public":
        port = f"-p {desc.port} " if desc.port != 22 else ""
        return f"ssh {ident}{port}{desc.user}@{desc.host}"
    if desc.route == "frp":
        profile = f"~/.ssh/handy-colab-{desc.name}.frp.json"
        return (
            f"ssh {ident}-o 'ProxyCommand=handy-colab proxy --frp {profile}' "
            f"-o HostKeyAlias={desc.name} {desc.user}@{desc.name}"
        )
    relay = f"{desc.relay_user}@{desc.relay_host}:{desc.relay_port}"
    return (
        f"ssh {ident}-o 'ProxyCommand=handy-colab proxy {relay} {desc.socket_path}' "
        f"-o HostKeyAlias={desc.name} {desc.user}@{desc.name}"
    )


# The ProxyCommand programs as the printed block names them (connect writes full paths).
_PRINTED_LAUNCHERS = {"cloudflared": "handy-colab proxy --ws", "frp": "handy-colab proxy --frp"}


def render_block(desc: Descriptor, descriptor_path: Path | None, identity: str | None) -> str:
    """The human-readable connection block `up` prints."""
    fp = ", ".join(fingerprint(k) for k in desc.host_keys)
    workdir = desc.start_dir or "~"
    src = str(descriptor_path) if descriptor_path else "DIR/connections/NAME.json"
    ident = f" --identity {identity}" if identity else ""
    lines = [
        f"Runtime '{desc.name}' is reachable {desc.reach}.",
        f"Host key fingerprint: {fp}",
        "",
        "Easiest: on the laptop, paste this one line (the descriptor itself, no secrets):",
        f"    handy-colab connect '{desc.to_paste()}'"
        + (f" --identity {identity}" if identity else ""),
        f"    ssh {desc.name}",
        "or, with the config folder synced to the laptop (e.g. Google Drive for desktop):",
        f"    handy-colab connect {src}{ident}",
        "",
        "Or by hand (check that the fingerprint above is what ssh shows):",
        f"    {ssh_command(desc, identity)}",
        "",
        "~/.ssh/config block (handy-colab connect writes it, with the host key pinned):",
    ]
    lines += [
        "    " + ln
        for ln in render_host_blocks(
            desc,
            identity,
            "~/.ssh/handy-colab_known_hosts",
            launcher=_PRINTED_LAUNCHERS.get(desc.route, "handy-colab proxy"),
        )
        .rstrip()
        .splitlines()
    ]
    lines += ["", "with these lines in ~/.ssh/handy-colab_known_hosts:"]
    lines += ["    " + ln for group in known_hosts_lines(desc).values() for ln in group]
    key = identity or desc.identity_hint or "the private key of one of the authorized keys"
    if desc.mode == "quick":
        lines[3:3] = [
            "A quick tunnel gets a new hostname whenever it restarts: a laptop set up by "
            "`connect` from the",
            "descriptor in a synced folder follows it; from the pasted line or a one-off copy, "
            "run connect again.",
            "",
        ]
    pc = pycharm_settings(desc, key)
    lines += [
        "",
        f"VS Code:  handy-colab code {desc.name.lower()}   "
        f"(or: code --remote ssh-remote+{desc.name.lower()} {workdir})",
        "PyCharm:  Settings > Python Interpreter > Add Interpreter > On SSH",
    ]
    if "First" in pc:
        lines.append(f"          first, on the laptop (keep it running): {pc['First']}")
    lines += [
        f"          host {pc['Host']}, port {pc['Port']}, user {pc['User']}, key {pc['Key']}",
        f"          interpreter {pc['Interpreter']}",
        f"          accept the host key only if it shows {fp}",
    ]
    return "\n".join(lines) + "\n"
