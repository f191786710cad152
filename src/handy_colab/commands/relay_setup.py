"""`relay-setup`: print the locked-down relay plan, and with --apply carry it out (as root)."""

from __future__ import annotations

from pathlib import Path

from .. import relay_setup


def cmd_relay_setup(
    key: str,
    account: str,
    mode: str,
    remote_port: int | None,
    socket_path: str | None,
    name: str,
    laptop_keys: list[str],
    apply: bool,
    sshd_config_dir: str | None,
    sshd_config: str | None,
    keys_dir: str | None = None,
    chroot_dir: str | None = None,
) -> int:
    plan = relay_setup.make_plan(
        key,
        account=account,
        mode=mode,
        remote_port=remote_port,
        socket_path=socket_path,
        name=name,
        laptop_keys=laptop_keys,
        keys_dir=Path(keys_dir) if keys_dir else relay_setup.DEFAULT_KEYS_DIR,
        chroot_dir=Path(chroot_dir) if chroot_dir else relay_setup.DEFAULT_CHROOT_DIR,
    )
    confdir = Path(sshd_config_dir) if sshd_config_dir else relay_setup.DEFAULT_SSHD_CONFIG_DIR
    print(relay_setup.render(plan, confdir), end="")
    if not apply:
        print("\nNothing was changed. On the relay, as root, add --apply to carry out 1-3.")
        return 0
    res = relay_setup.apply(plan, sshd_config_dir=confdir, sshd_config=sshd_config)
    print("\nApplied:")
    made = "created" if res.account_created else "exists (a relay-setup account), kept"
    print(f"- account {plan.account}: {made}")
    if plan.chroot is not None:
        print(f"- {plan.chroot}: its own root (root's), {plan.chroot / 'tmp'} its only folder")
    print(
        f"- {res.authorized_keys}: {len(plan.authorized_keys)} line(s) for '{plan.name}', "
        f"{res.kept_lines} other line(s) kept"
    )
    print(f"- {res.dropin}: written; sshd -t passes and sshd -T shows every setting in force")
    for bak in res.backups:
        print(f"- backup of the previous drop-in: {bak}")
    print(f"Now reload sshd (open sessions stay up): {res.reload_command}")
    return 0
