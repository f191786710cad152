"""The relay plan as text: the account commands, authorized_keys lines, the drop-in, notes.

Everything a person reads or a file on the relay holds is worded here, apart from the
decisions behind it (planning.py) and from touching the relay (applying.py): the printed
plan must say exactly what ``--apply`` writes, so both take their text from here.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import RelaySetupError
from .sshd_settings import DEFAULT_SSHD_CONFIG_DIR, NOLOGIN

if TYPE_CHECKING:
    from ..keys import PublicKey
    from .planning import RelayPlan

# The comment of an account relay-setup made; host.check_account looks for it.
GECOS = "handy-colab relay tunnels"
# The trailing comment of our authorized_keys lines, followed by the runtime's name.
MARK = "handy-colab:"


def account_commands(
    account: str, keys_dir: Path, chroot_dir: Path | None = None
) -> tuple[str, ...]:
    """The commands that make ``account`` and the folders it is kept in (the first is what
    host.create_account runs; applying.py makes the folders itself)."""
    root_dirs = [str(keys_dir)] + ([str(chroot_dir / account)] if chroot_dir else [])
    folders = [shlex.join(["install", "-d", "-m", "0755", "-o", "root", "-g", "root", *root_dirs])]
    if chroot_dir is not None:
        folders.append(
            shlex.join(["install", "-d", "-m", "0700", "-o", account, "-g", account])
            + f" {chroot_dir / account / 'tmp'}"
        )
    return (
        shlex.join(
            [
                "useradd",
                "--system",
                "--user-group",
                "--create-home",
                "--home-dir",
                f"/home/{account}",
                "--shell",
                NOLOGIN,
                "--password",
                "*",
                "--comment",
                GECOS,
                account,
            ]
        ),
        *folders,
    )


def authorized_keys_lines(options: str, keys: Sequence[PublicKey], name: str) -> tuple[str, ...]:
    """One line per key: the options, the key, and the marker of runtime ``name``."""
    return tuple(" ".join([options, k.line, f"{MARK}{name}"]) for k in keys)


def dropin_text(plan: RelayPlan) -> str:
    """The sshd_config drop-in: one ``Match User`` block, every line with its reason."""
    where = f"port {plan.remote_port}" if plan.mode == "public" else plan.socket_path
    if plan.remote_port == 0:
        where = "relay-allocated ports"
    out = [
        f"# Written by `handy-colab relay-setup` for runtime '{plan.name}' ({plan.mode} "
        f"mode, {where}).",
        f"# Account {plan.account} may hold that tunnel and nothing else. Checked with "
        f"OpenSSH 9.2.",
        f"Match User {plan.account}",
    ]
    for s in plan.settings:
        out += [f"    # {s.why}", f"    {s.keyword} {s.value}"]
    return "\n".join(out) + "\n"


def notes(
    mode: str, account: str, name: str, port: int | None, sock: str | None, laptops: bool
) -> tuple[str, ...]:
    """What the printed plan adds below the steps: firewall, runtime config, limits."""
    out = [
        f"One runtime per account: relay-setup for another --name with --account {account} "
        f"replaces this drop-in (its authorized_keys lines stay, marked {MARK}NAME).",
    ]
    if mode == "public" and port == 0:
        out = [
            "Several runtimes may share this account and key: each gets its own port from "
            "the relay, asks for the same one again when it reconnects, and publishes it in "
            "its descriptor (connections/NAME.json).",
            "Open the relay's ephemeral ports in its firewall (Linux: "
            "net.ipv4.ip_local_port_range, 32768-60999 by default): the relay picks from them.",
            f'Runtime config: "relay": {{"user": "{account}", "remote_port": 0}}.',
            f"The key may listen on any free port from 1024 up as {account}, not just one: "
            f"the price of relay-allocated ports.",
        ]
    elif mode == "public":
        out += [
            f"Open TCP port {port} in the relay's firewall: the laptop connects to relay:{port}.",
            f'Runtime config: "relay": {{"user": "{account}", "remote_port": {port}}}.',
        ]
    else:
        out += [
            "Private mode needs nothing global: StreamLocalBindUnlink and ChrootDirectory are "
            "honoured inside the Match block (OpenSSH 9.2, measured).",
            f"{account} is confined to its own root (ChrootDirectory), whose only folder it may "
            f"write is /tmp: the socket {sock} is made there by the tunnel, mode 0600, and "
            f"no -R can bind over anything else, another runtime's socket included.",
            f'Runtime config: "mode": "private", "relay": {{"user": "{account}"'
            + (
                ""
                if sock == f"/tmp/handy-colab-{account}-{name}.sock"
                else f', "socket_path": "{sock}"'
            )
            + "}.",
        ]
        if laptops:
            out.append(
                f"Laptop keys log in as {account} too and can reach only the socket; within "
                f"its root they could bind another socket in its /tmp, and nothing outside."
            )
    return tuple(out)


def render(plan: RelayPlan, sshd_config_dir: Path = DEFAULT_SSHD_CONFIG_DIR) -> str:
    """The plan as text for people: what to run and write on the relay, and why."""
    out = [
        f"Relay plan: account '{plan.account}' for runtime '{plan.name}', {plan.mode} mode "
        f"({plan.where}).",
        "",
        "1. The account (no shell, password field '*': no password, yet not locked for sshd):",
        *(f"   {c}" for c in plan.account_commands),
        "",
        f"2. Lines for {plan.authorized_keys_file} (owner root, mode 0644: out of the "
        f"account's reach);",
        f"   they end in '{plan.marker}', which --apply replaces on a re-run:",
        *(f"   {line}" for line in plan.authorized_keys),
        "",
        f"3. {sshd_config_dir / plan.dropin_name} (the main sshd_config must Include "
        f"{sshd_config_dir}/*.conf, as Debian 12's does):",
        *(f"   {line}" if line else "" for line in plan.dropin().splitlines()),
        "",
        "4. Check, then reload sshd (open sessions stay up):",
        "   sshd -t && systemctl reload ssh      (or: kill -HUP $(cat /run/sshd.pid))",
        "",
        "Notes:",
        *(f"- {n}" for n in plan.notes),
    ]
    return "\n".join(out) + "\n"


def _is_ours(line: str, marker: str) -> bool:
    parts = line.split()
    return bool(parts) and not line.lstrip().startswith("#") and parts[-1] == marker


def merge_authorized_keys(
    existing: str, lines: Iterable[str], marker: str, path: Path | str = "authorized_keys"
) -> tuple[str, int]:
    """New file text: the lines of others kept as they are, this plan's lines replaced.

    Returns (text, number of kept lines). Refuses when a kept line holds one of this plan's
    keys: sshd uses the first line that matches a key, so that line would win.
    """
    new = list(lines)
    # A key's base64 starts with its 4-byte type length, "AAAA": the key tokens of a line.
    blobs = {tok for line in new for tok in line.split() if tok.startswith("AAAA")}
    kept: list[str] = []
    for n, line in enumerate(existing.splitlines(), 1):
        if _is_ours(line, marker):
            continue
        if not line.lstrip().startswith("#") and blobs.intersection(line.split()):
            raise RelaySetupError(
                f"{path} line {n} already lists the key without these restrictions, and sshd "
                f"would use that line. Fix: delete line {n} (or re-run relay-setup with the "
                f"--name that wrote it), then run relay-setup --apply again"
            )
        kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    return "\n".join([*kept, *new]) + "\n", sum(1 for ln in kept if ln.strip())
