#!/usr/bin/env python3
"""Run a ProxyCommand and append the CPU seconds it used to a file: ``cpu_wrap.py OUT -- CMD``.

ssh ends its ProxyCommand with a signal: it is passed on to the child, and the child's CPU
time is still recorded once it has exited.
"""

from __future__ import annotations

import resource
import signal
import subprocess
import sys


def main() -> int:
    out, sep, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
    assert sep == "--" and cmd
    child = subprocess.Popen(cmd)
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, _f: child.send_signal(s))
    rc = child.wait()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out, "a") as fh:
        fh.write(f"{ru.ru_utime + ru.ru_stime:.4f}\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
