"""A real HTTP server on loopback for download tests (binaries, progress bars)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class _Slow(_Quiet):
    """Serves in pieces with a pause after each, so a progress bar sees several sizes."""

    piece = 256 * 1024
    pause = 0.04

    def copyfile(self, source: Any, outputfile: Any) -> None:
        while chunk := source.read(self.piece):
            outputfile.write(chunk)
            time.sleep(self.pause)


@contextlib.contextmanager
def serve(root: Path, *, slow: bool = False) -> Iterator[str]:
    """Serve ``root`` on a free loopback port; yield its base URL (no trailing slash).
    ``slow``: in 256 KiB pieces 40 ms apart (a progress bar gets several updates)."""
    handler = functools.partial(_Slow if slow else _Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
