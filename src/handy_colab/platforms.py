"""Platform adapters: which notebook service we run on, and thin wrappers of its own APIs.

Detection looks at environment variables first, then at well-known paths, so a runtime
started with a scrubbed environment (a service manager, ``env -i``) is still recognised.
Google's ``google.colab`` module only exists on Colab (and on Kaggle, whose image is built on
Colab's), so it is imported inside the functions that need it, never at module import.
"""

from __future__ import annotations

import contextlib
import getpass
import importlib
import importlib.util
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .config import CONFIG_FILE, RELAY_KNOWN_HOSTS
from .configfields import parse_config_text
from .errors import ConfigError, KeyFileError, PlatformError
from .fsutil import atomic_write
from .keys import (
    _MAX_KEY_FILE,
    HOST_KEY_DIR,
    load_private_key,
    load_public_keys,
    parse_public_key_line,
)
from .tunnels.cloudflared_config import DEFAULT_TOKEN_FILE

log = logging.getLogger(__name__)

PlatformName = Literal["colab", "kaggle", "paperspace", "sagemaker-studio-lab", "linux"]

_LABELS: dict[PlatformName, str] = {
    "colab": "Google Colab",
    "kaggle": "Kaggle",
    "paperspace": "Paperspace Gradient",
    "sagemaker-studio-lab": "SageMaker Studio Lab",
    "linux": "Linux",
}


@dataclass(frozen=True)
class Platform:
    name: PlatformName
    label: str
    workdir: Path | None  # the platform's notebook directory; None on plain Linux
    user: str  # the user SSH sessions log in as: whoever runs this process

    @property
    def python(self) -> str:
        """The interpreter sessions should use: the one running handy-colab.

        That is the environment ``pip install handy-colab`` went into, normally the notebook
        kernel's, so packages installed from the notebook import in an SSH session too.
        """
        return sys.executable

    def default_workdir(self, cwd: Path) -> Path:
        """Where SSH sessions start when the config does not say.

        The caller's cwd is what the user sees in the notebook, except when it is ``/`` or
        gone: that is a service manager's cwd, not a choice, so fall back to the platform's
        notebook directory, then to the home directory.
        """
        if cwd != Path("/") and cwd.is_dir():
            return cwd
        if self.workdir is not None and self.workdir.is_dir():
            return self.workdir
        return Path.home()


# --------------------------------------------------------------------------- detection

# Set by the Colab runtime for every kernel; COLAB_GPU is set (to 0) on CPU runtimes too.
_COLAB_VARS = ("COLAB_RELEASE_TAG", "COLAB_GPU", "COLAB_BACKEND_VERSION")
# Set by Kaggle's kernel runner (kagglehub keys on KAGGLE_KERNEL_RUN_TYPE). Deliberately not
# the whole KAGGLE_* prefix: KAGGLE_USERNAME/KAGGLE_KEY are the Kaggle CLI's credentials and
# sit in many a laptop's environment.
_KAGGLE_VARS = (
    "KAGGLE_KERNEL_RUN_TYPE",
    "KAGGLE_URL_BASE",
    "KAGGLE_DATA_PROXY_TOKEN",
    "KAGGLE_DATA_PROXY_URL",
    "KAGGLE_USER_SECRETS_TOKEN",
)
# Gradient notebooks export PAPERSPACE_* (PAPERSPACE_NOTEBOOK_REPO_ID, PAPERSPACE_CLUSTER_ID,
# ...). PAPERSPACE_API_KEY is the gradient CLI's credential, found on laptops too.
_PAPERSPACE_PREFIX = "PAPERSPACE_"
_PAPERSPACE_NOT_MARKERS = {"PAPERSPACE_API_KEY"}
# Studio Lab is inferred, not documented as an API: its JupyterLab runs as the user
# "studio-lab-user" with HOME=/home/studio-lab-user, the persistent project directory, and
# that is what other tools check for (amplpy, for one). No marker variable is documented.
_STUDIO_LAB_USER = "studio-lab-user"


def detect(environ: Mapping[str, str] | None = None, root: Path = Path("/")) -> Platform:
    """Which platform this process runs on, with that platform's defaults.

    ``root`` prefixes every well-known path, so tests can use a temporary tree.
    """
    env = os.environ if environ is None else environ
    name = _detect_name(env, root)
    workdir: Path | None = {
        "colab": root / "content",
        "kaggle": root / "kaggle" / "working",
        "paperspace": root / "notebooks",
        "sagemaker-studio-lab": root / "home" / _STUDIO_LAB_USER,
        "linux": None,
    }[name]
    platform = Platform(name=name, label=_LABELS[name], workdir=workdir, user=_current_user(env))
    log.debug("platform: %s (workdir %s, user %s)", platform.label, workdir, platform.user)
    return platform


def _detect_name(env: Mapping[str, str], root: Path) -> PlatformName:
    # Kaggle comes before Colab: Kaggle's notebook image is built on Colab's, so COLAB_* and
    # google.colab are present there too (kagglehub changed its Colab check for this reason),
    # and no Kaggle marker is known on Colab. Among the rest, Colab wins.
    if any(env.get(var) for var in _KAGGLE_VARS) or (root / "kaggle" / "working").is_dir():
        return "kaggle"
    if any(env.get(var) is not None for var in _COLAB_VARS):
        return "colab"
    if any(
        var.startswith(_PAPERSPACE_PREFIX) and var not in _PAPERSPACE_NOT_MARKERS and value
        for var, value in env.items()
    ):
        return "paperspace"
    if (
        env.get("HOME", "").rstrip("/") == f"/home/{_STUDIO_LAB_USER}"
        or _STUDIO_LAB_USER in (env.get("USER"), env.get("LOGNAME"))
        or (root / "home" / _STUDIO_LAB_USER).is_dir()
    ):
        return "sagemaker-studio-lab"
    # The module alone is the weakest signal (anyone may `pip install google-colab`), so it
    # only decides when nothing more specific matched: a Colab kernel whose environment was
    # scrubbed.
    if _colab_module_present():
        return "colab"
    return "linux"


def _colab_module_present() -> bool:
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):
        # find_spec imports the parent package "google"; a broken or absent one is "no".
        return False


def _current_user(env: Mapping[str, str]) -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        # A container may run under a uid with no passwd entry and no USER/LOGNAME.
        return env.get("USER") or str(os.getuid())


# --------------------------------------------------------------------------- Colab's terms

COLAB_TERMS_WARNING = (
    "Note: Google Colab's terms disallow remote shells such as SSH (and remote desktops) on "
    "runtimes used free of charge; use paid compute (Colab Pro, Pro+ or Pay As You Go compute "
    "units) for SSH access. You are responsible for complying with Colab's terms "
    "(https://research.google.com/colaboratory/faq.html)."
)

_terms_lock = threading.Lock()
_terms_warned = False


def colab_terms_warning_once() -> str | None:
    """The terms warning the first time it is asked for in this process, None afterwards."""
    global _terms_warned
    with _terms_lock:
        if _terms_warned:
            return None
        _terms_warned = True
        return COLAB_TERMS_WARNING


# --------------------------------------------------------------------------- Google Drive

DRIVE_ROOT = Path("/content/drive")


def mount_drive_if_needed(
    folder: Path, *, drive_root: Path = DRIVE_ROOT, timeout_ms: int = 120000
) -> bool:
    """Mount Google Drive when ``folder`` lies on it and it is not mounted yet.

    Returns True when it mounted Drive. The paths are compared as written (made absolute but
    not resolved): before the mount nothing under ``drive_root`` exists to resolve, and a
    symlink into Drive is a choice of the user's that says nothing about where Drive is.
    """
    absolute = Path(os.path.abspath(folder))
    root = Path(os.path.abspath(drive_root))
    if not absolute.is_relative_to(root):
        return False
    # Colab mounts a FUSE file system at drive_root; MyDrive covers a mount the check misses.
    if os.path.ismount(root) or (root / "MyDrive").is_dir():
        return False
    try:
        drive = _colab("drive")
    except Exception:
        # ImportError off Colab; anything else from a google-colab package installed where
        # no Colab kernel runs. Either way Colab's Drive service is not reachable from here.
        raise PlatformError(
            f"{folder}: lies under {root}, but Google Drive is not mounted and Colab's "
            f"google.colab module is not available here. Fix: run this in a Colab notebook, "
            f"or mount Drive yourself, or pass a local config folder"
        ) from None
    log.info("mounting Google Drive at %s for %s", root, folder)
    try:
        drive.mount(str(root), timeout_ms=timeout_ms)
    except Exception as exc:
        raise PlatformError(
            f"{folder}: mounting Google Drive at {root} failed: {_one_line(exc)}. Fix: mount "
            f"it in a notebook cell (from google.colab import drive; "
            f"drive.mount('{root}')), then run again"
        ) from None
    if not absolute.exists():
        raise PlatformError(
            f"{folder}: not found on your Drive. Fix: create that folder on Google Drive "
            f"with {CONFIG_FILE} and your keys in it, or pass the folder's right path "
            f"(Drive's top level is {root / 'MyDrive'})"
        )
    return True


# --------------------------------------------------------------------------- Colab secrets

SECRET_CONFIG = "HANDY_COLAB_CONFIG"  # the text of user_config.json
SECRET_RELAY_KEY = "HANDY_COLAB_RELAY_KEY"  # the relay's private key (PEM/OpenSSH text)
SECRET_PUBLIC_KEYS = "HANDY_COLAB_PUBLIC_KEYS"  # the laptop's public key line(s)
SECRET_CLOUDFLARED_TOKEN = "HANDY_COLAB_CLOUDFLARED_TOKEN"  # a named tunnel's token

RELAY_KEY_FILE = "relay_key"
PUBLIC_KEYS_FILE = "authorized_keys.pub"
TOKEN_FILE = DEFAULT_TOKEN_FILE

_SECRETS_FIX = "add it in Colab's Secrets panel (key icon) and enable notebook access"
# Tool-owned state, not keys: copied from the base folder (with its host_keys/) so the relay's
# and the runtime's host keys stay pinned across runtimes; a fresh local folder would learn
# the relay's key anew on first use and present a new host key to the laptop.
_PINS = (RELAY_KNOWN_HOSTS,)


def folder_from_colab_secrets(dest: Path, *, base: Path | None = None) -> Path:
    """Build a config folder in ``dest`` from Colab's secrets; return ``dest``.

    ``user_config.json`` comes from the HANDY_COLAB_CONFIG secret, else from ``base``; the
    relay key and the public keys come from their secrets, else from ``base``'s key files.
    ``dest`` is made private (0700, files 0600). Secret values never reach a message or log.
    Must run in the notebook's kernel process: Colab answers secret requests only there.
    """
    userdata = _colab_or_error(
        "userdata",
        f"read the Colab secrets {SECRET_CONFIG}, {SECRET_RELAY_KEY} and {SECRET_PUBLIC_KEYS}",
    )
    config_text = _get_secret(userdata, SECRET_CONFIG)
    relay_text = _get_secret(userdata, SECRET_RELAY_KEY)
    public_text = _get_secret(userdata, SECRET_PUBLIC_KEYS)
    token_text = _get_secret(userdata, SECRET_CLOUDFLARED_TOKEN)
    base_dir = base if base is not None and base.is_dir() else None
    base_note = f" and {base} is not a folder" if base is not None and base_dir is None else ""
    have_public = public_text is not None or bool(
        base_dir is not None and _base_keys(base_dir, private=False)
    )

    # The config: parsed now so a mistake names the secret (or base file), not our copy.
    config_raw: bytes
    if config_text is not None:
        config_raw = config_text.encode()
        config_where = f"secret {SECRET_CONFIG}"
    elif base_dir is not None and (base_dir / CONFIG_FILE).is_file():
        config_raw = (base_dir / CONFIG_FILE).read_bytes()
        config_where = str(base_dir / CONFIG_FILE)
    elif have_public and relay_text is None:
        # Just the laptop's key (no relay key either): a cloudflared quick tunnel, no account.
        config_raw = b"{}\n"
        config_where = f"defaults (no {SECRET_CONFIG}: a cloudflared quick tunnel)"
    else:
        where = f" and {base_dir / CONFIG_FILE} does not exist" if base_dir else base_note
        raise PlatformError(
            f"Colab secret {SECRET_CONFIG} is not set (or empty){where}. Fix: {_SECRETS_FIX} "
            f"(its value: the content of {CONFIG_FILE})"
        )
    config_data = _parse_config(config_raw, config_where)

    relay_key: bytes | None = None
    names_relay = bool(config_data.get("tunnel_options") or config_data.get("relay"))
    if relay_text is not None:
        relay_key = _normalize_private_key(relay_text)
        if b"PRIVATE KEY-----" not in relay_key:
            raise _not_a_private_key()
    elif names_relay and (base_dir is None or not _base_keys(base_dir, private=True)):
        where = f" and {base_dir} holds no private key" if base_dir else base_note
        raise PlatformError(
            f"Colab secret {SECRET_RELAY_KEY} is not set (or empty){where}. Fix: {_SECRETS_FIX} "
            f"(its value: the relay's private key file, BEGIN to END line)"
        )

    public_lines: list[str] | None = None
    if public_text is not None:
        public_lines = _public_key_lines(public_text)

    config_data, changed = _adapt_config(
        config_data,
        config_where,
        relay_from_secret=relay_key is not None and names_relay,
        public_from_secret=public_lines is not None,
    )
    if token_text is not None:
        section = config_data.get("cloudflared")
        if not isinstance(section, dict) or not section.get("hostname"):
            raise PlatformError(
                f"Colab secret {SECRET_CLOUDFLARED_TOKEN} is set, but the config "
                f"({config_where}) names no cloudflared.hostname. Fix: add "
                f'"cloudflared": {{"hostname": "<your tunnel\'s hostname>"}} to the config, or '
                f"delete the secret for a quick tunnel"
            )
        if section.get("token_file") not in (None, TOKEN_FILE):
            section["token_file"] = TOKEN_FILE
            changed = True

    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir's mode is filtered by the umask and ignored for an existing folder.
    os.chmod(dest, 0o700)
    written: set[str] = set()
    if relay_key is not None:
        _write_relay_key(dest / RELAY_KEY_FILE, relay_key)
        written.add(RELAY_KEY_FILE)
    elif base_dir is not None:
        written |= _copy_files(_base_keys(base_dir, private=True), dest)
    if public_lines is not None:
        atomic_write(dest / PUBLIC_KEYS_FILE, "".join(f"{line}\n" for line in public_lines), 0o600)
        written.add(PUBLIC_KEYS_FILE)
    elif base_dir is not None:
        written |= _copy_files(_base_keys(base_dir, private=False), dest)
    if token_text is not None:
        atomic_write(dest / TOKEN_FILE, token_text.strip() + "\n", 0o600)
        written.add(TOKEN_FILE)
    if base_dir is not None:
        pins = [base_dir / n for n in _PINS if (base_dir / n).is_file()]
        if token_text is None and (base_dir / TOKEN_FILE).is_file():
            pins.append(base_dir / TOKEN_FILE)
        written |= _copy_files(pins, dest)
        _copy_host_keys(base_dir, dest)

    if changed:
        atomic_write(dest / CONFIG_FILE, json.dumps(config_data, indent=4) + "\n", 0o600)
    else:
        # Unchanged: the user's bytes exactly, so nothing of theirs is reformatted or lost.
        atomic_write(dest / CONFIG_FILE, config_raw, 0o600)
    written.add(CONFIG_FILE)
    _remove_stale_keys(dest, keep=written)
    log.info(
        "config folder %s made from Colab secrets: config from %s, relay key from %s, "
        "public keys from %s",
        dest,
        config_where,
        f"secret {SECRET_RELAY_KEY}" if relay_key is not None else base_dir,
        f"secret {SECRET_PUBLIC_KEYS}" if public_lines is not None else (base_dir or "config"),
    )
    return dest


def _get_secret(userdata: Any, name: str) -> str | None:
    """The secret's value; None when it does not exist (or is blank)."""
    # Looked up on the module, not imported by name: another google.colab version may lack
    # one of them, and then only the generic branch below catches its errors.
    not_found = getattr(userdata, "SecretNotFoundError", None)
    no_access = getattr(userdata, "NotebookAccessError", None)
    timeout = getattr(userdata, "TimeoutException", None)
    try:
        value = userdata.get(name)
    except Exception as exc:
        # Only the exception's type is reported: its text could in principle echo the value.
        if isinstance(no_access, type) and isinstance(exc, no_access):
            raise PlatformError(
                f"Colab secret {name}: this notebook has no access to it. Fix: open Colab's "
                f"Secrets panel (key icon) and enable notebook access for {name}"
            ) from None
        if isinstance(timeout, type) and isinstance(exc, timeout):
            raise PlatformError(
                f"Colab secret {name}: timed out waiting for access to be granted. Fix: run "
                f"again and allow access when Colab asks, or {_SECRETS_FIX}"
            ) from None
        if isinstance(not_found, type) and isinstance(exc, not_found):
            return None
        raise PlatformError(
            f"Colab secret {name}: could not be read ({type(exc).__name__}). Fix: {_SECRETS_FIX}"
        ) from None
    if not isinstance(value, str) or not value.strip():
        return None
    return value


def _parse_config(raw: bytes, where: str) -> dict[str, Any]:
    data = parse_config_text(raw, where)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a JSON object. Fix: use {{...}}")
    return data


def _normalize_private_key(text: str) -> bytes:
    """The key as a file would hold it.

    A key pasted into a one-line field may arrive with its line breaks turned into spaces;
    OpenSSH and cryptography need the lines back, and a final newline.
    """
    text = text.replace("\r\n", "\n").strip()
    match = re.fullmatch(
        r"(-----BEGIN [A-Z0-9 ]+-----)\s+(.+?)\s+(-----END [A-Z0-9 ]+-----)", text, re.DOTALL
    )
    if match and "\n" not in match.group(2).strip():
        text = "\n".join([match.group(1), *match.group(2).split(), match.group(3)])
    return (text + "\n").encode()


def _not_a_private_key(detail: str = "does not look like a private key") -> PlatformError:
    return PlatformError(
        f"Colab secret {SECRET_RELAY_KEY}: {detail}. Fix: paste the relay's private key "
        f"file (from -----BEGIN to the -----END line, not the .pub) as its value"
    )


def _write_relay_key(path: Path, data: bytes) -> None:
    atomic_write(path, data, 0o600)
    try:
        key = load_private_key(path)
    except KeyFileError:
        path.unlink()
        raise _not_a_private_key(
            "is protected by a passphrase, and the tunnel cannot prompt for it"
        ) from None
    if key is None:
        path.unlink()
        raise _not_a_private_key()


def _public_key_lines(text: str) -> list[str]:
    if "PRIVATE KEY" in text:
        raise PlatformError(
            f"Colab secret {SECRET_PUBLIC_KEYS}: holds a private key. Fix: delete that secret "
            f"now and add the public key line(s) instead (the .pub file's content)"
        )
    lines: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key = parse_public_key_line(stripped, SECRET_PUBLIC_KEYS)
        if key is None:
            raise PlatformError(
                f"Colab secret {SECRET_PUBLIC_KEYS}: line {number} is not an SSH public key "
                f"(options are not supported). Fix: put one 'ssh-ed25519 AAAA... comment' "
                f"line per key, as in your .pub file"
            )
        lines.append(key.line)
    if not lines:
        raise PlatformError(
            f"Colab secret {SECRET_PUBLIC_KEYS}: holds no SSH public key. Fix: paste the "
            f"content of your laptop's .pub file (e.g. ~/.ssh/id_ed25519.pub)"
        )
    return lines


def _adapt_config(
    data: dict[str, Any], where: str, *, relay_from_secret: bool, public_from_secret: bool
) -> tuple[dict[str, Any], bool]:
    """The config with file names that point at keys now stored under our names.

    Only what would otherwise break is changed: the config works on the user's original
    folder, and every change here has to keep meaning the same thing.
    """
    changed = False
    relay = data.get("relay")
    relay = relay if isinstance(relay, dict) else None
    if relay_from_secret:
        named = relay.get("key") if relay else None
        has_user = bool(relay and isinstance(relay.get("user"), str) and relay["user"].strip())
        if isinstance(named, str) and named != RELAY_KEY_FILE:
            assert relay is not None
            relay["key"] = RELAY_KEY_FILE
            if not has_user:
                # The relay user defaults to the key file's name up to the first dot; keep it.
                relay["user"] = Path(named).name.split(".", 1)[0]
            changed = True
        elif named is None and not has_user:
            raise PlatformError(
                f"Colab secret {SECRET_RELAY_KEY}: the relay user is unknown (without "
                f"'relay.user' it is taken from the key file's name, <user>.<config>.pem, "
                f'and a secret has none). Fix: add "relay": {{"user": "<user>"}} to '
                f"the config ({where})"
            )
    server = data.get("server")
    entries = server.get("authorized_keys") if isinstance(server, dict) else None
    if public_from_secret and isinstance(entries, list):
        # File names stood for the user's .pub files; the secret's keys replace those.
        new: list[Any] = []
        for entry in entries:
            is_file = isinstance(entry, str) and parse_public_key_line(entry, "config") is None
            value = PUBLIC_KEYS_FILE if is_file else entry
            if value not in new:
                new.append(value)
        if new != entries:
            assert isinstance(server, dict)
            server["authorized_keys"] = new
            changed = True
    return data, changed


def _base_keys(base: Path, *, private: bool) -> list[Path]:
    """The base folder's regular files holding private (or public) keys, by content."""
    want = "private" if private else "public"
    return [
        entry
        for entry in sorted(base.iterdir())
        if entry.name != CONFIG_FILE
        and entry.name not in _PINS
        and not entry.name.startswith(".")
        and _key_kind(entry) == want
    ]


def _key_kind(path: Path) -> Literal["private", "public"] | None:
    """What kind of key ``path`` holds, judged as config.py's folder scan judges it."""
    try:
        # As in keys.scan_folder: a big file is no key, and reading a checkpoint from Drive
        # to find that out would take minutes.
        if not path.is_file() or path.stat().st_size > _MAX_KEY_FILE:
            return None
    except OSError:
        return None
    try:
        if load_private_key(path) is not None:
            return "private"
    except KeyFileError:
        # Encrypted: still the relay key's file; load_config names the problem and its fix.
        return "private"
    return "public" if load_public_keys(path) else None


def _copy_files(paths: list[Path], dest: Path) -> set[str]:
    for path in paths:
        atomic_write(dest / path.name, path.read_bytes(), 0o600)
    return {p.name for p in paths}


def _copy_host_keys(base: Path, dest: Path) -> None:
    src = base / HOST_KEY_DIR
    if not src.is_dir():
        return
    target = dest / HOST_KEY_DIR
    target.mkdir(mode=0o700, exist_ok=True)
    os.chmod(target, 0o700)
    for entry in src.iterdir():
        if entry.is_file():
            atomic_write(target / entry.name, entry.read_bytes(), 0o600)


def _remove_stale_keys(dest: Path, keep: set[str]) -> None:
    """Remove key files an earlier call left in ``dest``.

    config.py finds keys by content, so a stale relay key beside the new one would make the
    folder ambiguous ("several private keys") or authorize a key the user has dropped.
    """
    for entry in dest.iterdir():
        if entry.name in keep or entry.name in _PINS:
            continue
        if entry.name == TOKEN_FILE or _key_kind(entry) is not None:
            log.info("removing stale key file %s", entry)
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()


# --------------------------------------------------------------------------- google.colab


def _colab(submodule: str) -> Any:
    """``google.colab.<submodule>``; raises ImportError off Colab. Untyped, hence Any."""
    # Imported here, never at the top: off Colab the module is absent, and on Colab importing
    # it pulls in IPython, which the CLI on a laptop must not pay for.
    return importlib.import_module(f"google.colab.{submodule}")


def _colab_or_error(submodule: str, purpose: str) -> Any:
    try:
        return _colab(submodule)
    except Exception:  # see mount_drive_if_needed
        raise PlatformError(
            f"cannot {purpose}: Colab's google.colab module is not available here. Fix: run "
            f"this in a Colab notebook, or pass a config folder instead"
        ) from None


def _one_line(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        if line.strip():
            text = line.strip()
            return text if len(text) <= 200 else text[:197] + "..."
    return type(exc).__name__
