"""VS Code on the laptop: remember that our hosts are Linux, and open a window on a runtime.

Remote-SSH asks "select the platform of the remote host" for every new alias, and a wrong
pick ("Windows") breaks the connection; ``remote.SSH.remotePlatform`` in the user settings
answers it in advance. That file is the user's, written by VS Code and by hand (JSON with
comments), so it is edited by splicing text (client/jsonc.py), never re-serialised, and left
alone with a one-line "add this yourself" when that cannot be done safely.

VS Code and VS Code Insiders are handled (both run Microsoft's Remote-SSH and share the
setting). VSCodium is not: its Open Remote - SSH extension has no such prompt.
"""

from __future__ import annotations

import codecs
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from ..choices import runtime_name_problem
from ..errors import ConfigError, EditorError
from ..fsutil import atomic_write, backup
from . import jsonc

KEY = "remote.SSH.remotePlatform"
FLAVOURS = ("Code", "Code - Insiders")
# macOS: `code` is on PATH only after "Shell Command: Install 'code' command in PATH".
MAC_BUNDLE_BIN = "Visual Studio Code.app/Contents/Resources/app/bin/code"
# A `code` that is still running after this is VS Code itself staying in the foreground
# (or a link handler that does): it is left to run.
LAUNCH_WAIT = 10.0
# cmd.exe re-parses a .cmd's arguments: a path with these goes through the link instead.
_CMD_META = set('"%&|<>^!\r\n')

Which = Callable[[str], str | None]


def os_kind(os_name: str | None = None) -> str:
    """'windows', 'mac' or 'linux' (any other Unix keeps its settings where Linux does)."""
    name = (os_name or sys.platform).lower()
    if name.startswith(("win", "cygwin", "msys")):
        return "windows"
    if name.startswith(("darwin", "mac")):
        return "mac"
    return "linux"


def settings_files(os_name: str | None = None) -> list[Path]:
    """Where VS Code (and Insiders) keep the user's settings.json on this OS."""
    kind = os_kind(os_name)
    env = os.environ.get("VSCODE_APPDATA")  # VS Code's own override of the base folder
    if env:
        base = Path(env)
    elif kind == "windows":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif kind == "mac":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return [base / flavour / "User" / "settings.json" for flavour in FLAVOURS]


@dataclass(frozen=True)
class SettingsChange:
    path: Path
    status: str  # "updated" | "created" | "unchanged" | "manual" (left alone: see message)
    message: str
    backup: Path | None = None


@dataclass(frozen=True)
class PlatformResult:
    changes: list[SettingsChange]  # one per settings file of an installed VS Code
    looked_at: list[Path] = field(default_factory=list)

    @property
    def vscode_found(self) -> bool:
        return bool(self.changes)

    @property
    def messages(self) -> list[str]:
        if not self.changes:
            where = ", ".join(str(p.parent) for p in self.looked_at)
            return [f"No VS Code settings folder ({where}): nothing written"]
        return [c.message for c in self.changes]


def _names(aliases: Sequence[str]) -> str:
    return ", ".join(aliases)


def _edit(raw: bytes, entries: dict[str, str]) -> tuple[bytes | None, str]:
    """The new file content, or None and why the file must be left alone."""
    bom = codecs.BOM_UTF8 if raw.startswith(codecs.BOM_UTF8) else b""
    try:
        text = raw[len(bom) :].decode("utf-8")
    except UnicodeDecodeError:
        return None, "is not UTF-8 text"
    try:
        root = jsonc.parse(text)
    except jsonc.JsoncError as exc:
        return None, f"cannot be read safely as JSON with comments ({exc})"
    nl = jsonc.newline_of(text)
    before: dict[str, object] = {}
    if root is None:  # empty, or only comments: VS Code reads that as {}
        sep = "" if not text or text.endswith("\n") else nl
        obj = jsonc.render({KEY: entries}, "", jsonc.DEFAULT_UNIT, nl)
        new = f"{text}{sep}{obj}{nl}"
    elif root.kind != "object":
        return None, "does not hold a JSON object"
    else:
        before = root.to_python()
        unit = jsonc.indent_unit(text, root)
        member = root.member(KEY)
        if member is None:
            new = jsonc.set_members(text, root, {KEY: entries}, unit)
        elif member.value.kind != "object":
            shown = text[member.value.start : member.value.end]
            return None, f'has "{KEY}": {shown:.40} (not an object)'
        else:
            new = jsonc.set_members(text, member.value, entries, unit)
    old_platforms = before.get(KEY)
    kept = old_platforms if isinstance(old_platforms, dict) else {}
    expected = {**before, KEY: {**kept, **entries}}
    try:
        check = jsonc.parse(new)
    except jsonc.JsoncError:
        check = None
    if check is None or check.to_python() != expected:
        return None, "could not be edited verifiably (please report this file's shape)"
    return bom + new.encode("utf-8"), ""


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _remember_in(path: Path, aliases: Sequence[str]) -> SettingsChange:
    entries = {a: "linux" for a in aliases}
    fix = f'Fix: add "{KEY}": {json.dumps(entries)} to it yourself'
    # A settings file kept in a dotfiles repo is often a symlink: edit the target, keep it.
    target = path.resolve() if path.is_symlink() else path
    try:
        for _ in range(3):
            raw = _read(target)
            if raw is None:
                body = jsonc.render({KEY: entries}, "", jsonc.DEFAULT_UNIT, "\n")
                new: bytes | None = (body + "\n").encode()
                why = ""
            else:
                new, why = _edit(raw, entries)
            if new is None:
                return SettingsChange(path, "manual", f"{path}: {why}; left untouched. {fix}")
            if new == raw:
                return SettingsChange(
                    path, "unchanged", f"{path}: already tells VS Code {_names(aliases)}: Linux"
                )
            # VS Code may have saved the file meanwhile: start again from its new content.
            if _read(target) != raw:
                continue
            keep_mode = stat.S_IMODE(target.stat().st_mode) if raw is not None else 0o644
            bak = backup(target) if raw is not None else None
            atomic_write(target, new, mode=keep_mode)
            status = "created" if raw is None else "updated"
            tail = f" (backup: {bak})" if bak else ""
            msg = f"{path}: {status}: VS Code takes {_names(aliases)} for Linux hosts{tail}"
            return SettingsChange(path, status, msg, bak)
    except OSError as exc:
        return SettingsChange(
            path, "manual", f"{path}: cannot be written ({exc.strerror}); left untouched. {fix}"
        )
    return SettingsChange(path, "manual", f"{path}: kept changing while read. {fix}")


def remember_platform(
    aliases: list[str], settings: Path | None = None, os_name: str | None = None
) -> PlatformResult:
    """Make VS Code's user settings say that each of ``aliases`` is a Linux host.

    ``settings`` None: every installed flavour's file (VS Code, Insiders). A file is created
    when its folder exists; with no folder at all nothing is written and the result says so.
    """
    files = [settings] if settings is not None else settings_files(os_name)
    changes = [_remember_in(p, aliases) for p in files if p.parent.is_dir()]
    return PlatformResult(changes, files)


# ---------------------------------------------------------------- opening a window


@dataclass(frozen=True)
class Opened:
    via: str  # "code" | "opener" | "startfile" | "none" (nothing here can open it)
    argv: list[str]  # what runs; for "startfile" just the link
    link: str

    @property
    def shown(self) -> str:
        if self.via == "startfile":
            return f"os.startfile({self.link!r})"
        return shlex.join(self.argv)


def vscode_link(alias: str, path: str) -> str:
    """The OS link that opens ``path`` on the host ``alias`` in VS Code."""
    return f"vscode://vscode-remote/ssh-remote+{alias}{quote(path)}"


def code_program(os_name: str | None = None, which: Which = shutil.which) -> str | None:
    """The `code` command line program, found the way this OS installs it."""
    kind = os_kind(os_name)
    if kind == "windows":
        # `code` is bin\code.cmd: CreateProcess does not look for .cmd by itself.
        return which("code.cmd") or which("code-insiders.cmd")
    found = which("code") or which("code-insiders")
    if found is None and kind == "mac":
        for apps in (Path("/Applications"), Path.home() / "Applications"):
            if os.access(apps / MAC_BUNDLE_BIN, os.X_OK):
                return str(apps / MAC_BUNDLE_BIN)
    return found


def plan_open(
    alias: str, path: str, *, os_name: str | None = None, which: Which = shutil.which
) -> Opened:
    """What `open_vscode` would run, without running it."""
    if runtime_name_problem(alias) is not None:
        raise ConfigError(
            f"'{alias}' is not a runtime alias. Fix: use the name `handy-colab connect` printed"
        )
    if not path.startswith("/"):
        raise ConfigError(
            f"PATH '{path}' is not an absolute path on the runtime. Fix: give one, e.g. /content"
        )
    link = vscode_link(alias, path)
    prog = code_program(os_name, which)
    batch = prog is not None and prog.lower().endswith((".cmd", ".bat"))
    if prog is not None and not (batch and _CMD_META & set(path)):
        return Opened("code", [prog, "--remote", f"ssh-remote+{alias}", path], link)
    kind = os_kind(os_name)
    if kind == "windows":
        return Opened("startfile", [link], link)
    opener = which("open") if kind == "mac" else which("xdg-open")
    if opener is None:
        return Opened("none", [], link)
    return Opened("opener", [opener, link], link)


def launch(argv: list[str]) -> None:
    """Start a program that hands off to a GUI; fail only if it exits with an error soon.

    Not proc.run_subprocess: that waits for pipes to close, and an editor started by `code`
    or a link handler may inherit them and keep them open for as long as it runs.
    """
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,  # the editor outlives us and our terminal's ^C
            )
        except OSError as exc:
            raise EditorError(
                f"{argv[0]}: cannot run ({exc.strerror}). Fix: reinstall VS Code's `code` "
                f"command, or open {argv[-1]} yourself"
            ) from None
        try:
            code = proc.wait(LAUNCH_WAIT)
        except subprocess.TimeoutExpired:
            return
        if code != 0:
            err.seek(0)
            lines = err.read().decode(errors="replace").strip().splitlines()
            said = f": {lines[-1][:200]}" if lines else ""
            raise EditorError(
                f"{shlex.join(argv)} exited with {code}{said}. Fix: run it yourself to see why"
            )


def open_vscode(
    alias: str,
    path: str,
    *,
    os_name: str | None = None,
    which: Which = shutil.which,
    run: Callable[[list[str]], None] = launch,
    startfile: Callable[[str], None] | None = None,
) -> Opened:
    """Open VS Code on ``path`` of the runtime ``alias`` (its ssh Host); return what ran."""
    plan = plan_open(alias, path, os_name=os_name, which=which)
    if plan.via == "none":
        missing = "open" if os_kind(os_name) == "mac" else "xdg-open"
        raise EditorError(
            f"found neither VS Code's `code` command nor {missing}. Fix: in VS Code run "
            f"'Shell Command: Install code command in PATH', or open {plan.link} yourself"
        )
    if plan.via == "startfile":
        opener = startfile or getattr(os, "startfile", None)
        if opener is None:
            raise EditorError(f"no os.startfile here. Fix: open {plan.link} yourself")
        try:
            opener(plan.link)
        except OSError as exc:
            raise EditorError(
                f"{plan.link}: Windows cannot open it ({exc.strerror}). Fix: install VS Code "
                f"(it registers vscode:// links)"
            ) from None
    else:
        run(plan.argv)
    return plan
