"""The laptop's WebSocket open tries again when the far end drops the connection before it
answers (a real TLS server on localhost: one that hangs up after reading the request, then
answers a proper 101 and sends the SSH banner), and does not when it answers with an error."""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from handy_colab.errors import TunnelError
from handy_colab.tunnels import websocket

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
BANNER = b"SSH-2.0-test\r\n"


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class Edge:
    """Answers connection N per ``plan[N]``: "drop" (hang up after the request), "101"
    (switch and send the banner as one binary message) or an HTTP status code."""

    def __init__(self, tmp: Path, plan: list[str]) -> None:
        cert, key = self_signed(tmp)
        self.ca = cert
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.plan = plan
        self.seen: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        for step in self.plan:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            with self.ctx.wrap_socket(raw, server_side=True) as conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    request += chunk
                self.seen.append(step)
                if step == "drop":
                    continue
                if step != "101":
                    conn.sendall(f"HTTP/1.1 {step} X\r\nContent-Length: 0\r\n\r\n".encode())
                    continue
                key = next(
                    line.split(b":", 1)[1].strip()
                    for line in request.split(b"\r\n")
                    if line.lower().startswith(b"sec-websocket-key:")
                )
                accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest())
                conn.sendall(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                )
                conn.sendall(bytes([0x82, len(BANNER)]) + BANNER)
                conn.sendall(bytes([0x88, 2, 0x03, 0xE8]))  # close, 1000

    def close(self) -> None:
        # shutdown wakes a thread blocked in accept (close alone does not, on Linux).
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def edge_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    made: list[Edge] = []

    def make(plan: list[str]) -> Edge:
        edge = Edge(tmp_path, plan)
        monkeypatch.setenv("SSL_CERT_FILE", str(edge.ca))
        made.append(edge)
        return edge

    yield make
    for edge in made:
        edge.close()


def test_a_dropped_open_is_tried_again(edge_factory) -> None:  # type: ignore[no-untyped-def]
    edge = edge_factory(["drop", "drop", "101"])
    conn = websocket.open_url(f"wss://localhost:{edge.port}/", 10)
    try:
        assert conn.recv(timeout=5) == BANNER
    finally:
        conn.close()
    assert edge.seen == ["drop", "drop", "101"]


def test_drops_past_the_attempts_give_one_line(edge_factory) -> None:  # type: ignore[no-untyped-def]
    edge = edge_factory(["drop"] * websocket.OPEN_ATTEMPTS + ["101"])
    with pytest.raises(TunnelError) as err:
        websocket.open_url(f"wss://localhost:{edge.port}/", 10)
    text = str(err.value)
    assert "cannot open the WebSocket" in text and "Fix:" in text and "\n" not in text
    assert edge.seen == ["drop"] * websocket.OPEN_ATTEMPTS


def test_an_http_answer_is_final(edge_factory) -> None:  # type: ignore[no-untyped-def]
    edge = edge_factory(["530", "101"])
    with pytest.raises(TunnelError, match="HTTP 530: the tunnel is not connected"):
        websocket.open_url(f"wss://localhost:{edge.port}/", 10)
    assert edge.seen == ["530"]
