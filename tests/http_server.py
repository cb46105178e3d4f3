"""A real HTTP server on 127.0.0.1 for download tests (what gdown fetches from a mirror URL)."""

from __future__ import annotations

import http.server
import io
import socket
import tarfile
import threading


def tarball(members: dict[str, bytes]) -> bytes:
    """A gzipped tar archive holding ``members`` (name → bytes)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


class LocalServer:
    """Serves ``files`` by name; ``/truncated/NAME`` announces the full size, sends half, hangs up."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                truncated = self.path.startswith("/truncated/")
                name = self.path.removeprefix("/truncated/").lstrip("/")
                if name not in outer.files:
                    self.send_error(404)
                    return
                payload = outer.files[name]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload[: len(payload) // 2] if truncated else payload)
                if truncated:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
