"""What the network tests need: certificates made on the spot, and a forward proxy.

Both live on 127.0.0.1 only, are started and stopped by the test, and count what they see.
"""

from __future__ import annotations

import select
import socket
import socketserver
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trustme


@dataclass(frozen=True)
class Certificates:
    """A private CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""

    ca: Path  # the CA bundle a client trusts
    server: Path  # the server's certificate chain and key, in one file
    client: Path  # a client certificate and key, in one file


def make_certificates(directory: Path) -> Certificates:
    """Issue the certificates into ``directory``."""
    authority = trustme.CA()
    paths = Certificates(directory / "ca.pem", directory / "server.pem", directory / "client.pem")
    authority.cert_pem.write_to_path(str(paths.ca))
    authority.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(paths.server)
    )
    authority.issue_cert("client@example.com").private_key_and_cert_chain_pem.write_to_path(
        str(paths.client)
    )
    return paths


class _ProxyHandler(BaseHTTPRequestHandler):
    """Forwards absolute-form HTTP requests, and tunnels CONNECT (HTTPS)."""

    protocol_version = "HTTP/1.1"
    server: ForwardProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_CONNECT(self) -> None:
        self.server.record(f"CONNECT {self.path}")
        host, _, port = self.path.rpartition(":")
        upstream = socket.create_connection((host, int(port)), timeout=10)
        self.send_response(200, "Connection established")
        self.end_headers()
        self._pipe(self.connection, upstream)
        self.close_connection = True

    def _forward(self) -> None:
        target = urlsplit(self.path)
        self.server.record(f"{self.command} {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        upstream = socket.create_connection((target.hostname, target.port or 80), timeout=10)
        path = target.path + (f"?{target.query}" if target.query else "")
        lines = [f"{self.command} {path} HTTP/1.1"]
        lines += [
            f"{name}: {value}"
            for name, value in self.headers.items()
            if name.lower() not in ("proxy-connection", "connection")
        ]
        lines.append("Connection: close")
        upstream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        answer = b""
        while True:
            chunk = upstream.recv(65536)
            if not chunk:
                break
            answer += chunk
        upstream.close()
        head, _, rest = answer.partition(b"\r\n\r\n")
        # Pass the answer on with our own framing, so the client's connection stays usable.
        status_line, *headers = head.decode("latin-1").split("\r\n")
        self.wfile.write(status_line.encode("latin-1") + b"\r\n")
        for header in headers:
            if header.lower().startswith(("connection:", "content-length:")):
                continue
            self.wfile.write(header.encode("latin-1") + b"\r\n")
        self.wfile.write(f"Content-Length: {len(rest)}\r\n\r\n".encode() + rest)

    do_POST = do_GET = _forward

    @staticmethod
    def _pipe(client: socket.socket, upstream: socket.socket) -> None:
        sockets = [client, upstream]
        try:
            while True:
                readable, _, broken = select.select(sockets, [], sockets, 10)
                if broken or not readable:
                    return
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (upstream if source is client else client).sendall(data)
        finally:
            upstream.close()


class ForwardProxy(ThreadingHTTPServer):
    """A forward proxy on 127.0.0.1 that records each request line it handles."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.seen: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)

    def record(self, line: str) -> None:
        with self._lock:
            self.seen.append(line)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
        self.server_close()
