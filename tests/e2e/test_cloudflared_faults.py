"""The cloudflared route's faults, each against the real cloudflared: QUIC blocked, the
quick-tunnel API rate-limiting or unreachable, no edge, a hijacking ~/.cloudflared config,
and a named tunnel whose token must never leak."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from tests.cfrig import NAMED_HOSTNAME, wait_for
from tests.e2e.cfhelpers import CfRuntime, cf_fresh, one_line_error
from tests.rig import RELAY_IP

__all__ = ["cf_fresh"]


def test_quic_blocked_switches_to_http2(cf_fresh: Any) -> None:
    rt: CfRuntime = cf_fresh(start=False, cloudflared={"protocol": "auto"})
    # What a restrictive network does to QUIC: UDP to the edge's port silently dropped.
    rt.rig.run(
        "router",
        ["iptables", "-I", "FORWARD", "-p", "udp", "--dport", "7844", "-j", "DROP"],
        check=True,
    )
    started = time.monotonic()
    res = rt.up()
    assert res.returncode == 0, res.stderr
    took = time.monotonic() - started
    code, st = rt.status()
    assert code == 0 and st["tunnel"]["details"]["protocol"] == "http2", st
    log = rt.handy("rt", "logs", "colab", "-n", "2000").stdout
    assert "Failed to dial a quic connection" in log or "with quic" in log
    assert "looks blocked: using HTTP/2" in log
    assert rt.connect().returncode == 0
    res = rt.ssh("echo over-http2")
    assert (res.returncode, res.stdout) == (0, "over-http2\n"), res.stderr
    print(f"up with QUIC blocked took {took:.1f}s")


def test_rate_limited_quick_tunnel_fails_up_in_one_line(cf_fresh: Any) -> None:
    rt: CfRuntime = cf_fresh(start=False, api_mode="ratelimit")
    line = one_line_error(rt.up())
    assert "429" in line and "1015" in line and "rate-limiting" in line
    rt.assert_nothing_runs()


def test_rate_limit_while_running_says_when_it_retries(cf_fresh: Any) -> None:
    rt: CfRuntime = cf_fresh()
    rt.cf.api_mode("ratelimit")
    _, st = rt.status()
    os.kill(int(st["tunnel"]["pid"]), 9)

    def limited() -> Any:
        _, st = rt.status()
        tun = st["tunnel"]
        return tun["state"] == "down" and "rate-limiting" in (tun.get("last_error") or "") and st

    st = wait_for(limited, 30)
    assert st, rt.status()
    wait = st["tunnel"]["next_try"] - time.time()
    assert 45 < wait <= 61, wait
    text = rt.handy("rt", "status", "colab").stdout
    assert "rate-limiting" in text and "next try at" in text


def test_api_unreachable_is_one_line(cf_fresh: Any) -> None:
    rt: CfRuntime = cf_fresh(start=False)
    rt.write_config(extra_args=rt.cf.extra_args(api=f"http://{RELAY_IP}:9"))
    line = one_line_error(rt.up())
    assert "cannot reach the quick-tunnel service" in line and "connection refused" in line
    rt.assert_nothing_runs()


def test_no_edge_reachable_is_one_line(cf_fresh: Any) -> None:
    rt: CfRuntime = cf_fresh(start=False)
    # Two addresses, as edge discovery gives: with a single one that refuses, cloudflared
    # redials without any back-off (measured: a core at 100 %).
    rt.write_config(protocol="http2", extra_args=rt.cf.extra_args(edge_ports=(7845, 7846)))
    started = time.monotonic()
    line = one_line_error(rt.up())
    assert "Cloudflare's edge" in line or "Cloudflare edge" in line, line
    assert "7844" in line
    assert time.monotonic() - started < 60
    rt.assert_nothing_runs()


def test_users_cloudflared_config_cannot_hijack(cf_fresh: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".cloudflared").mkdir(parents=True)
    # Ingress rules in a default-location config override --url in cloudflared; so would
    # TUNNEL_* variables meant for another tunnel.
    (home / ".cloudflared" / "config.yml").write_text(
        "ingress:\n  - service: http_status:404\nprotocol: quic\n"
    )
    rt: CfRuntime = cf_fresh(start=False)
    rt.env_extra.update(HOME=str(home), TUNNEL_URL="http://127.0.0.1:9", TUNNEL_PROTOCOL="quic")
    res = rt.up()
    assert res.returncode == 0, res.stderr
    assert rt.connect().returncode == 0
    res = rt.ssh("echo not-hijacked")
    assert (res.returncode, res.stdout) == (0, "not-hijacked\n"), res.stderr


def _token() -> str:
    payload = {
        "a": "0123456789abcdef0123456789abcdef",
        "t": str(uuid.uuid4()),
        "s": base64.b64encode(os.urandom(32)).decode(),
    }
    return base64.b64encode(json.dumps(payload).encode()).decode()


def test_named_tunnel_fixed_hostname_and_token_never_exposed(cf_fresh: Any) -> None:
    rt: CfRuntime = cf_fresh(start=False)
    token = _token()
    token_file = rt.folder / "cloudflared_token"
    token_file.write_text(token + "\n")
    rt.write_config(hostname=NAMED_HOSTNAME)
    res = rt.up()
    assert res.returncode == 0, res.stderr
    assert token not in res.stdout + res.stderr
    desc = rt.descriptor_data()
    assert (desc["mode"], desc["hostname"]) == ("named", NAMED_HOSTNAME)
    assert rt.connect().returncode == 0
    res = rt.ssh("echo named")
    assert (res.returncode, res.stdout) == (0, "named\n"), res.stderr
    # Nowhere but the user's own file and our 0600 copy: no command line, no environment,
    # no log, no state, no descriptor.
    secret = token.encode()
    for pid in rt.rig.ns_pids("rt"):
        for what in ("cmdline", "environ"):
            try:
                data = Path(f"/proc/{pid}/{what}").read_bytes()
            except OSError:
                continue
            assert secret not in data, f"token in /proc/{pid}/{what}"
    status = rt.handy("rt", "status", "colab").stdout + rt.handy("rt", "logs", "colab").stdout
    assert token not in status
    copies = []
    for root in (rt.rig.state_dir, rt.folder):
        for p in root.rglob("*"):
            if p.is_file() and secret in p.read_bytes():
                copies.append(p)
                if p != token_file:
                    assert p.stat().st_mode & 0o077 == 0, f"{p} is readable by others"
    assert sorted(p.name for p in copies) == ["cloudflared_token", "cloudflared_token"], copies


def test_named_tunnel_bad_token_is_one_line(cf_fresh: Any) -> None:
    rt: CfRuntime = cf_fresh(start=False)
    (rt.folder / "cloudflared_token").write_text("not-a-token\n")
    rt.write_config(hostname=NAMED_HOSTNAME)
    line = one_line_error(rt.up())
    assert "token" in line and "not valid" in line and "not-a-token" not in line
    rt.assert_nothing_runs()
