"""The notebook-first API: ``up()`` in a cell, a connection block that renders in Jupyter.

This module is a front end like ``cli.py``: it may show progress (a cell's output is where
the user looks), and it turns the runtime's state into something to copy: commands with a
copy button, a VS Code link, the settings PyCharm asks for. Everything else lives in the
library (``runtime``, ``platforms``, ``packages``).
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import platforms, runtime
from .client.block import render_block
from .client.pycharm import pycharm_settings
from .config import Backend
from .descriptor import Descriptor
from .errors import ConfigError, HandyColabError
from .notebook_display import render_runtime, render_status
from .packages import PackageResult
from .progress import ProgressArg, Say

# Kept for callers that named it: a callable given as ``progress`` gets whole lines.
Progress = Say


@dataclass
class RuntimeStatus:
    """One look at a runtime: healthy means the supervisor runs and the tunnel is up."""

    name: str
    healthy: bool
    phase: str
    server: str
    tunnel: str
    error: str | None = None
    endpoint: str = ""  # where the tunnel goes (relay, frps, Cloudflare)
    reconnects: int = 0

    def __str__(self) -> str:
        text = (
            f"runtime '{self.name}': {self.phase}"
            f" (server {self.server}, tunnel {self.tunnel})"
            + ("" if self.healthy else " - not healthy")
        )
        return text + (f": {self.error}" if self.error and not self.healthy else "")

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return render_status(self)


def _status(name: str) -> RuntimeStatus:
    healthy, st = runtime.status(name)
    srv, tun = st.get("server") or {}, st.get("tunnel") or {}
    return RuntimeStatus(
        name=name,
        healthy=healthy,
        phase=str(st.get("phase") or "never started"),
        server=f"{srv.get('kind', '?')} {srv.get('state', '?')}",
        tunnel=f"{tun.get('kind', '?')} {tun.get('state', '?')}",
        error=st.get("error") or tun.get("last_error"),
        endpoint=str(tun.get("endpoint") or ""),
        reconnects=int(tun.get("reconnects") or 0),
    )


@dataclass
class Runtime:
    """A runtime brought up from a notebook: its connection info, ``status()``, ``stop()``.

    Jupyter shows it as HTML (copy buttons, a VS Code link, PyCharm's settings); ``str()``
    and plain consoles get the same block as text.
    """

    name: str
    descriptor: Descriptor
    descriptor_path: Path | None
    platform: platforms.Platform
    server: str
    tunnel: str
    already_running: bool
    packages: list[PackageResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def status(self) -> RuntimeStatus:
        return _status(self.name)

    def stop(self) -> bool:
        """Stop the runtime (supervisor, server, tunnel). True if something was running."""
        return runtime.down(self.name)

    @property
    def ssh_command(self) -> str:
        return f"ssh {self.name}"

    @property
    def vscode_url(self) -> str:
        where = self.descriptor.start_dir or "/"
        return f"vscode://vscode-remote/ssh-remote+{self.name.lower()}{where}"

    @property
    def connect_command(self) -> str:
        """The laptop's one command: the descriptor itself in one pasteable line."""
        return f"handy-colab connect '{self.descriptor.to_paste()}'"

    def pycharm_settings(self) -> dict[str, str]:
        return pycharm_settings(self.descriptor)

    def text(self) -> str:
        head = f"[{self.platform.label}] server: {self.server}; tunnel: {self.tunnel}" + (
            " (already running)" if self.already_running else ""
        )
        st = self.live_status()
        if st is not None and not st.healthy:
            # The block below says how to reach it; say first that it does not answer now.
            head = f"NOT healthy now: {st.phase}{f': {st.error}' if st.error else ''}\n{head}"
        parts = [head, "", render_block(self.descriptor, self.descriptor_path, None).rstrip()]
        parts += [f"VS Code link: {self.vscode_url}"]
        if self.packages:
            parts += ["", "Extra packages:"]
            parts += [
                f"    {p.kind} {p.spec}: "
                f"{'FAILED' if p.status == 'failed' else p.status} {p.detail}".rstrip()
                for p in self.packages
            ]
        parts += [f"warning: {w}" for w in self.warnings]
        return "\n".join(parts) + "\n"

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        return self.text()

    def live_status(self) -> RuntimeStatus | None:
        """The status now, or None when the state cannot be read (the block then shows
        what ``up()`` found)."""
        try:
            return self.status()
        except (HandyColabError, OSError, ValueError):
            return None

    def _repr_html_(self) -> str:
        return render_runtime(self, self.live_status())


def up(
    folder: str | Path | None = None,
    *,
    name: str | None = None,
    server: Backend | None = None,
    tunnel: str | None = None,
    secrets: bool | None = None,
    timeout: float = 60.0,
    install: bool = True,
    progress: ProgressArg | Literal["auto"] = "auto",
) -> Runtime:
    """Bring this notebook's runtime up (or find it running) and return its connection info.

    ``folder`` holds user_config.json and the keys (e.g. a Drive folder: on Colab it is
    mounted when needed). On Colab, ``folder=None`` or ``secrets=True`` reads them from
    Colab's secrets instead. SSH sessions get this kernel's environment, working directory
    and Python; calling ``up`` again refreshes them. Extra packages from the config are
    installed after the tunnel is up. ``progress="auto"`` shows a download's and the
    packages' progress as a bar that updates in place (a widget with ipywidgets, else one
    updated line; outside a kernel: a terminal bar, or plain lines when not a terminal); a
    callable (e.g. ``print``) gets whole lines instead, a ``progress.Reporter`` the events,
    and None shows nothing.
    """
    if progress == "auto":
        from .progress_view import auto_reporter

        progress = auto_reporter()
    plat = platforms.detect()
    if plat.name == "colab":
        text = platforms.colab_terms_warning_once()
        if text:
            warnings.warn(text, UserWarning, stacklevel=2)
    base = Path(folder).expanduser() if folder is not None else None
    if base is not None and plat.name == "colab":
        platforms.mount_drive_if_needed(base.absolute())
    if secrets or (base is None and plat.name == "colab"):
        dest = Path.home() / ".config" / "handy-colab" / "from-secrets"
        base = platforms.folder_from_colab_secrets(dest, base=base)
    if base is None:
        raise ConfigError(
            "up(): no config folder given. Fix: up('/path/to/folder') with your "
            "user_config.json and keys (on Colab: a Drive folder, or Colab secrets)"
        )
    res = runtime.up(
        base,
        name=name,
        timeout=timeout,
        install=install,
        server=server,
        tunnel=tunnel,
        python=sys.executable,
        environ=os.environ,
        cwd=os.getcwd(),
        progress=progress,
    )
    notes = [str(w) for w in res.state.get("warnings") or []] + res.package_failures
    srv: dict[str, Any] = res.state.get("server") or {}
    tun: dict[str, Any] = res.state.get("tunnel") or {}
    return Runtime(
        name=res.cfg.name,
        descriptor=res.descriptor,
        descriptor_path=res.descriptor_path,
        platform=plat,
        server=str(srv.get("kind", "?")),
        tunnel=str(tun.get("kind", "?")),
        already_running=res.already_running,
        packages=res.packages,
        warnings=notes,
    )


def status(name: str | None = None) -> RuntimeStatus:
    """The runtime's health (the only one, or ``name``)."""
    return _status(runtime.resolve_name(name))


def stop(name: str | None = None) -> bool:
    """Stop the runtime (the only one, or ``name``). True if something was running."""
    return runtime.down(runtime.resolve_name(name))
