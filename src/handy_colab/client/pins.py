"""The host keys `connect` pins, keyed so that no descriptor can reach another runtime's line.

Each runtime's lines end in a comment ``handy-colab:ALIAS`` (OpenSSH, paramiko and sshj all
ignore a known_hosts line's fields after the key). `connect` for ALIAS drops only lines so
tagged (and the untagged lines older versions wrote for ALIAS and ALIAS-relay, or for the
addresses ALIAS's previous descriptor had), so another runtime's pin, or a line the user
wrote, is never moved. What a descriptor asks that would change someone else's pin is a
conflict, refused unless the user says to replace it:
- its alias (or its relay alias) is pinned to other host keys: another runtime, or this
  one rebuilt with new keys;
- an address it pins (``[host]:port``, for clients that know no HostKeyAlias) is pinned
  with other keys by another runtime or by the user.
Address pins are written only into a file that ssh reads for our Host blocks alone (the
default ``handy-colab_known_hosts``): in a file ssh reads for every host (``--known-hosts
~/.ssh/known_hosts``) a descriptor's ``public_host`` would vouch for that host name to every
``ssh`` the user types, so there ``addresses=False`` leaves them out.
Runtime names cannot hold a dot or a colon and addresses must (descriptor.py), so an alias
pattern and an address pattern never coincide.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass

from ..descriptor import Descriptor
from ..keys import fingerprint

TAG = "handy-colab:"


def address_pattern(host: str, port: int) -> str:
    """How a known_hosts file names host:port (``[host]:port`` unless port 22)."""
    return host if port == 22 else f"[{host}]:{port}"


def pin_patterns(desc: Descriptor, addresses: bool = True) -> dict[str, list[str]]:
    """known_hosts pattern -> the host keys ("type base64") pinned under it."""
    entries = {desc.name: list(desc.host_keys)}
    if addresses and desc.mode == "public" and desc.host and desc.port:
        # Clients that know no HostKeyAlias (PyCharm's sshj, paramiko) look the key up by
        # the address they connect to.
        entries[address_pattern(desc.host, desc.port)] = list(desc.host_keys)
    if desc.route == "relay" and desc.mode == "private":
        entries[desc.relay_alias] = list(desc.relay_host_keys)
    return entries


def known_hosts_lines(desc: Descriptor, addresses: bool = True) -> dict[str, list[str]]:
    """The lines `connect` writes for ``desc``, by pattern, each tagged with its alias."""
    tag = f"{TAG}{desc.name}"
    pinned = pin_patterns(desc, addresses)
    return {p: [f"{p} {k} {tag}" for k in keys] for p, keys in pinned.items()}


@dataclass(frozen=True)
class _Line:
    pattern: str
    key: str  # "type base64"
    tag: str  # the alias after "handy-colab:", "" when untagged


def _parse(line: str) -> _Line | None:
    fields = line.split()
    if len(fields) < 3 or fields[0].startswith(("#", "@")):
        return None
    tag = fields[-1][len(TAG) :] if len(fields) > 3 and fields[-1].startswith(TAG) else ""
    return _Line(fields[0], f"{fields[1]} {fields[2]}", tag)


def _is_own(ln: _Line, alias: str, legacy: Set[str]) -> bool:
    if ln.tag:
        return ln.tag == alias
    return ln.pattern in {alias, f"{alias}-relay"} | legacy


def conflicts(
    text: str, desc: Descriptor, legacy: Set[str] = frozenset(), addresses: bool = True
) -> list[str]:
    """What pinning ``desc`` would change that is not its own to change (empty: nothing).
    ``legacy``: address patterns this alias's previous descriptor pinned, untagged."""
    alias = desc.name
    wanted = pin_patterns(desc, addresses)
    found: list[str] = []
    lines = [p for p in map(_parse, text.splitlines()) if p is not None]
    for pattern in (alias, desc.relay_alias):
        new = set(wanted.get(pattern, []))
        old = {ln.key for ln in lines if ln.pattern == pattern and _is_own(ln, alias, legacy)}
        if new and old and not new & old:
            what = "its relay" if pattern != alias else f"'{alias}'"
            found.append(
                f"{what} is pinned to another host key ({_fps(old)}; this descriptor has "
                f"{_fps(new)})"
            )
    for pattern, keys in wanted.items():
        if pattern in (alias, desc.relay_alias):
            continue
        others = [
            ln
            for ln in lines
            if ln.pattern == pattern and not _is_own(ln, alias, legacy) and ln.key not in keys
        ]
        if others:
            who = sorted({f"runtime '{ln.tag}'" if ln.tag else "a line of yours" for ln in others})
            found.append(f"{pattern} is pinned by {' and '.join(who)} with another host key")
    return found


def merge(
    text: str,
    desc: Descriptor,
    legacy: Set[str] = frozenset(),
    replace: bool = False,
    addresses: bool = True,
) -> str:
    """``text`` with this alias's lines replaced by ``desc``'s; with ``replace``, also
    without the lines ``conflicts`` named. Every other line stays as it was."""
    alias = desc.name
    wanted = known_hosts_lines(desc, addresses)
    new_keys = pin_patterns(desc, addresses)
    kept = []
    for raw in text.splitlines():
        ln = _parse(raw)
        if ln is not None and _is_own(ln, alias, legacy):
            continue
        taken = ln is not None and ln.pattern in wanted and ln.key not in new_keys[ln.pattern]
        if replace and taken:
            continue
        kept.append(raw)
    for lines in wanted.values():
        kept.extend(lines)
    return "\n".join(kept) + "\n"


def merge_known_hosts(text: str, entries: dict[str, list[str]]) -> str:
    """Replace every line of the given patterns (for `forward`'s own ``[127.0.0.1]:PORT``
    pins, which the user's latest `forward` owns); leave every other line as it was."""
    kept = [ln for ln in text.splitlines() if not ln.split() or ln.split()[0] not in entries]
    for lines in entries.values():
        kept.extend(lines)
    return "\n".join(kept) + "\n"


def keys_of(text: str, alias: str) -> list[str]:
    """The host keys pinned under the alias ``alias`` ("type base64", tag dropped)."""
    return [
        ln.key
        for ln in map(_parse, text.splitlines())
        if ln is not None and ln.pattern == alias and ln.tag in ("", alias)
    ]


def _fps(keys: set[str]) -> str:
    return ", ".join(sorted(fingerprint(k) for k in keys))
