"""What a notebook shows for a runtime and for ``status()``: one HTML block that reads at a
glance in Jupyter, JupyterLab, VS Code notebooks and Colab.

Every style is inline and nothing is loaded from elsewhere: Colab and VS Code render outputs
in an iframe or webview that may drop ``<style>`` elements and block the network. Colours
are tints over the page's own background with the text colour inherited, so a dark theme
stays readable, and every colour comes with a word and a sign (colour alone says nothing to
a colour-blind reader or a screen reader). Commands sit in ``<code>`` elements with a copy
button; the button's script is inline too (see ``COPY_JS``).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .client.block import ssh_command
from .keys import fingerprint

if TYPE_CHECKING:
    from .notebook import Runtime, RuntimeStatus

# Tints that read on a white page and on a dark one (#1e1e1e and darker).
_OK, _BAD, _WARN, _GREY = "#2da44e", "#e5534b", "#d4a72c", "rgba(127,127,127,.45)"
_TINT = {_OK: "rgba(45,164,78,.14)", _BAD: "rgba(229,83,75,.14)", _WARN: "rgba(212,167,44,.16)"}

_BOX = (
    "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;font-size:13px;"
    "line-height:1.5;color:inherit;max-width:56em;padding:8px 12px;"
    f"border:1px solid {_GREY};border-radius:6px"
)
_CODE = (
    "font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;"
    "color:inherit;background:rgba(127,127,127,.16);padding:1px 5px;border-radius:3px;"
    "white-space:pre-wrap;word-break:break-all;user-select:all;-webkit-user-select:all"
)
_BUTTON = (
    "font:inherit;font-size:12px;color:inherit;background:rgba(127,127,127,.18);"
    f"border:1px solid {_GREY};border-radius:4px;padding:0 8px;margin-left:6px;cursor:pointer;"
    "white-space:nowrap;vertical-align:top"
)
# The theme's text colour, underlined: a browser's default link blue is unreadable on dark.
_LINK = "color:inherit;text-decoration:underline"
_TD = "text-align:left;padding:1px 10px 1px 0;vertical-align:top;border:none;background:none"

# The copy button's onclick. The Clipboard API first; where it is missing (an insecure
# context, an old webview) or refuses (a sandboxed iframe as Colab's outputs are, a denied
# permission), select the command so Ctrl+C / Cmd+C copies it, try the old execCommand,
# and say so on the button. The text is the <code>'s textContent: exactly the command.
COPY_JS = (
    "(function(b){var c=b.parentElement.querySelector('code'),t=c.textContent;"
    "function sel(){var r=document.createRange();r.selectNodeContents(c);"
    "var s=window.getSelection();s.removeAllRanges();s.addRange(r);"
    "try{document.execCommand('copy')}catch(e){}"
    "b.textContent='selected: press Ctrl+C / Cmd+C'}"
    "try{if(navigator.clipboard&&navigator.clipboard.writeText){"
    "navigator.clipboard.writeText(t).then(function(){b.textContent='copied'},sel)}"
    "else{sel()}}catch(e){sel()}})(this)"
)

esc = html.escape


def code(text: str, *, wrap: bool = True) -> str:
    """``wrap``: long lines (the paste line) break anywhere; names (packages) stay whole."""
    style = (
        _CODE
        if wrap
        else _CODE.replace("white-space:pre-wrap;word-break:break-all", "white-space:nowrap")
    )
    return f'<code style="{style}">{esc(text)}</code>'


def copyable(cmd: str) -> str:
    """A command on its own line with a copy button after it."""
    return (
        f'<div class="hc-cmd" style="margin:3px 0 3px 1.2em">{code(cmd)}'
        f'<button class="hc-copy" type="button" title="copy this line" style="{_BUTTON}"'
        f' onclick="{esc(COPY_JS)}">copy</button></div>'
    )


def badge(colour: str, sign: str, word: str) -> str:
    return (
        f'<span style="border:1px solid {colour};background:{_TINT[colour]};color:inherit;'
        f'border-radius:3px;padding:0 5px;white-space:nowrap">{sign} {esc(word)}</span>'
    )


def state_line(ok: bool, head: str, rest: str) -> str:
    """The block's first line: the verdict in words, a sign and a colour."""
    colour = _OK if ok else _BAD
    return (
        f'<div class="hc-state hc-{"ok" if ok else "bad"}" role="status" style="'
        f"border-left:4px solid {colour};background:{_TINT[colour]};padding:4px 8px;"
        f'margin-bottom:6px;border-radius:3px"><b>{"&#10004;" if ok else "&#10006;"} '
        f"{esc(head)}</b> {rest}</div>"
    )


def _step(text: str) -> str:
    return f'<div style="margin-top:6px">{text}</div>'


def _details(summary: str, body: str) -> str:
    return (
        f'<details style="margin-top:6px"><summary style="cursor:pointer">{summary}</summary>'
        f'<div style="margin:4px 0 0 1.2em">{body}</div></details>'
    )


def _table(rows: Sequence[Sequence[str]], cls: str) -> str:
    cells = "".join(
        '<tr style="background:none">'
        + "".join(f'<td style="{_TD}">{c}</td>' for c in row)
        + "</tr>"
        for row in rows
    )
    return f'<table class="{cls}" style="border-collapse:collapse;margin:2px 0">{cells}</table>'


_PACKAGE_LOOK = {
    "failed": (_BAD, "&#10006;"),
    "installed": (_OK, "&#10004;"),
    "present": (_OK, "&#10003;"),
}


def _packages(rt: Runtime) -> str:
    if not rt.packages:
        return ""
    failed = sum(p.status == "failed" for p in rt.packages)
    rows = []
    for p in rt.packages:
        colour, sign = _PACKAGE_LOOK.get(p.status, (_WARN, "?"))
        rows.append(
            (badge(colour, sign, p.status), esc(p.kind), code(p.spec, wrap=False), esc(p.detail))
        )
    head = f"Extra packages: {len(rt.packages) - failed} of {len(rt.packages)} ready" + (
        f", <b>{failed} failed</b> (the tunnel is up regardless)" if failed else ""
    )
    return _step(head) + _table(rows, "hc-packages")


def _warnings(rt: Runtime) -> str:
    # A failed package already has its red row (with the reason): no second copy here.
    dupes = {p.failure_line for p in rt.packages}
    notes = [w for w in rt.warnings if w not in dupes]
    if not notes:
        return ""
    items = "".join(f'<li style="margin:0">{esc(w)}</li>' for w in notes)
    return (
        f'<div class="hc-warning" role="note" style="border:1px solid {_WARN};'
        f'background:{_TINT[_WARN]};border-radius:4px;padding:4px 8px;margin-top:8px">'
        f"<b>&#9888; {'Warning' if len(notes) == 1 else 'Warnings'}</b>"
        f'<ul style="margin:2px 0 0 0;padding-left:1.4em">{items}</ul></div>'
    )


def render_runtime(rt: Runtime, st: RuntimeStatus | None) -> str:
    """The block ``up()`` returns, as HTML: ``st`` is the live status (None: unreadable)."""
    d = rt.descriptor
    where = (
        f"{esc(d.reach)} &middot; {esc(rt.platform.label)} &middot; server {esc(rt.server)},"
        f" tunnel {esc(rt.tunnel)}" + (" &middot; already running" if rt.already_running else "")
    )
    if st is None:  # up() saw it answer; whether it still does cannot be read now
        top = state_line(True, f"Runtime '{rt.name}' was reachable", where + " (when up() ran)")
    elif st.healthy:
        top = state_line(True, f"Runtime '{rt.name}' is reachable", where)
    else:
        why = f"{st.phase}" + (f": {st.error}" if st.error else "")
        top = state_line(
            False, f"Runtime '{rt.name}' is not healthy", f"&middot; {esc(why)}<br>{where}"
        )
    pc = rt.pycharm_settings()
    pc_rows = [(esc(k), code(v)) for k, v in pc.items()]
    fps = ", ".join(fingerprint(k) for k in d.host_keys)
    out = [
        f'<div class="handy-colab" style="{_BOX}">',
        top,
        _step(
            "<b>1.</b> On your laptop, paste this line into a terminal (it writes"
            " <code>~/.ssh/config</code> with the host key pinned; no secrets in it):"
        ),
        copyable(rt.connect_command),
    ]
    if d.mode == "quick":
        out.append(
            '<div style="margin-left:1.2em;opacity:.8">A quick tunnel gets a new hostname'
            " when it restarts: paste the new line then (a laptop set up from the synced"
            " folder's descriptor follows it by itself).</div>"
        )
    out += [
        _step("<b>2.</b> Then log in:"),
        copyable(rt.ssh_command),
        _step(
            f'<b>VS Code</b> (Remote-SSH): <a href="{esc(rt.vscode_url)}" style="{_LINK}">open'
            f" {esc(d.start_dir)} on {esc(rt.name)}</a> or"
        ),
        copyable(f"handy-colab code {rt.name.lower()}"),
        _details(
            "<b>PyCharm</b>: Settings &gt; Python Interpreter &gt; Add Interpreter &gt; On SSH",
            _table(pc_rows, "hc-pycharm"),
        ),
        _details(
            "<b>By hand</b>, without <code>connect</code> (check the fingerprint below)",
            copyable(ssh_command(d)),
        ),
        _step(f"Host key fingerprint: {code(fps)}"),
        _packages(rt),
        _warnings(rt),
        "</div>",
    ]
    return "\n".join(part for part in out if part)


def render_status(st: RuntimeStatus) -> str:
    """``status()`` as HTML: the same verdict line and the parts behind it."""
    if st.healthy:
        top = state_line(True, f"Runtime '{st.name}' is healthy", f"&middot; {esc(st.phase)}")
    else:
        why = st.phase + (f": {st.error}" if st.error else "")
        top = state_line(False, f"Runtime '{st.name}' is not healthy", f"&middot; {esc(why)}")
    rows = [
        ("server", code(st.server)),
        ("tunnel", code(st.tunnel) + (f" to {esc(st.endpoint)}" if st.endpoint else "")),
        ("reconnects", esc(str(st.reconnects))),
    ]
    if st.error and st.healthy:
        rows.append(("last error", esc(st.error)))
    box = f'<div class="handy-colab hc-status" style="{_BOX}">'
    return "\n".join([box, top, _table(rows, "hc-parts"), "</div>"])
