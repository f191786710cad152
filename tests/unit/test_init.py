"""`handy-colab init` through the real CLI entry, with HOME in a temporary folder: every route's
folder is read back by the project's own loader, keys are real (ssh-keygen checks them), and
nothing of the user's is ever overwritten."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from handy_colab import __version__, platforms
from handy_colab.cli import main
from handy_colab.client.init import RELAY_KEY
from handy_colab.config import load_config
from tests.clients import PtySession
from tests.unit.conftest import SSH_KEYGEN, KeyStore

WHEEL = f"handy_colab-{__version__}-py3-none-any.whl"  # what init puts into every folder


def init(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["init", *args])
    out, err = capsys.readouterr()
    return code, out, err


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def blob(line: str) -> str:
    return " ".join(line.split()[:2])


def keygen_public(private: Path) -> str:
    """What real ssh-keygen derives from the private key: proves the key is a usable one."""
    res = subprocess.run(
        [SSH_KEYGEN, "-y", "-f", str(private)], capture_output=True, text=True, check=True
    )
    return blob(res.stdout)


def one_line_error(code: int, err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("handy-colab: error: ") and "Fix:" in lines[0], lines[0]
    return lines[0]


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its sha256: "unchanged" means byte for byte."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def secret_value(out: str, name: str) -> str:
    m = re.search(rf"^\s+{name}\s+= (.+)$", out, re.M)
    assert m, out
    return m.group(1)


@pytest.fixture
def ssh_dir(home: Path) -> Path:
    d = home / ".ssh"
    d.mkdir(mode=0o700)
    return d


# --------------------------------------------------------------------------- the laptop's key


def test_default_makes_a_key_and_a_quick_tunnel_folder(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "colab_data"
    # No --yes: pytest's stdin is no terminal, so init must ask nothing.
    code, out, err = init(capsys, str(folder))
    assert code == 0, err
    key = home / ".ssh" / "id_ed25519"
    assert mode(key) == 0o600 and mode(home / ".ssh") == 0o700
    pub_line = (home / ".ssh" / "id_ed25519.pub").read_text().strip()
    assert keygen_public(key) == blob(pub_line)
    assert mode(folder) == 0o700
    assert sorted(p.name for p in folder.iterdir()) == [WHEEL, "laptop.pub", "user_config.json"]
    assert (folder / "laptop.pub").read_text().strip() == pub_line
    assert json.loads((folder / "user_config.json").read_text()) == {
        "name": "colab",
        "route": "cloudflared",
    }
    cfg = load_config(folder)
    assert cfg.route == "cloudflared" and cfg.relay is None
    assert [k.blob for k in cfg.authorized_keys] == [blob(pub_line)]
    # The next steps: Drive folder, the notebook lines, secrets with their values, the laptop.
    assert "made now, no passphrase" in out
    assert "upload the folder colab_data" in out
    assert f"%pip install -q /content/drive/MyDrive/colab_data/{WHEEL}\n" in out
    assert "handy_colab.up('/content/drive/MyDrive/colab_data')" in out
    assert "handy-colab up /content/drive/MyDrive/colab_data" in out
    assert secret_value(out, "HANDY_COLAB_PUBLIC_KEYS") == pub_line
    assert json.loads(secret_value(out, "HANDY_COLAB_CONFIG")) == {
        "name": "colab",
        "route": "cloudflared",
    }
    assert "HANDY_COLAB_RELAY_KEY" not in out
    assert f"handy-colab connect 'hc1:...' --identity {key}" in out
    assert "ssh colab" in out
    assert "PRIVATE KEY" not in out + err


def test_key_made_without_ssh_keygen_is_a_real_key(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "no-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    code, _, err = init(capsys, str(tmp_path / "cfg"), "--yes")
    assert code == 0, err
    key = home / ".ssh" / "id_ed25519"
    assert mode(key) == 0o600
    pub_line = (home / ".ssh" / "id_ed25519.pub").read_text().strip()
    assert keygen_public(key) == blob(pub_line)
    assert (tmp_path / "cfg" / "laptop.pub").read_text().strip() == pub_line
    assert not [p for p in (home / ".ssh").iterdir() if p.name.startswith(".handy-colab")]


def test_existing_keys_in_ssh_order_are_used_and_left_alone(
    ssh_dir: Path, keys: KeyStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys.copy_private("rsa_openssh", ssh_dir / "id_rsa")
    keys.copy_public("rsa_openssh", ssh_dir / "id_rsa.pub")
    keys.copy_private("ecdsa", ssh_dir / "id_ecdsa")
    keys.copy_public("ecdsa", ssh_dir / "id_ecdsa.pub")
    before = tree(ssh_dir)
    code, out, err = init(capsys, str(tmp_path / "cfg"), "--yes")
    assert code == 0, err
    assert tree(ssh_dir) == before  # nothing made, nothing touched
    assert (tmp_path / "cfg" / "laptop.pub").read_text().strip() == keys.public_line("ecdsa")
    assert "made now" not in out


def test_key_flag_passphrase_and_missing_pub(
    home: Path, keys: KeyStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A passphrase is fine on the laptop (ssh asks for it): its .pub is what is copied.
    enc = keys.private("enc_ed25519")
    code, out, err = init(capsys, str(tmp_path / "a"), "--key", str(enc), "--yes")
    assert code == 0, err
    assert (tmp_path / "a" / "laptop.pub").read_text().strip() == keys.public_line("enc_ed25519")
    assert f"--identity {enc}" in out
    # An unencrypted key with no .pub: its public half is derived.
    lone = tmp_path / "lone"
    keys.copy_private("ed25519_b", lone)
    code, _, err = init(capsys, str(tmp_path / "b"), "--key", str(lone), "--yes")
    assert code == 0, err
    assert blob((tmp_path / "b" / "laptop.pub").read_text()) == keys.blob("ed25519_b")
    # A passphrase key with no .pub cannot be read without the passphrase.
    enc_lone = tmp_path / "enc_lone"
    keys.copy_private("enc_ed25519", enc_lone)
    line = one_line_error(*init(capsys, str(tmp_path / "c"), "--key", str(enc_lone), "--yes")[::2])
    assert "passphrase" in line and "ssh-keygen -y" in line
    assert not (tmp_path / "c").exists()
    assert not (home / ".ssh").exists()


def test_a_lone_pub_is_never_overwritten(
    ssh_dir: Path, keys: KeyStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys.copy_public("laptop", ssh_dir / "id_ed25519.pub")
    before = tree(ssh_dir)
    code, _, err = init(capsys, str(tmp_path / "cfg"), "--yes")
    assert "id_ed25519.pub: exists without its private key" in one_line_error(code, err)
    assert tree(ssh_dir) == before and not (tmp_path / "cfg").exists()


# --------------------------------------------------------------------------- the routes


def test_relay_public_makes_a_relay_key_and_a_relay_setup_line_that_runs(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "cfg"
    args = ["--route", "relay", "--relay-host", "relay.example.org", "--remote-port", "2222"]
    code, out, err = init(capsys, str(folder), *args, "--yes")
    assert code == 0, err
    relay_key = folder / RELAY_KEY
    assert mode(relay_key) == 0o600
    relay_pub = keygen_public(relay_key)  # a real, unencrypted private key
    assert sorted(p.name for p in folder.iterdir()) == [
        WHEEL,
        "laptop.pub",
        RELAY_KEY,
        "user_config.json",
    ]
    cfg = load_config(folder)
    assert cfg.route == "relay" and cfg.mode == "public"
    relay = cfg.ssh_relay
    assert (relay.host, relay.port, relay.user, relay.remote_port) == (
        "relay.example.org",
        22,
        "handy-colab",
        2222,
    )
    assert relay.key.path == relay_key and relay.host_key is None
    # The relay key logs into the relay only: the runtime lets in the laptop's key alone.
    laptop = (home / ".ssh" / "id_ed25519.pub").read_text()
    assert [k.blob for k in cfg.authorized_keys] == [blob(laptop)]
    assert "PRIVATE KEY" not in out and f"the whole content of {relay_key}" in out
    # The printed relay-setup line is accepted by the real command (without --apply).
    line = next(ln.strip() for ln in out.splitlines() if "relay-setup" in ln and "--key" in ln)
    argv = shlex.split(line)
    assert argv[:2] == ["handy-colab", "relay-setup"] and argv[-1] == "--apply"
    assert argv[argv.index("--key") + 1] == relay_pub
    assert main(argv[1:-1]) == 0
    plan = capsys.readouterr().out
    assert 'permitlisten="2222"' in plan and relay_pub in plan


def test_relay_private_copies_the_given_key_and_pins_the_host_key(
    home: Path, keys: KeyStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "cfg"
    source = keys.copy_private("ed25519_c", tmp_path / "my_relay_key", mode=0o644)
    scan = tmp_path / "keyscan.txt"  # as `ssh-keyscan relay > keyscan.txt` writes it
    scan.write_text(f"# relay:22 SSH-2.0-OpenSSH_9.2\nrelay {keys.blob('ecdsa')}\n")
    args = [
        "--route",
        "relay",
        "--relay-host",
        "10.1.2.3",
        "--relay-port",
        "2200",
        "--relay-user",
        "tunnel",
        "--mode",
        "private",
        "--relay-key",
        str(source),
        "--relay-host-key",
        str(scan),
        "--socket-path",
        "/tmp/hc-test.sock",
        "--name",
        "gpu1",
    ]
    code, out, err = init(capsys, str(folder), *args, "--yes")
    assert code == 0, err
    assert (folder / RELAY_KEY).read_bytes() == source.read_bytes()
    assert mode(folder / RELAY_KEY) == 0o600 and mode(source) == 0o644  # theirs untouched
    cfg = load_config(folder)
    relay = cfg.ssh_relay
    assert (cfg.name, cfg.mode, relay.port, relay.user) == ("gpu1", "private", 2200, "tunnel")
    assert relay.host_key == keys.blob("ecdsa") and relay.socket_path == "/tmp/hc-test.sock"
    line = next(ln.strip() for ln in out.splitlines() if "relay-setup" in ln and "--key" in ln)
    argv = shlex.split(line)
    laptop = (home / ".ssh" / "id_ed25519.pub").read_text().strip()
    assert argv[argv.index("--laptop-key") + 1] == laptop
    assert main(argv[1:-1]) == 0
    assert "/tmp/hc-test.sock" in capsys.readouterr().out
    assert "ssh gpu1" in out


@pytest.mark.parametrize("frp_mode", ["public", "private", "p2p"])
def test_frp_with_frps_setup_files(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], frp_mode: str
) -> None:
    frps = tmp_path / "frps"
    assert main(["frps-setup", "--server-name", "vps.example.org", "--out", str(frps)]) == 0
    capsys.readouterr()
    runtime = frps / "runtime"
    folder = tmp_path / "cfg"
    args = ["--route", "frp", "--frp-server", "vps.example.org", "--frp-mode", frp_mode]
    args += ["--frp-ca", str(runtime / "frps_ca.pem"), "--frp-token", str(runtime / "frp_token")]
    if frp_mode == "public":
        args += ["--remote-port", "6000"]
    code, out, err = init(capsys, str(folder), *args, "--yes")
    assert code == 0, err
    assert (folder / "frps_ca.pem").read_bytes() == (runtime / "frps_ca.pem").read_bytes()
    assert (folder / "frp_token").read_bytes() == (runtime / "frp_token").read_bytes()
    assert mode(folder / "frp_token") == 0o600
    frp = load_config(folder).frp_settings
    assert (frp.server, frp.port, frp.mode) == ("vps.example.org", 7000, frp_mode)
    assert frp.verified and frp.token_file == folder / "frp_token"
    if frp_mode == "public":
        assert frp.remote_port == 6000 and not (folder / "frp_secret").exists()
        assert "connect 'hc1:" in out
    else:
        # Made now, so the laptop's copy holds the secret its visitor needs.
        assert frp.secret_file == folder / "frp_secret" and mode(frp.secret_file) == 0o600
        assert "connect 'hc1:" not in out and "needs the folder" in out
    assert "HANDY_COLAB_CONFIG" not in out and "secrets cannot carry them" in out
    token = (runtime / "frp_token").read_text().strip()
    assert token not in out + err


def test_portmap_writes_the_seed_format(
    home: Path, keys: KeyStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pem = keys.copy_private("rsa_pem", tmp_path / "alice.first.pem", mode=0o644)
    folder = tmp_path / "cfg"
    args = ["--route", "portmap", "--pem", str(pem), "--service-url", "alice-12345.portmap.host"]
    code, out, err = init(capsys, str(folder), *args, "--service-port", "12345", "--yes")
    assert code == 0, err
    assert json.loads((folder / "user_config.json").read_text()) == {
        "tunnel_options": {
            "service_url": "alice-12345.portmap.host",
            "service_port": 12345,
            "local_port": 12345,
        }
    }
    assert (folder / "alice.first.pem").read_bytes() == pem.read_bytes()
    assert mode(folder / "alice.first.pem") == 0o600
    cfg = load_config(folder)
    relay = cfg.ssh_relay
    assert (relay.host, relay.port, relay.user, relay.remote_port) == (
        "alice-12345.portmap.host",
        22,
        "alice",
        12345,
    )
    assert cfg.forwards == (12345,)
    laptop = (home / ".ssh" / "id_ed25519.pub").read_text()
    assert [k.blob for k in cfg.authorized_keys] == [blob(laptop)]
    # A secret has no file name to take the relay user from: the printed config names it.
    assert json.loads(secret_value(out, "HANDY_COLAB_CONFIG"))["relay"] == {"user": "alice"}
    assert "PRIVATE KEY" not in out


class _Userdata:
    """Colab's google.colab.userdata at its boundary (Colab cannot run here): the secrets
    as the user pasted them."""

    class SecretNotFoundError(Exception):
        pass

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = secrets

    def get(self, name: str) -> str:
        if name not in self.secrets:
            raise self.SecretNotFoundError(name)
        return self.secrets[name]


@pytest.mark.parametrize("route", ["cloudflared", "relay", "portmap"])
def test_the_printed_secrets_make_a_folder_that_loads(
    home: Path,
    keys: KeyStore,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    route: str,
) -> None:
    args = {
        "cloudflared": [],
        "relay": ["--relay-host", "relay.example.org", "--remote-port", "2222"],
        "portmap": [
            "--pem",
            str(keys.copy_private("rsa_pem", tmp_path / "bob.first.pem")),
            "--service-url",
            "bob-2000.portmap.host",
            "--service-port",
            "2000",
        ],
    }[route]
    folder = tmp_path / "cfg"
    code, out, err = init(capsys, str(folder), "--route", route, *args, "--yes")
    assert code == 0, err
    secrets = {
        name: secret_value(out, name) for name in ("HANDY_COLAB_CONFIG", "HANDY_COLAB_PUBLIC_KEYS")
    }
    m = re.search(r"HANDY_COLAB_RELAY_KEY\s+= the whole content of (\S+)", out)
    assert (m is not None) == (route != "cloudflared"), out
    if m:
        secrets["HANDY_COLAB_RELAY_KEY"] = Path(m.group(1)).read_text()
    monkeypatch.setattr(platforms.colab, "google_colab", lambda sub: _Userdata(secrets))
    made = platforms.folder_from_colab_secrets(tmp_path / "from-secrets")
    cfg = load_config(made)
    want = load_config(folder)
    assert (cfg.route, cfg.name, cfg.mode) == (want.route, want.name, want.mode)
    assert [k.blob for k in cfg.authorized_keys] == [k.blob for k in want.authorized_keys]
    if route != "cloudflared":
        assert cfg.ssh_relay.user == want.ssh_relay.user
        assert cfg.ssh_relay.key.data == want.ssh_relay.key.data


# --------------------------------------------------------------------------- never overwrite


def test_an_existing_config_is_kept_unless_force_which_backs_it_up(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "cfg"
    assert init(capsys, str(folder), "--yes")[0] == 0
    ssh_before = tree(home / ".ssh")
    before = tree(folder)
    old = (folder / "user_config.json").read_bytes()
    relay = ["--route", "relay", "--relay-host", "r.example.org", "--remote-port", "2222"]
    code, _, err = init(capsys, str(folder), *relay, "--yes")
    line = one_line_error(code, err)
    assert "user_config.json: already exists" in line and "--force" in line
    assert tree(folder) == before
    code, out, err = init(capsys, str(folder), *relay, "--force", "--yes")
    assert code == 0, err
    backups = list(folder.glob("user_config.json.handy-colab-backup-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == old
    assert f"Backup of the previous config: {backups[0]}" in out
    assert load_config(folder).route == "relay"
    assert tree(home / ".ssh") == ssh_before  # the key found the first time, not a new one
    # Run again with --force: the relay key the relay already trusts is kept, not remade.
    relay_key = (folder / RELAY_KEY).read_bytes()
    assert init(capsys, str(folder), *relay, "--force", "--yes")[0] == 0
    assert (folder / RELAY_KEY).read_bytes() == relay_key


def test_the_seed_readme_config_counts_as_a_config(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "mapping_config.json").write_text("{}\n")
    code, _, err = init(capsys, str(folder), "--yes")
    assert "mapping_config.json: already exists" in one_line_error(code, err)
    assert sorted(p.name for p in folder.iterdir()) == ["mapping_config.json"]


def test_a_different_key_file_in_the_folder_is_never_overwritten(
    home: Path, keys: KeyStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "cfg"
    folder.mkdir()
    keys.copy_public("laptop2", folder / "laptop.pub")
    (folder / "notes.txt").write_text("mine\n")
    before = tree(folder)
    for extra in ([], ["--force"]):
        code, _, err = init(capsys, str(folder), "--yes", *extra)
        assert "laptop.pub: already exists with other content" in one_line_error(code, err)
        assert tree(folder) == before
    # A directory where a file would go is refused the same way (not a traceback).
    other = tmp_path / "other"
    (other / "laptop.pub").mkdir(parents=True)
    code, _, err = init(capsys, str(other), "--yes")
    assert "laptop.pub: already exists" in one_line_error(code, err)


def test_a_config_that_would_not_load_is_undone(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # cloudflared's own flags are refused by the loader: nothing may stay behind.
    folder = tmp_path / "new" / "cfg"
    code, _, err = init(capsys, str(folder), "--cloudflared-arg=--url", "--yes")
    line = one_line_error(code, err)
    assert "would not load" in line and "extra_args[0]" in line
    assert not (tmp_path / "new").exists()
    # Over an existing config with --force: the old one is put back, no backup left over.
    kept = tmp_path / "kept"
    assert init(capsys, str(kept), "--yes")[0] == 0
    before = tree(kept)
    code, _, err = init(capsys, str(kept), "--force", "--cloudflared-arg=--token", "--yes")
    one_line_error(code, err)
    assert tree(kept) == before


BAD_INPUTS: list[tuple[list[str], str]] = [
    (["--route", "vpn"], "--route 'vpn': not a known choice"),
    (["--route", "relay", "--remote-port", "22"], "--relay-host: missing"),
    (["--route", "relay", "--relay-host", "r.example.org"], "--remote-port: missing"),
    (["--route", "relay", "--relay-host", "r", "--remote-port", "70000"], "not a port number"),
    (["--route", "relay", "--relay-host", "r", "--remote-port", "x1"], "not a port number"),
    (["--route", "relay", "--relay-host=-oProxyCommand=x", "--remote-port", "1"], "not a host"),
    (["--route", "relay", "--relay-host", "r", "--relay-port", "0", "--remote-port", "1"], "port"),
    (["--route", "relay", "--relay-host", "r", "--mode", "secret"], "--mode 'secret'"),
    (
        ["--route", "relay", "--relay-host", "r", "--remote-port", "1", "--relay-key", "/nope"],
        "cannot read",
    ),
    (
        ["--route", "relay", "--relay-host", "r", "--remote-port", "1", "--relay-host-key", "x"],
        "no SSH public key",
    ),
    (
        ["--route", "relay", "--relay-host", "r", "--mode", "private", "--socket-path", "rel.sock"],
        "--socket-path",
    ),
    (["--route", "frp", "--frp-server", "vps"], "--frp-ca: missing"),
    (["--route", "portmap", "--service-url", "a.portmap.host"], "--pem: missing"),
    (["--name", "no spaces"], "--name 'no spaces'"),
    (["--key", "/nonexistent/id_ed25519"], "no such private key file"),
]


@pytest.mark.parametrize(("args", "expect"), BAD_INPUTS)
def test_bad_input_is_one_line_and_writes_nothing(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expect: str
) -> None:
    folder = tmp_path / "cfg"
    code, _, err = init(capsys, str(folder), *args, "--yes")
    assert expect in one_line_error(code, err)
    assert not folder.exists()
    assert not (home / ".ssh").exists()  # no key made for a run that fails


def test_bad_key_files_name_the_flag(
    home: Path, keys: KeyStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    relay = ["--route", "relay", "--relay-host", "r", "--remote-port", "1"]
    pub = keys.public("ed25519")
    code, _, err = init(capsys, str(tmp_path / "a"), *relay, "--relay-key", str(pub), "--yes")
    assert "--relay-key" in one_line_error(code, err) and "not an SSH private key" in err
    enc = keys.private("enc_ed25519")
    code, _, err = init(capsys, str(tmp_path / "a"), *relay, "--relay-key", str(enc), "--yes")
    assert "passphrase" in one_line_error(code, err)
    frp = ["--route", "frp", "--frp-server", "vps", "--remote-port", "6000"]
    code, _, err = init(capsys, str(tmp_path / "a"), *frp, "--frp-ca", str(pub), "--yes")
    assert "--frp-ca" in one_line_error(code, err) and "not a PEM certificate" in err
    unreadable = tmp_path / "dir-not-file"
    unreadable.mkdir()
    code, _, err = init(capsys, str(tmp_path / "a"), *frp, "--frp-ca", str(unreadable), "--yes")
    assert "cannot read it" in one_line_error(code, err)
    assert not (tmp_path / "a").exists()


def test_an_unwritable_dir_is_one_line(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, _, err = init(capsys, str(afile / "cfg"), "--yes")
    assert "is not a folder" in one_line_error(code, err)
    # procfs takes no new entries, not even from root: under /proc/1 access() already says
    # so; directly under /proc only mkdir finds out (the write step's own error).
    code, _, err = init(capsys, "/proc/1/colab_data", "--yes")
    assert "/proc/1 is not writable" in one_line_error(code, err)
    code, _, err = init(capsys, "/proc/colab_data", "--yes")
    assert "cannot write the config folder" in one_line_error(code, err)
    assert not (home / ".ssh").exists()  # no key made for a folder that cannot be written
    if os.geteuid() != 0:  # root may write into a 0555 folder
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        code, _, err = init(capsys, str(ro / "cfg"), "--yes")
        assert "is not writable" in one_line_error(code, err)


# --------------------------------------------------------------------------- in a terminal


def test_interactive_on_a_real_terminal(home: Path, tmp_path: Path) -> None:
    """The questions, a wrong answer asked again, defaults in brackets, the new key's y/n."""
    src = Path(__file__).parents[2] / "src"
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(src), "TERM": "dumb"}
    work = tmp_path / "work"
    (work / "taken").mkdir(parents=True)
    (work / "taken" / "user_config.json").write_text("{}\n")
    argv = [
        "sh",
        "-c",
        f'cd "$1" && exec {shlex.quote(sys.executable)} -m handy_colab.cli init',
        "sh",
        str(work),
    ]
    s = PtySession(argv, env=env)
    try:
        s.expect(r"Config folder to write \[colab_data\]: ")
        s.send("taken\n")  # refused at once, not after every other question
        s.expect(r"taken/user_config\.json: already exists, and init never overwrites a config")
        s.expect(r"Config folder to write \[colab_data\]: ")
        s.send("mycfg\n")
        s.expect(r"Route \(cloudflared, relay, frp, portmap\) \[cloudflared\]: ")
        s.send("relay\n")
        s.expect(r"Relay host: ")
        s.send("relay.example.org\n")
        s.expect(r"Relay SSH port \[22\]: ")
        s.send("\n")
        s.expect(r"Relay account \[handy-colab\]: ")
        s.send("tunnel\n")
        s.expect(r"Mode \(public, private\) \[public\]: ")
        s.send("\n")
        s.expect(r"Port the relay exposes \(0: any\): ")
        s.send("99999\n")
        s.expect(r"--remote-port '99999': not a port number 0-65535\. Fix: ")
        s.expect(r"Port the relay exposes \(0: any\): ")
        s.send("2222\n")
        s.expect(r"Relay key file \(empty: make a new one\) \[none\]: ")
        s.send("\n")
        s.expect(r"Relay host key to pin \(empty: pinned on first use\) \[none\]: ")
        s.send("\n")
        s.expect(r"make a new ed25519 key at \S+id_ed25519\? \(y/n\) \[y\]: ")
        s.send("\n")
        s.expect(r"Next:")
        s.expect(r"ssh colab")
    finally:
        code = s.close()  # waits for the exit, kills it after 10 s, closes the terminal
    assert code == 0
    folder = work / "mycfg"
    cfg = load_config(folder)
    relay = cfg.ssh_relay
    assert (relay.host, relay.port, relay.user, relay.remote_port) == (
        "relay.example.org",
        22,
        "tunnel",
        2222,
    )
    assert mode(home / ".ssh" / "id_ed25519") == 0o600
    laptop = (home / ".ssh" / "id_ed25519.pub").read_text()
    assert [k.blob for k in cfg.authorized_keys] == [blob(laptop)]


def test_interactive_no_to_a_new_key_writes_nothing(home: Path, tmp_path: Path) -> None:
    src = Path(__file__).parents[2] / "src"
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(src), "TERM": "dumb"}
    folder = tmp_path / "cfg"
    argv = [sys.executable, "-m", "handy_colab.cli", "init", str(folder), "--route", "cloudflared"]
    s = PtySession(argv, env=env)
    try:
        s.expect(r"\(y/n\) \[y\]: ")
        s.send("n\n")
        s.expect(r"handy-colab: error: \S+id_ed25519: not made \(answered no\)\. Fix: pass --key")
    finally:
        code = s.close()
    assert code == 2
    assert not folder.exists() and not (home / ".ssh").exists()


def test_a_socket_path_relay_setup_would_refuse_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from handy_colab.client.init_inputs import check_socket_path

    with caplog.at_level("WARNING"):
        assert check_socket_path("/tmp/handy-colab-me-colab.sock") == (
            "/tmp/handy-colab-me-colab.sock"
        )
    assert caplog.text == ""
    with caplog.at_level("WARNING"):
        assert check_socket_path("/run/me/colab.sock") == "/run/me/colab.sock"
    assert "relay-setup" in caplog.text and "/tmp" in caplog.text
