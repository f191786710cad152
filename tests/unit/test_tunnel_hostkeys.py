"""Relay host-key pinning shared by both tunnel clients, and the embedded client's wording.

The embedded client decides on the relay's host key itself (tunnels.common.HostKeyPolicy):
these tests hold it to OpenSSH's StrictHostKeyChecking yes / accept-new on the same files,
with real keys and, where it matters, the real ssh-keygen.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import SSH_KEYGEN, KeyStore

from handy_colab.config import load_config
from handy_colab.state import RuntimeDir
from handy_colab.tunnels.asyncssh_client import ClientSettings, drop_reason, openssh_bind_host
from handy_colab.tunnels.common import (
    OPENSSH_HOST_KEY_ALGS,
    RECORD_FAILED,
    HostKeyPolicy,
    classify,
    host_key_fingerprint,
    known_hosts_pattern,
    parse_known_hosts,
    preferred_host_key_algs,
    prepare_relay_files,
)

ED = "ed25519"
UNWRITABLE = Path("/proc/self/fdinfo/relay_known_hosts")


def test_pattern_is_openssh_s() -> None:
    assert known_hosts_pattern("relay.example.org", 22) == "relay.example.org"
    assert known_hosts_pattern("10.0.0.1", 2200) == "[10.0.0.1]:2200"


def test_fingerprint_matches_ssh_keygen(keys: KeyStore) -> None:
    out = subprocess.run(
        [SSH_KEYGEN, "-l", "-E", "sha256", "-f", str(keys.public(ED))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    assert host_key_fingerprint(keys.blob(ED)) == out


class TestParse:
    def test_plain_and_lists(self, keys: KeyStore) -> None:
        a, b = keys.blob(ED), keys.blob("ecdsa")
        text = f"# comment\n\nother.host {b}\nrelay,Alias {a} trailing comment\n"
        assert parse_known_hosts(text, "relay").keys == [a]
        assert parse_known_hosts(text, "ALIAS").keys == [a]  # names compare case-insensitively
        assert parse_known_hosts(text, "nope").keys == []

    def test_port_is_part_of_the_name_with_no_fallback(self, keys: KeyStore) -> None:
        # ssh looks up "[host]:port" only; asyncssh's own matcher would fall back to "host".
        text = f"relay {keys.blob(ED)}\n"
        assert parse_known_hosts(text, "[relay]:2200").keys == []
        text = f"[relay]:2200 {keys.blob(ED)}\n"
        assert parse_known_hosts(text, "[relay]:2200").keys == [keys.blob(ED)]
        assert parse_known_hosts(text, "relay").keys == []

    def test_wildcards_are_star_and_question_only(self, keys: KeyStore) -> None:
        text = f"*.example.org,!bad.example.org {keys.blob(ED)}\n[10.0.0.?]:2200 {keys.blob(ED)}\n"
        assert parse_known_hosts(text, "relay.example.org").keys == [keys.blob(ED)]
        assert parse_known_hosts(text, "bad.example.org").keys == []  # negation wins
        assert parse_known_hosts(text, "[10.0.0.7]:2200").keys == [keys.blob(ED)]
        assert parse_known_hosts(text, "[10.0.0.17]:2200").keys == []

    def test_hashed_entries_from_real_ssh_keygen(self, tmp_path: Path, keys: KeyStore) -> None:
        kh = tmp_path / "known_hosts"
        kh.write_text(f"[relay.example.org]:2200 {keys.blob(ED)}\n")
        subprocess.run([SSH_KEYGEN, "-H", "-f", str(kh)], check=True, capture_output=True)
        text = kh.read_text()
        assert text.startswith("|1|")
        assert parse_known_hosts(text, "[relay.example.org]:2200").keys == [keys.blob(ED)]
        assert parse_known_hosts(text, "relay.example.org").keys == []

    def test_markers_and_junk(self, keys: KeyStore) -> None:
        text = (
            f"@revoked relay {keys.blob('ecdsa')}\n"
            f"@cert-authority relay {keys.blob('ed25519_b')}\n"
            f"@bogus relay {keys.blob('ed25519_c')}\n"
            "relay\n"
            "relay ssh-ed25519\n"
            f"relay {keys.blob(ED)}\n"
        )
        known = parse_known_hosts(text, "relay")
        assert known.keys == [keys.blob(ED)]
        assert known.revoked == [keys.blob("ecdsa")]


class TestAcceptNew:
    def policy(self, path: Path, port: int = 2200) -> HostKeyPolicy:
        return HostKeyPolicy(path, strict=False, host="10.0.0.1", port=port)

    def test_first_use_records_one_openssh_line(self, tmp_path: Path, keys: KeyStore) -> None:
        kh = tmp_path / "relay_known_hosts"
        verdict = self.policy(kh).verify(keys.blob(ED))
        assert verdict.ok
        assert verdict.lines == [
            "Warning: Permanently added '[10.0.0.1]:2200' (ED25519) to the list of known hosts."
        ]
        assert kh.read_text() == f"[10.0.0.1]:2200 {keys.blob(ED)}\n"
        # Then it is pinned: the same key passes without another write.
        before = kh.stat().st_mtime_ns
        assert self.policy(kh).verify(keys.blob(ED)).ok
        assert kh.stat().st_mtime_ns == before

    def test_openssh_reads_what_was_recorded(self, tmp_path: Path, keys: KeyStore) -> None:
        kh = tmp_path / "relay_known_hosts"
        assert self.policy(kh).verify(keys.blob(ED)).ok
        found = subprocess.run(
            [SSH_KEYGEN, "-F", "[10.0.0.1]:2200", "-f", str(kh)], capture_output=True, text=True
        )
        assert found.returncode == 0 and keys.blob(ED) in found.stdout

    def test_other_lines_kept_and_mode_kept(self, tmp_path: Path, keys: KeyStore) -> None:
        kh = tmp_path / "relay_known_hosts"
        kept = f"# mine\nother.host {keys.blob('ecdsa')}"  # no final newline
        kh.write_text(kept)
        kh.chmod(0o640)
        assert self.policy(kh).verify(keys.blob(ED)).ok
        assert kh.read_text() == f"{kept}\n[10.0.0.1]:2200 {keys.blob(ED)}\n"
        assert kh.stat().st_mode & 0o777 == 0o640
        assert [p.name for p in tmp_path.iterdir()] == ["relay_known_hosts"]  # no temp left

    def test_symlinked_file_stays_a_symlink(self, tmp_path: Path, keys: KeyStore) -> None:
        real = tmp_path / "real_known_hosts"
        real.write_text("")
        link = tmp_path / "relay_known_hosts"
        link.symlink_to(real)
        assert self.policy(link).verify(keys.blob(ED)).ok
        assert link.is_symlink()
        assert keys.blob(ED) in real.read_text()

    def test_changed_key_refused_never_repinned(self, tmp_path: Path, keys: KeyStore) -> None:
        kh = tmp_path / "relay_known_hosts"
        kh.write_text(f"[10.0.0.1]:2200 {keys.blob(ED)}\n")
        before = kh.read_bytes()
        for other in ("ed25519_b", "ecdsa", "rsa_openssh"):
            # Another type counts as changed too (stricter than ssh's accept-new, on purpose).
            verdict = self.policy(kh).verify(keys.blob(other))
            assert not verdict.ok
            assert any("REMOTE HOST IDENTIFICATION HAS CHANGED" in ln for ln in verdict.lines)
            assert verdict.lines[-1] == "Host key verification failed."
        assert kh.read_bytes() == before

    def test_revoked_key_refused(self, tmp_path: Path, keys: KeyStore) -> None:
        kh = tmp_path / "relay_known_hosts"
        kh.write_text(f"@revoked [10.0.0.1]:2200 {keys.blob(ED)}\n")
        verdict = self.policy(kh).verify(keys.blob(ED))
        assert not verdict.ok and "REVOKED" in verdict.lines[0]
        assert kh.read_text().count("\n") == 1

    def test_key_of_port_22_is_not_taken_for_another_port(
        self, tmp_path: Path, keys: KeyStore
    ) -> None:
        kh = tmp_path / "relay_known_hosts"
        kh.write_text(f"10.0.0.1 {keys.blob('ecdsa')}\n")
        assert self.policy(kh).verify(keys.blob(ED)).ok  # [10.0.0.1]:2200 is a new host
        assert kh.read_text().splitlines()[1] == f"[10.0.0.1]:2200 {keys.blob(ED)}"

    def test_unwritable_place_refuses_instead_of_connecting_unpinned(self, keys: KeyStore) -> None:
        # A real kernel refusal without root tricks: nothing can be created in /proc.
        verdict = self.policy(UNWRITABLE).verify(keys.blob(ED))
        assert not verdict.ok
        assert RECORD_FAILED in verdict.lines[0]
        assert verdict.lines[-1] == "Host key verification failed."

    def test_unreadable_pin_file_refuses(self, tmp_path: Path, keys: KeyStore) -> None:
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        verdict = self.policy(blocker / "relay_known_hosts").verify(keys.blob(ED))
        assert not verdict.ok
        assert "cannot read" in verdict.lines[0]


class TestStrict:
    def test_pinned_key_passes_other_refused(self, tmp_path: Path, keys: KeyStore) -> None:
        pinned = tmp_path / "pinned"
        pinned.write_text(f"relay {keys.blob(ED)}\n")
        policy = HostKeyPolicy(pinned, strict=True, host="relay", port=22)
        assert policy.verify(keys.blob(ED)).ok
        bad = policy.verify(keys.blob("ed25519_b"))
        assert not bad.ok and "CHANGED" in bad.lines[0]
        assert pinned.read_text() == f"relay {keys.blob(ED)}\n"

    def test_unknown_host_never_added(self, tmp_path: Path, keys: KeyStore) -> None:
        pinned = tmp_path / "pinned"
        pinned.write_text("")
        verdict = HostKeyPolicy(pinned, strict=True, host="relay", port=22).verify(keys.blob(ED))
        assert not verdict.ok
        assert verdict.lines[0].startswith("No ED25519 host key is known for relay")
        assert pinned.read_text() == ""


def test_algorithm_order_prefers_known_types() -> None:
    assert preferred_host_key_algs(set()) == list(OPENSSH_HOST_KEY_ALGS)
    rsa_first = preferred_host_key_algs({"ssh-rsa"})
    assert rsa_first[:2] == ["rsa-sha2-512", "rsa-sha2-256"]
    assert sorted(rsa_first) == sorted(OPENSSH_HOST_KEY_ALGS)
    assert preferred_host_key_algs(
        {"ecdsa-sha2-nistp256"}, ["ssh-ed25519", "ecdsa-sha2-nistp256"]
    ) == [
        "ecdsa-sha2-nistp256",
        "ssh-ed25519",
    ]


def test_bind_host_as_openssh_sends_it() -> None:
    assert openssh_bind_host(None) == "localhost"
    assert openssh_bind_host("*") == ""
    assert openssh_bind_host("0.0.0.0") == "0.0.0.0"


def test_settings_round_trip() -> None:
    s = ClientSettings(
        host="h",
        port=22,
        user="u",
        key_path="/k",
        known_hosts="/kh",
        strict=False,
        mode="private",
        listen_host="localhost",
        listen_port=0,
        socket_path="/tmp/s.sock",
        local_port=2022,
    )
    assert ClientSettings.from_json(s.to_json()) == s
    assert s.listen == "path /tmp/s.sock"


# What each client prints for the same failure -> the same one-line error.
_SAME_FAILURE = [
    (
        "hcrelay@relay: Permission denied (publickey).",
        "alice@user-12345.portmap.host: Permission denied (publickey).",
    ),
    (
        "ssh: connect to host user-12345.portmap.host port 22: Connection refused",
        "ssh: connect to host user-12345.portmap.host port 22: Connection refused",
    ),
    (
        "ssh: connect to host user-12345.portmap.host port 22: Connection timed out",
        "Connection timed out during banner exchange",
    ),
    (
        "ssh: Could not resolve hostname x: Name or service not known",
        "ssh: Could not resolve hostname x: Temporary failure in name resolution",
    ),
    (
        "kex_exchange_identification: Connection closed by remote host",
        "kex_exchange_identification: Connection closed by remote host",
    ),
    (
        "Error: remote port forwarding failed for listen port 12345",
        "Error: remote port forwarding failed for listen port 12345",
    ),
    (
        "Error: remote port forwarding failed for listen path /tmp/x.sock",
        "Error: remote port forwarding failed for listen path /tmp/x.sock",
    ),
]


@pytest.mark.parametrize(("openssh", "embedded"), _SAME_FAILURE)
def test_classify_reads_both_clients_alike(seed_folder: Path, openssh: str, embedded: str) -> None:
    cfg = load_config(seed_folder)
    a = classify(["debug1: noise", openssh], cfg, "alice.first.pem")
    b = classify([embedded], cfg, "alice.first.pem")
    assert str(a) == str(b)
    assert a.permanent == b.permanent


def test_classify_host_key_lines_of_the_policy(
    seed_folder: Path, tmp_path: Path, keys: KeyStore
) -> None:
    cfg = load_config(seed_folder)
    kh = tmp_path / "kh"
    kh.write_text(f"user-12345.portmap.host {keys.blob(ED)}\n")
    policy = HostKeyPolicy(kh, strict=False, host="user-12345.portmap.host", port=22)
    changed = classify(policy.verify(keys.blob("ecdsa")).lines, cfg, "k")
    assert "does not match the one pinned" in str(changed) and changed.permanent
    strict = HostKeyPolicy(tmp_path / "empty", strict=True, host="x", port=22)
    unpinned = classify(strict.verify(keys.blob(ED)).lines, cfg, "k")
    assert "host key is not pinned" in str(unpinned) and unpinned.permanent
    blocked = HostKeyPolicy(UNWRITABLE, strict=False, host="x", port=22)
    failed = classify(blocked.verify(keys.blob(ED)).lines, cfg, "k")
    assert "cannot be recorded" in str(failed) and "never connects unpinned" in str(failed)
    assert failed.permanent


def test_drop_reasons_read_as_ssh_s() -> None:
    import asyncssh

    s = ClientSettings("h", 22, "u", "/k", "/kh", False, "public", "localhost", 1, "/s", 2)
    assert drop_reason(s, asyncssh.ConnectionLost("Server not responding to keepalive")) == (
        "Timeout, server h not responding."
    )
    assert drop_reason(s, None) == "Connection to h closed by remote host."


def test_prepare_relay_files(seed_folder: Path, tmp_path: Path, keys: KeyStore) -> None:
    rd = RuntimeDir(tmp_path / "state").ensure()
    cfg = load_config(seed_folder)
    known, strict = prepare_relay_files(cfg, rd)
    assert (known, strict) == (seed_folder / "relay_known_hosts", False)
    assert rd.relay_key.stat().st_mode & 0o777 == 0o600
    cfg_text = (seed_folder / "user_config.json").read_text()
    pinned_cfg = cfg_text.replace(
        '"tunnel_options"', f'"relay": {{"host_key": "{keys.blob(ED)}"}}, "tunnel_options"'
    )
    (seed_folder / "user_config.json").write_text(pinned_cfg)
    known, strict = prepare_relay_files(load_config(seed_folder), rd)
    assert (known, strict) == (rd.known_hosts, True)
    assert known.read_text() == f"user-12345.portmap.host {keys.blob(ED)}\n"
