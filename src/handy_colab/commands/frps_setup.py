"""`frps-setup`: print an frps setup for a VPS; write it with --out DIR or --apply (root)."""

from __future__ import annotations

from pathlib import Path

from .. import frps_setup


def cmd_frps_setup(
    server_name: str,
    bind_port: int,
    ports: str,
    dashboard_port: int | None,
    out: str | None,
    apply: bool,
) -> int:
    plan = frps_setup.make_plan(
        server_name, bind_port=bind_port, ports=ports, dashboard_port=dashboard_port
    )
    conf_dir = Path(out).resolve() if out else frps_setup.DEFAULT_DIR
    # With --out, everything (the unit too) goes into that folder, to inspect or stage; the
    # unit is written by --apply only, so only then is it listed.
    unit = (conf_dir / frps_setup.UNIT.name if out else frps_setup.UNIT) if apply else None
    print(frps_setup.render(plan, conf_dir, unit), end="")
    if unit is not None:
        written = frps_setup.apply(plan, conf_dir, unit)
    elif out:
        written = frps_setup.write(plan, conf_dir)
    else:
        print(
            "\nNothing was written. Add --out DIR, or --apply as root on the VPS (which also "
            f"writes the systemd unit {frps_setup.UNIT} running frps as {frps_setup.SERVICE_USER})."
        )
        return 0
    print("\nWritten:")
    for path in written:
        print(f"- {path}")
    if apply:
        print(
            "Now: install frps 0.71.0 as /usr/local/bin/frps, then "
            "`systemctl enable --now handy-colab-frps`"
        )
    return 0
