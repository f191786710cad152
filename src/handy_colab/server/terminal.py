"""The embedded server's pseudo-terminals: what a client's pty-req asks of the tty.

A PTY session must behave as under sshd: the client's window size and terminal modes
(erase character, echo, ...) are applied to the slave before the shell starts, and the PTY
becomes the shell's controlling terminal so that job control, ^C and SIGWINCH work.
"""

from __future__ import annotations

import contextlib
import fcntl
import struct
import termios
from collections.abc import Mapping

# RFC 4254 8: opcode -> (index in the termios attribute list, flag) and control characters.
# The character size and parity modes (90-93) mean nothing on a pseudo-terminal.
_MODE_FLAGS: dict[int, tuple[int, str]] = {
    30: (0, "IGNPAR"), 31: (0, "PARMRK"), 32: (0, "INPCK"), 33: (0, "ISTRIP"),
    34: (0, "INLCR"), 35: (0, "IGNCR"), 36: (0, "ICRNL"), 37: (0, "IUCLC"),
    38: (0, "IXON"), 39: (0, "IXANY"), 40: (0, "IXOFF"), 41: (0, "IMAXBEL"),
    42: (0, "IUTF8"),
    50: (3, "ISIG"), 51: (3, "ICANON"), 52: (3, "XCASE"), 53: (3, "ECHO"),
    54: (3, "ECHOE"), 55: (3, "ECHOK"), 56: (3, "ECHONL"), 57: (3, "NOFLSH"),
    58: (3, "TOSTOP"), 59: (3, "IEXTEN"), 60: (3, "ECHOCTL"), 61: (3, "ECHOKE"),
    62: (3, "PENDIN"),
    70: (1, "OPOST"), 71: (1, "OLCUC"), 72: (1, "ONLCR"), 73: (1, "OCRNL"),
    74: (1, "ONOCR"), 75: (1, "ONLRET"),
}  # fmt: skip
_MODE_CHARS: dict[int, str] = {
    1: "VINTR", 2: "VQUIT", 3: "VERASE", 4: "VKILL", 5: "VEOF", 6: "VEOL", 7: "VEOL2",
    8: "VSTART", 9: "VSTOP", 10: "VSUSP", 12: "VREPRINT", 13: "VWERASE", 14: "VLNEXT",
    18: "VDISCARD",
}  # fmt: skip


def set_ctty() -> None:  # pragma: no cover - runs in the forked child
    # start_new_session already made the child a session leader; this makes the PTY on
    # fd 0 its controlling terminal, so job control, ^C and SIGWINCH work as under sshd.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def set_winsize(fd: int, cols: int, rows: int, xpix: int, ypix: int) -> None:
    if cols > 0 and rows > 0:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, xpix, ypix))


def apply_modes(fd: int, modes: Mapping[int, int]) -> None:
    """Apply the client's terminal modes (erase character, echo, ...), as sshd does."""
    if not modes:
        return
    attrs = termios.tcgetattr(fd)
    cc = attrs[6]
    for opcode, value in modes.items():
        if opcode in _MODE_CHARS:
            index = getattr(termios, _MODE_CHARS[opcode], None)
            if index is not None and index < len(cc):
                # 255 means "disabled"; Linux spells that as 0 (_POSIX_VDISABLE).
                cc[index] = bytes([0 if value == 255 else value & 0xFF])
        elif opcode in _MODE_FLAGS:
            slot, name = _MODE_FLAGS[opcode]
            flag = getattr(termios, name, None)
            if flag is None:
                continue
            attrs[slot] = attrs[slot] | flag if value else attrs[slot] & ~flag
    with contextlib.suppress(termios.error):
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
