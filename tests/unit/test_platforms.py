"""platforms: detection, Colab's terms warning, and the Drive/secrets adapters at their boundary.

Google's ``google.colab`` cannot run here, so a fake package with the same module names,
functions and exception classes is put on sys.path; the adapter is tested against it.
"""

from __future__ import annotations

import getpass
import importlib
import json
import logging
import stat
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from handy_colab import platforms
from handy_colab.config import load_config
from handy_colab.errors import ConfigError, HandyColabError, PlatformError
from handy_colab.platforms import (
    COLAB_TERMS_WARNING,
    PUBLIC_KEYS_FILE,
    RELAY_KEY_FILE,
    SECRET_CLOUDFLARED_TOKEN,
    SECRET_CONFIG,
    SECRET_PUBLIC_KEYS,
    SECRET_RELAY_KEY,
    TOKEN_FILE,
    Platform,
    colab_terms_warning_once,
    detect,
    folder_from_colab_secrets,
    mount_drive_if_needed,
)
from tests.unit.conftest import SEED_CONFIG, KeyStore, write_config

# --------------------------------------------------------------------------- the fake google.colab

_DRIVE_PY = '''
"""Fake google.colab.drive: records each mount and makes the folders a test asks for."""
import json
import pathlib

CALLS = pathlib.Path(__file__).with_name("mount_calls.jsonl")
MAKE = []  # paths relative to the mountpoint to create on mount
FAIL = None  # an exception to raise instead of mounting


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    with CALLS.open("a") as fh:
        fh.write(json.dumps({"mountpoint": mountpoint, "force_remount": force_remount,
                             "timeout_ms": timeout_ms, "readonly": readonly}) + "\\n")
    if FAIL is not None:
        raise FAIL
    root = pathlib.Path(mountpoint)
    (root / "MyDrive").mkdir(parents=True, exist_ok=True)
    for rel in MAKE:
        (root / rel).mkdir(parents=True, exist_ok=True)
'''

_USERDATA_PY = '''
"""Fake google.colab.userdata with the real module's names and messages."""


class SecretNotFoundError(Exception):
    def __init__(self, key):
        super().__init__(f"Secret {key} does not exist.")


class NotebookAccessError(Exception):
    def __init__(self, key):
        super().__init__(f"Notebook does not have access to secret {key}")


class TimeoutException(Exception):
    def __init__(self, key):
        super().__init__(f"Requesting secret {key} timed out.")


SECRETS = {}
DENIED = set()
TIMEOUT = set()
CALLS = []


def get(key):
    CALLS.append(key)
    if key in DENIED:
        raise NotebookAccessError(key)
    if key in TIMEOUT:
        raise TimeoutException(key)
    if key not in SECRETS:
        raise SecretNotFoundError(key)
    return SECRETS[key]
'''


def _google_modules() -> list[str]:
    return [name for name in sys.modules if name == "google" or name.startswith("google.")]


@pytest.fixture(autouse=True)
def _isolated_google() -> Iterator[None]:
    """No test sees another test's (or the environment's) google.* modules."""
    saved = {name: sys.modules.pop(name) for name in _google_modules()}
    yield
    for name in _google_modules():
        del sys.modules[name]
    sys.modules.update(saved)


@pytest.fixture(autouse=True)
def _fresh_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platforms.colab, "_terms_warned", False)


@pytest.fixture
def colab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The fake google.colab on sys.path; returns its drive and userdata modules."""
    site = tmp_path / "fake_site"
    pkg = site / "google" / "colab"
    pkg.mkdir(parents=True)
    (site / "google" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text('"""Fake google.colab."""\n')
    (pkg / "drive.py").write_text(textwrap.dedent(_DRIVE_PY))
    (pkg / "userdata.py").write_text(textwrap.dedent(_USERDATA_PY))
    monkeypatch.syspath_prepend(str(site))
    drive = importlib.import_module("google.colab.drive")
    userdata = importlib.import_module("google.colab.userdata")
    return SimpleNamespace(drive=drive, userdata=userdata, secrets=userdata.SECRETS)


def _mount_calls(colab: SimpleNamespace) -> list[dict[str, Any]]:
    path: Path = colab.drive.CALLS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text
    assert "Fix:" in text
    return text


# --------------------------------------------------------------------------- detection


def test_plain_linux_by_default(tmp_path: Path) -> None:
    p = detect({}, root=tmp_path)
    assert p == Platform(name="linux", label="Linux", workdir=None, user=getpass.getuser())


@pytest.mark.parametrize(
    "env",
    [{"COLAB_RELEASE_TAG": "release-colab_20240101-060000_RC00"}, {"COLAB_GPU": "0"},
     {"COLAB_BACKEND_VERSION": "next"}],
)  # fmt: skip
def test_colab_from_its_environment(tmp_path: Path, env: dict[str, str]) -> None:
    p = detect(env, root=tmp_path)
    assert (p.name, p.label, p.workdir) == ("colab", "Google Colab", tmp_path / "content")


def test_colab_from_the_module_alone(tmp_path: Path, colab: SimpleNamespace) -> None:
    # A Colab kernel whose environment was scrubbed still has google.colab.
    assert detect({}, root=tmp_path).name == "colab"


@pytest.mark.parametrize(
    "env",
    [{"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, {"KAGGLE_URL_BASE": "https://www.kaggle.com"},
     {"KAGGLE_DATA_PROXY_TOKEN": "x"}],
)  # fmt: skip
def test_kaggle_from_its_environment(tmp_path: Path, env: dict[str, str]) -> None:
    p = detect(env, root=tmp_path)
    assert (p.name, p.label, p.workdir) == ("kaggle", "Kaggle", tmp_path / "kaggle" / "working")


def test_kaggle_from_its_working_dir(tmp_path: Path) -> None:
    (tmp_path / "kaggle" / "working").mkdir(parents=True)
    assert detect({}, root=tmp_path).name == "kaggle"


def test_kaggle_cli_credentials_do_not_make_a_kaggle_runtime(tmp_path: Path) -> None:
    env = {"KAGGLE_USERNAME": "me", "KAGGLE_KEY": "k", "PAPERSPACE_API_KEY": "k"}
    assert detect(env, root=tmp_path).name == "linux"


def test_paperspace_from_its_environment(tmp_path: Path) -> None:
    for var in ("PAPERSPACE_NOTEBOOK_REPO_ID", "PAPERSPACE_CLUSTER_ID"):
        p = detect({var: "abc"}, root=tmp_path)
        assert (p.name, p.label, p.workdir) == (
            "paperspace",
            "Paperspace Gradient",
            tmp_path / "notebooks",
        )


@pytest.mark.parametrize(
    "env", [{"HOME": "/home/studio-lab-user"}, {"USER": "studio-lab-user"}, {}]
)
def test_studio_lab(tmp_path: Path, env: dict[str, str]) -> None:
    if not env:
        (tmp_path / "home" / "studio-lab-user").mkdir(parents=True)
    p = detect(env, root=tmp_path)
    assert (p.name, p.label, p.workdir) == (
        "sagemaker-studio-lab",
        "SageMaker Studio Lab",
        tmp_path / "home" / "studio-lab-user",
    )


def test_colab_wins_over_the_other_notebooks(tmp_path: Path) -> None:
    (tmp_path / "home" / "studio-lab-user").mkdir(parents=True)
    env = {"COLAB_GPU": "1", "PAPERSPACE_CLUSTER_ID": "c", "HOME": "/home/studio-lab-user"}
    assert detect(env, root=tmp_path).name == "colab"


def test_kaggle_wins_over_the_colab_base_image(tmp_path: Path, colab: SimpleNamespace) -> None:
    # Kaggle's image is built on Colab's: COLAB_* and google.colab are there too.
    env = {"COLAB_RELEASE_TAG": "r", "COLAB_GPU": "0", "KAGGLE_KERNEL_RUN_TYPE": "Batch"}
    assert detect(env, root=tmp_path).name == "kaggle"


def test_detect_reads_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAPERSPACE_NOTEBOOK_REPO_ID", "r")
    assert detect(root=tmp_path).name == "paperspace"


def test_python_is_this_interpreter(tmp_path: Path) -> None:
    assert detect({}, root=tmp_path).python == sys.executable


# --------------------------------------------------------------------------- default_workdir


def _colab_platform(root: Path) -> Platform:
    return detect({"COLAB_GPU": "0"}, root=root)


def test_workdir_is_the_callers_cwd(tmp_path: Path) -> None:
    (tmp_path / "content").mkdir()
    cwd = tmp_path / "project"
    cwd.mkdir()
    assert _colab_platform(tmp_path).default_workdir(cwd) == cwd


def test_workdir_from_slash_or_a_vanished_cwd_is_the_platforms(tmp_path: Path) -> None:
    (tmp_path / "content").mkdir()
    p = _colab_platform(tmp_path)
    assert p.default_workdir(Path("/")) == tmp_path / "content"
    assert p.default_workdir(tmp_path / "gone") == tmp_path / "content"


def test_workdir_falls_back_to_home(tmp_path: Path, home: Path) -> None:
    # The platform's directory does not exist (root is an empty tree), nor is there one on Linux.
    assert _colab_platform(tmp_path).default_workdir(Path("/")) == home
    assert detect({}, root=tmp_path).default_workdir(Path("/")) == home
    assert detect({}, root=tmp_path).default_workdir(tmp_path / "gone") == home


# --------------------------------------------------------------------------- terms warning


def test_terms_warning_once() -> None:
    first = colab_terms_warning_once()
    assert first == COLAB_TERMS_WARNING
    assert colab_terms_warning_once() is None
    assert colab_terms_warning_once() is None


def test_terms_warning_says_it_plainly() -> None:
    text = COLAB_TERMS_WARNING
    assert "\n" not in text
    for words in ("SSH", "free of charge", "paid", "responsible"):
        assert words in text


# --------------------------------------------------------------------------- Drive


def test_mount_when_the_folder_is_on_drive(tmp_path: Path, colab: SimpleNamespace) -> None:
    drive_root = tmp_path / "content" / "drive"
    folder = drive_root / "MyDrive" / "colab_data"
    colab.drive.MAKE = ["MyDrive/colab_data"]
    assert mount_drive_if_needed(folder, drive_root=drive_root, timeout_ms=5000) is True
    assert _mount_calls(colab) == [
        {"mountpoint": str(drive_root), "force_remount": False, "timeout_ms": 5000,
         "readonly": False}
    ]  # fmt: skip
    assert folder.is_dir()


def test_mount_compares_the_absolute_path(
    tmp_path: Path, colab: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    colab.drive.MAKE = ["MyDrive/cfg"]
    drive_root = tmp_path / "content" / "drive"
    assert mount_drive_if_needed(Path("content/drive/MyDrive/x/../cfg"), drive_root=drive_root)
    assert [c["mountpoint"] for c in _mount_calls(colab)] == [str(drive_root)]


def test_no_mount_for_a_local_folder(tmp_path: Path, colab: SimpleNamespace) -> None:
    del sys.modules["google.colab.drive"]
    drive_root = tmp_path / "content" / "drive"
    assert mount_drive_if_needed(tmp_path / "cfg", drive_root=drive_root) is False
    assert mount_drive_if_needed(tmp_path / "content" / "drive2", drive_root=drive_root) is False
    assert _mount_calls(colab) == []
    # Not even imported: off Colab a local folder must not depend on google.colab.
    assert "google.colab.drive" not in sys.modules


def test_no_mount_when_drive_is_already_mounted(tmp_path: Path, colab: SimpleNamespace) -> None:
    drive_root = tmp_path / "content" / "drive"
    (drive_root / "MyDrive" / "colab_data").mkdir(parents=True)
    assert mount_drive_if_needed(drive_root / "MyDrive" / "colab_data", drive_root=drive_root) is (
        False
    )
    assert _mount_calls(colab) == []


def test_mount_without_colab_says_what_to_do(tmp_path: Path) -> None:
    folder = tmp_path / "content" / "drive" / "MyDrive" / "colab_data"
    with pytest.raises(PlatformError) as err:
        mount_drive_if_needed(folder, drive_root=tmp_path / "content" / "drive")
    text = _one_line(err.value)
    assert str(folder) in text
    assert "not mounted" in text
    assert "Colab notebook" in text
    assert "local config folder" in text


def test_a_broken_google_colab_is_not_colab(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # google-colab pip-installed where no Colab kernel runs fails on import with anything.
    site = tmp_path / "broken_site"
    (site / "google" / "colab").mkdir(parents=True)
    (site / "google" / "__init__.py").write_text("")
    (site / "google" / "colab" / "__init__.py").write_text("raise RuntimeError('no kernel')\n")
    monkeypatch.syspath_prepend(str(site))
    folder = tmp_path / "content" / "drive" / "MyDrive" / "cfg"
    with pytest.raises(PlatformError, match="not available here"):
        mount_drive_if_needed(folder, drive_root=tmp_path / "content" / "drive")
    with pytest.raises(PlatformError, match="not available here"):
        folder_from_colab_secrets(tmp_path / "local")


def test_mount_failure_is_one_line(tmp_path: Path, colab: SimpleNamespace) -> None:
    colab.drive.FAIL = ValueError("mount failed: credential propagation was unsuccessful\nTrace")
    folder = tmp_path / "content" / "drive" / "MyDrive" / "colab_data"
    with pytest.raises(PlatformError) as err:
        mount_drive_if_needed(folder, drive_root=tmp_path / "content" / "drive")
    text = _one_line(err.value)
    assert str(folder) in text
    assert "credential propagation was unsuccessful" in text
    assert "Trace" not in text
    assert "drive.mount(" in text
    assert err.value.__cause__ is None


def test_folder_missing_on_drive_after_mount(tmp_path: Path, colab: SimpleNamespace) -> None:
    folder = tmp_path / "content" / "drive" / "MyDrive" / "colab_dta"
    with pytest.raises(PlatformError) as err:
        mount_drive_if_needed(folder, drive_root=tmp_path / "content" / "drive")
    text = _one_line(err.value)
    assert f"{folder}: not found on your Drive. Fix:" in text
    assert len(_mount_calls(colab)) == 1


# --------------------------------------------------------------------------- secrets


def _private_config(keys: KeyStore, **relay: Any) -> dict[str, Any]:
    """A private-mode config as in the e2e tests (tests/e2e/conftest.py)."""
    return {
        "name": "colab",
        "mode": "private",
        "relay": {
            "host": "relay.example.org",
            "port": 22,
            "user": "tunnel",
            "host_key": keys.blob("ecdsa"),
            "socket_path": "/tmp/handy-colab-tunnel-colab.sock",
            **relay,
        },
    }


def _full_secrets(keys: KeyStore, **config_over: Any) -> dict[str, str]:
    config = _private_config(keys)
    config.update(config_over)
    return {
        SECRET_CONFIG: json.dumps(config, indent=2),
        SECRET_RELAY_KEY: keys.private("ed25519").read_text(),
        SECRET_PUBLIC_KEYS: keys.public_line("laptop") + "\n" + keys.public_line("laptop2"),
    }


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_folder_entirely_from_secrets(
    tmp_path: Path, colab: SimpleNamespace, keys: KeyStore
) -> None:
    colab.secrets.update(_full_secrets(keys))
    dest = tmp_path / "secret_cfg"
    assert folder_from_colab_secrets(dest) == dest

    assert _mode(dest) == 0o700
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        ["user_config.json", RELAY_KEY_FILE, PUBLIC_KEYS_FILE]
    )
    for path in dest.iterdir():
        assert _mode(path) == 0o600, path
    # The user's config is not rewritten when nothing requires it.
    assert (dest / "user_config.json").read_text() == colab.secrets[SECRET_CONFIG]

    cfg = load_config(dest)
    assert cfg.mode == "private"
    assert cfg.relay.user == "tunnel"
    assert cfg.relay.key.path.name == RELAY_KEY_FILE
    assert cfg.relay.key.public_line.split()[:2] == keys.blob("ed25519").split()
    assert [k.blob for k in cfg.authorized_keys] == [keys.blob("laptop"), keys.blob("laptop2")]
    assert colab.userdata.CALLS == [
        SECRET_CONFIG,
        SECRET_RELAY_KEY,
        SECRET_PUBLIC_KEYS,
        SECRET_CLOUDFLARED_TOKEN,
    ]


def test_config_from_base_and_keys_from_secrets(
    tmp_path: Path, colab: SimpleNamespace, keys: KeyStore
) -> None:
    base = tmp_path / "drive_cfg"
    base.mkdir()
    config = _private_config(keys, key="alice.first.pem")
    del config["relay"]["user"]  # the user comes from the key's file name, as in the seed
    config["server"] = {"authorized_keys": ["laptop.pub"]}
    write_config(base, config)
    keys.copy_private("rsa_pem", base / "alice.first.pem")
    keys.copy_public("laptop", base / "laptop.pub")
    colab.secrets[SECRET_RELAY_KEY] = keys.private("ed25519").read_text()
    colab.secrets[SECRET_PUBLIC_KEYS] = keys.public_line("laptop2")

    dest = folder_from_colab_secrets(tmp_path / "local", base=base)

    # Base's keys are not copied: the secrets replace them (two relay keys would be ambiguous).
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        ["user_config.json", RELAY_KEY_FILE, PUBLIC_KEYS_FILE]
    )
    cfg = load_config(dest)
    assert cfg.relay.key.public_line.split()[:2] == keys.blob("ed25519").split()
    # The file names in the config were pointed at our copies, keeping their meaning.
    assert cfg.relay.user == "alice"
    assert [k.blob for k in cfg.authorized_keys] == [keys.blob("laptop2")]
    # The user's own folder is untouched.
    assert json.loads((base / "user_config.json").read_text()) == config


def test_seed_folder_keys_from_base_when_their_secrets_are_missing(
    tmp_path: Path, colab: SimpleNamespace, keys: KeyStore, seed_folder: Path
) -> None:
    (seed_folder / "relay_known_hosts").write_text("[h]:22 " + keys.blob("ecdsa") + "\n")
    host_keys = seed_folder / "host_keys"
    host_keys.mkdir()
    keys.copy_private("ed25519_b", host_keys / "ssh_host_ed25519_key")
    (seed_folder / "notes.txt").write_text("not a key\n")
    # A big file is never read to see if it is a key (a checkpoint on Drive would take minutes).
    big = keys.public_line("laptop2").encode() + b"\n#" + b"x" * 70_000 + b"\n"
    (seed_folder / "model.ckpt").write_bytes(big)
    colab.secrets[SECRET_CONFIG] = json.dumps(SEED_CONFIG)

    dest = folder_from_colab_secrets(tmp_path / "local", base=seed_folder)

    assert sorted(p.name for p in dest.iterdir()) == sorted(
        ["user_config.json", "alice.first.pem", "public_key.pub", "relay_known_hosts",
         "host_keys"]
    )  # fmt: skip
    assert _mode(dest / "alice.first.pem") == 0o600
    assert _mode(dest / "host_keys") == 0o700
    assert (dest / "host_keys" / "ssh_host_ed25519_key").read_bytes() == keys.private(
        "ed25519_b"
    ).read_bytes()
    cfg = load_config(dest)
    assert cfg.relay.user == "alice"
    assert cfg.relay.host == "user-12345.portmap.host"
    assert [k.line for k in cfg.authorized_keys] == [keys.public_line("laptop")]


def test_one_line_pasted_key_gets_its_lines_back(
    tmp_path: Path, colab: SimpleNamespace, keys: KeyStore
) -> None:
    colab.secrets.update(_full_secrets(keys))
    colab.secrets[SECRET_RELAY_KEY] = " ".join(keys.private("rsa_pem").read_text().split("\n"))
    dest = folder_from_colab_secrets(tmp_path / "local")
    assert (dest / RELAY_KEY_FILE).read_bytes() == keys.private("rsa_pem").read_bytes()
    assert load_config(dest).relay.key.public_line.split()[:2] == keys.blob("rsa_pem").split()


def test_existing_dest_made_private_and_stale_keys_removed(
    tmp_path: Path, colab: SimpleNamespace, keys: KeyStore, seed_folder: Path
) -> None:
    dest = tmp_path / "local"
    dest.mkdir(mode=0o755)
    dest.chmod(0o755)
    colab.secrets[SECRET_CONFIG] = json.dumps(_private_config(keys))
    folder_from_colab_secrets(dest, base=seed_folder)
    assert (dest / "alice.first.pem").exists()

    # Now the keys come from secrets: the earlier copies must not linger beside them.
    colab.secrets.update(_full_secrets(keys))
    (dest / "notes.txt").write_text("mine\n")
    folder_from_colab_secrets(dest, base=seed_folder)
    assert _mode(dest) == 0o700
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        ["user_config.json", RELAY_KEY_FILE, PUBLIC_KEYS_FILE, "notes.txt"]
    )
    assert load_config(dest).relay.key.path.name == RELAY_KEY_FILE


def test_blank_secret_counts_as_missing(
    tmp_path: Path, colab: SimpleNamespace, keys: KeyStore
) -> None:
    colab.secrets.update(_full_secrets(keys))
    colab.secrets[SECRET_CONFIG] = "  \n"
    with pytest.raises(PlatformError, match=SECRET_CONFIG):
        folder_from_colab_secrets(tmp_path / "local")


def test_public_keys_secret_is_optional(
    tmp_path: Path, colab: SimpleNamespace, keys: KeyStore
) -> None:
    secrets = _full_secrets(keys)
    del secrets[SECRET_PUBLIC_KEYS]
    colab.secrets.update(secrets)
    dest = folder_from_colab_secrets(tmp_path / "local")
    # As with a folder holding only the relay key: its owner may log in.
    assert [k.blob for k in load_config(dest).authorized_keys] == [keys.blob("ed25519")]


# ----------------------------------------------------------------- secrets: errors


def test_secrets_without_colab(tmp_path: Path) -> None:
    with pytest.raises(PlatformError) as err:
        folder_from_colab_secrets(tmp_path / "local")
    text = _one_line(err.value)
    assert SECRET_CONFIG in text
    assert "Colab notebook" in text
    assert not (tmp_path / "local").exists()


@pytest.mark.parametrize("name", [SECRET_CONFIG, SECRET_RELAY_KEY])
def test_missing_required_secret_is_named(
    tmp_path: Path, colab: SimpleNamespace, keys: KeyStore, name: str
) -> None:
    secrets = _full_secrets(keys)
    del secrets[name]
    colab.secrets.update(secrets)
    with pytest.raises(PlatformError) as err:
        folder_from_colab_secrets(tmp_path / "local")
    text = _one_line(err.value)
    assert f"Colab secret {name} is not set" in text
    assert "Secrets panel (key icon)" in text
    assert "enable notebook access" in text
    assert not (tmp_path / "local").exists()


def test_missing_relay_key_with_a_base_without_one(
    tmp_path: Path, colab: SimpleNamespace, keys: KeyStore
) -> None:
    base = tmp_path / "base"
    base.mkdir()
    keys.copy_public("laptop", base)
    colab.secrets[SECRET_CONFIG] = json.dumps(_private_config(keys))
    with pytest.raises(PlatformError) as err:
        folder_from_colab_secrets(tmp_path / "local", base=base)
    assert f"{SECRET_RELAY_KEY} is not set (or empty) and {base} holds no private key" in (
        _one_line(err.value)
    )


def test_notebook_access_not_granted(
    tmp_path: Path, colab: SimpleNamespace, keys: KeyStore
) -> None:
    colab.secrets.update(_full_secrets(keys))
    colab.userdata.DENIED.add(SECRET_RELAY_KEY)
    with pytest.raises(PlatformError) as err:
        folder_from_colab_secrets(tmp_path / "local")
    text = _one_line(err.value)
    assert SECRET_RELAY_KEY in text
    assert "enable notebook access" in text
    assert "no access" in text


def test_access_request_timed_out(tmp_path: Path, colab: SimpleNamespace, keys: KeyStore) -> None:
    colab.secrets.update(_full_secrets(keys))
    colab.userdata.TIMEOUT.add(SECRET_CONFIG)
    with pytest.raises(PlatformError) as err:
        folder_from_colab_secrets(tmp_path / "local")
    assert "timed out" in _one_line(err.value)


def test_other_userdata_versions_still_give_a_plain_error(
    tmp_path: Path, colab: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A module without the exception classes we look up, raising something else entirely.
    for name in ("SecretNotFoundError", "NotebookAccessError", "TimeoutException"):
        monkeypatch.delattr(colab.userdata, name)

    def get(key: str) -> str:
        raise RuntimeError("backend unavailable")

    monkeypatch.setattr(colab.userdata, "get", get)
    with pytest.raises(PlatformError) as err:
        folder_from_colab_secrets(tmp_path / "local")
    text = _one_line(err.value)
    assert f"{SECRET_CONFIG}: could not be read (RuntimeError)" in text


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("not a key at all", "does not look like a private key"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
         "does not look like a private key"),
        ("enc_ed25519", "passphrase"),
        ("pub:laptop", "does not look like a private key"),
    ],
)  # fmt: skip
def test_relay_key_secret_must_be_an_unencrypted_private_key(
    tmp_path: Path, colab: SimpleNamespace, keys: KeyStore, value: str, problem: str
) -> None:
    colab.secrets.update(_full_secrets(keys))
    if value == "enc_ed25519":
        value = keys.private("enc_ed25519").read_text()
    elif value.startswith("pub:"):
        value = keys.public_line(value[4:])
    colab.secrets[SECRET_RELAY_KEY] = value
    with pytest.raises(PlatformError) as err:
        folder_from_colab_secrets(tmp_path / "local")
    text = _one_line(err.value)
    assert SECRET_RELAY_KEY in text
    assert problem in text
    assert not (tmp_path / "local" / RELAY_KEY_FILE).exists()


def test_public_keys_secret_errors(tmp_path: Path, colab: SimpleNamespace, keys: KeyStore) -> None:
    colab.secrets.update(_full_secrets(keys))
    colab.secrets[SECRET_PUBLIC_KEYS] = keys.private("ed25519_c").read_text()
    with pytest.raises(PlatformError, match="holds a private key"):
        folder_from_colab_secrets(tmp_path / "local")
    colab.secrets[SECRET_PUBLIC_KEYS] = keys.public_line("laptop") + "\nssh-ed25519 garbage\n"
    with pytest.raises(PlatformError, match="line 2 is not an SSH public key"):
        folder_from_colab_secrets(tmp_path / "local")
    colab.secrets[SECRET_PUBLIC_KEYS] = "# only a comment\n"
    with pytest.raises(PlatformError, match="holds no SSH public key"):
        folder_from_colab_secrets(tmp_path / "local")


def test_seed_config_needs_the_relay_user_with_a_secret_key(
    tmp_path: Path, colab: SimpleNamespace, keys: KeyStore
) -> None:
    colab.secrets.update(_full_secrets(keys))
    colab.secrets[SECRET_CONFIG] = json.dumps(SEED_CONFIG)
    with pytest.raises(PlatformError) as err:
        folder_from_colab_secrets(tmp_path / "local")
    text = _one_line(err.value)
    assert "relay user is unknown" in text
    assert '"relay": {"user": "<user>"}' in text
    assert f"secret {SECRET_CONFIG}" in text

    # With the user given, the seed format works from secrets too.
    colab.secrets[SECRET_CONFIG] = json.dumps({**SEED_CONFIG, "relay": {"user": "alice"}})
    cfg = load_config(folder_from_colab_secrets(tmp_path / "local"))
    assert (cfg.relay.user, cfg.relay.remote_port, cfg.mode) == ("alice", 12345, "public")


def test_invalid_config_secret_names_the_secret(
    tmp_path: Path, colab: SimpleNamespace, keys: KeyStore
) -> None:
    colab.secrets.update(_full_secrets(keys))
    colab.secrets[SECRET_CONFIG] = '{"name": "colab",\n "mode": }'
    with pytest.raises(ConfigError) as err:
        folder_from_colab_secrets(tmp_path / "local")
    assert f"secret {SECRET_CONFIG}: invalid JSON at line 2 column" in _one_line(err.value)


def test_no_secret_value_in_any_message_or_log(
    tmp_path: Path,
    colab: SimpleNamespace,
    keys: KeyStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    good = _full_secrets(keys)
    bad_key = keys.private("enc_ed25519").read_text()
    scenarios: list[dict[str, str]] = [
        {**good, SECRET_RELAY_KEY: "hunter2-not-a-key-value"},
        {**good, SECRET_RELAY_KEY: bad_key},
        {**good, SECRET_RELAY_KEY: keys.public_line("laptop")},
        {**good, SECRET_PUBLIC_KEYS: keys.private("ed25519").read_text()},
        {**good, SECRET_PUBLIC_KEYS: "ssh-ed25519 hunter2-not-a-key-value"},
        {**good, SECRET_CONFIG: '{"relay": {"user": "hunter2-user", "key": 5,}}'},
        {**good, SECRET_CONFIG: json.dumps(SEED_CONFIG)},
        {SECRET_CONFIG: good[SECRET_CONFIG]},
        good,  # success: only the log is checked
    ]
    messages: list[str] = []
    for i, secrets in enumerate(scenarios):
        colab.secrets.clear()
        colab.secrets.update(secrets)
        try:
            folder_from_colab_secrets(tmp_path / f"d{i}")
        except HandyColabError as exc:
            messages.append(str(exc))
        else:
            assert secrets is good
    assert len(messages) == len(scenarios) - 1
    fragments = {"hunter2"}
    for secrets in scenarios:
        for key_value in (secrets.get(SECRET_RELAY_KEY, ""), secrets.get(SECRET_PUBLIC_KEYS, "")):
            for line in key_value.splitlines():
                fragments |= {part for part in line.split() if len(part) >= 16}
    assert len(fragments) >= 10  # the check below has key material to look for
    everything = "\n".join(messages + [r.getMessage() for r in caplog.records])
    leaked = [f for f in fragments if f in everything]
    assert leaked == []


# --------------------------------------------------------------------------- cloudflared


def test_only_the_laptop_key_gives_a_quick_tunnel(
    tmp_path: Path, colab: SimpleNamespace, keys: KeyStore
) -> None:
    colab.secrets[SECRET_PUBLIC_KEYS] = keys.public_line("laptop")
    dest = folder_from_colab_secrets(tmp_path / "secret_cfg")
    assert sorted(p.name for p in dest.iterdir()) == sorted(["user_config.json", PUBLIC_KEYS_FILE])
    cfg = load_config(dest)
    assert (cfg.route, cfg.relay, cfg.cloudflared.named) == ("cloudflared", None, False)
    assert [k.blob for k in cfg.authorized_keys] == [keys.blob("laptop")]


def test_no_secret_at_all_still_names_the_config_secret(
    tmp_path: Path, colab: SimpleNamespace
) -> None:
    with pytest.raises(PlatformError, match=SECRET_CONFIG):
        folder_from_colab_secrets(tmp_path / "secret_cfg")


def test_named_tunnel_token_from_a_secret(
    tmp_path: Path, colab: SimpleNamespace, keys: KeyStore
) -> None:
    token = "eyJhIjoiYWNjdCIsInQiOiJ0dW5uZWwiLCJzIjoic2VjcmV0In0="
    colab.secrets.update(
        {
            SECRET_CONFIG: json.dumps({"cloudflared": {"hostname": "colab.example.com"}}),
            SECRET_PUBLIC_KEYS: keys.public_line("laptop"),
            SECRET_CLOUDFLARED_TOKEN: token,
        }
    )
    dest = folder_from_colab_secrets(tmp_path / "secret_cfg")
    assert (dest / TOKEN_FILE).read_text() == token + "\n"
    assert _mode(dest / TOKEN_FILE) == 0o600
    cfg = load_config(dest)
    assert cfg.cloudflared.named and cfg.cloudflared.token_file == dest / TOKEN_FILE
    # The secret deleted later: its copy does not linger.
    del colab.secrets[SECRET_CLOUDFLARED_TOKEN]
    colab.secrets[SECRET_CONFIG] = "{}"
    folder_from_colab_secrets(dest)
    assert not (dest / TOKEN_FILE).exists()


def test_token_secret_without_hostname_is_one_line(
    tmp_path: Path, colab: SimpleNamespace, keys: KeyStore
) -> None:
    colab.secrets.update(
        {SECRET_PUBLIC_KEYS: keys.public_line("laptop"), SECRET_CLOUDFLARED_TOKEN: "tok-value"}
    )
    with pytest.raises(PlatformError) as err:
        folder_from_colab_secrets(tmp_path / "secret_cfg")
    msg = str(err.value)
    assert SECRET_CLOUDFLARED_TOKEN in msg and "cloudflared.hostname" in msg and "Fix:" in msg
    assert "tok-value" not in msg
