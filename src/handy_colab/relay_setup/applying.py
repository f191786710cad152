"""Carrying out a relay plan as root on the relay: the drop-in, the account, its keys.

Kept apart from the plan so the order of the changes, and the undo when sshd rejects the
new drop-in, can be read in one place. It never reloads sshd: the caller prints the
command (host.reload_command), so open sessions stay the operator's choice.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RelaySetupError
from ..fsutil import atomic_write, backup, read_text_or_empty
from .host import (
    Account,
    check_account,
    create_account,
    effective,
    find_sshd,
    included,
    lookup_account,
    reload_command,
    run,
    under,
)
from .planning import RelayPlan
from .rendering import merge_authorized_keys
from .sshd_settings import DEFAULT_SSHD_CONFIG, DEFAULT_SSHD_CONFIG_DIR


@dataclass
class ApplyResult:
    account_created: bool
    authorized_keys: Path
    kept_lines: int  # lines of others in authorized_keys, left as they were
    dropin: Path
    backups: list[Path] = field(default_factory=list)
    reload_command: str = ""


def apply(
    plan: RelayPlan,
    root: str | Path = "/",
    sshd_config_dir: str | Path | None = None,
    authorized_keys_path: str | Path | None = None,
    sshd_config: str | Path | None = None,
) -> ApplyResult:
    """Carry out ``plan`` on this machine (the relay) as root; sshd is not reloaded.

    ``root`` prefixes every system path (for a mounted image or a test tree).
    Order: the config must already pass ``sshd -t`` and Include the drop-in's folder, and an
    existing account must be a relay-setup one; then the drop-in is written (the old one
    backed up) and must pass ``sshd -t`` with every setting in force for the account as
    ``sshd -T`` reports it (else the old drop-in is put back); only then is the account
    made and its authorized_keys written.
    """
    if os.geteuid() != 0:
        raise RelaySetupError(
            "relay-setup --apply creates an account and writes sshd's config, so it must run "
            "as root on the relay. Fix: run it with sudo there, or carry out the printed plan "
            "by hand"
        )
    root = Path(root)
    confdir = Path(sshd_config_dir) if sshd_config_dir else under(root, DEFAULT_SSHD_CONFIG_DIR)
    main = Path(sshd_config) if sshd_config else under(root, DEFAULT_SSHD_CONFIG)
    dropin = confdir / plan.dropin_name
    sshd = find_sshd()
    test = [sshd, "-t", "-f", str(main)]
    try:
        run(test, f"{main} fails `sshd -t` already", "repair the relay's sshd config first")
    except RelaySetupError as exc:
        if "privilege separation directory" not in str(exc):
            raise
        m = re.search(r"directory: (/[^\s.]+)", str(exc))
        where = m.group(1) if m else "/run/sshd"
        raise RelaySetupError(
            f"sshd -t cannot run: its privilege separation directory {where} is missing (the "
            f"ssh service makes it when it starts). Fix: mkdir -p {where}"
        ) from None
    if not included(main, dropin, root):
        raise RelaySetupError(
            f"{main} does not Include {confdir}, so sshd would ignore the drop-in. Fix: add the "
            f"line 'Include {confdir}/*.conf' at the top of {main} (before any Match block), "
            f"then run relay-setup --apply again"
        )
    # Refuse early what would fail later, so nothing is left half done.
    acct = lookup_account(plan.account, root)
    if acct is not None:
        acct = check_account(acct, root)
        _authorized_keys_text(plan, acct, root, authorized_keys_path)

    result = ApplyResult(False, Path(), 0, dropin)
    old = dropin.read_text() if dropin.exists() else None
    changed = old != plan.dropin()
    if changed:
        saved = backup(dropin)
        if saved is not None:
            result.backups.append(saved)
        atomic_write(dropin, plan.dropin(), mode=0o644)
    try:
        if changed:
            run(
                test,
                f"sshd -t rejects {main} with the new drop-in (the previous one is kept)",
                "this OpenSSH lacks an option the plan uses: upgrade openssh-server, or apply "
                "the printed plan by hand without it",
            )
        _check_effective(plan, sshd, main)
    except RelaySetupError:
        if changed and old is None:
            dropin.unlink()
        elif changed and old is not None:
            atomic_write(dropin, old, mode=0o644)
        raise

    if acct is None:
        acct = check_account(create_account(plan, root), root)
        result.account_created = True
    ak, text, result.kept_lines = _authorized_keys_text(plan, acct, root, authorized_keys_path)
    # Root's, not the account's: a relay key can neither edit these keys nor bind a socket
    # over them (sshd's StrictModes wants every folder above them root's too).
    _root_folder(ak.parent, root)
    atomic_write(ak, text, mode=0o644)
    os.chown(ak, 0, 0)
    result.authorized_keys = ak
    if plan.chroot is not None:
        chroot = under(root, plan.chroot)
        _root_folder(chroot, root)
        tmp = chroot / "tmp"
        tmp.mkdir(mode=0o700, exist_ok=True)
        os.chown(tmp, acct.uid, acct.gid)
        tmp.chmod(0o700)
    result.reload_command = reload_command(sshd, main)
    return result


def _root_folder(path: Path, root: Path) -> None:
    """``path`` and every folder above it (up to ``root``) owned by root and writable by
    root only, as sshd demands of a ChrootDirectory and (StrictModes) of an
    AuthorizedKeysFile's folders."""
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    for part in (path, *path.parents):
        if part != root and root not in part.parents:
            break
        st = part.lstat()
        if st.st_uid != 0 or st.st_mode & 0o022:
            raise RelaySetupError(
                f"{part}: owned by uid {st.st_uid} or writable by others (mode "
                f"{st.st_mode & 0o777:o}), so sshd would refuse the keys or the chroot below "
                f"it. Fix: chown root {part} && chmod go-w {part}, or pick another "
                f"--keys-dir/--chroot-dir"
            )


def _authorized_keys_text(
    plan: RelayPlan, acct: Account, root: Path, override: str | Path | None
) -> tuple[Path, str, int]:
    ak = Path(override) if override else under(root, plan.authorized_keys_file)
    text, kept = merge_authorized_keys(
        read_text_or_empty(ak), plan.authorized_keys, plan.marker, ak
    )
    return ak, text, kept


def _check_effective(plan: RelayPlan, sshd: str, main: Path) -> None:
    values = effective(sshd, main, plan.account)
    for s in plan.settings:
        got = f"{s.keyword.lower()} {values.get(s.keyword.lower(), '?')}"
        if got != s.effective:
            raise RelaySetupError(
                f"sshd applies '{got}' to {plan.account}, not '{s.effective}': an earlier "
                f"Match block or drop-in wins (the previous drop-in is kept). Fix: make that "
                f"block skip {plan.account}, then run relay-setup --apply again"
            )
