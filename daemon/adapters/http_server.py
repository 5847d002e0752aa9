"""The daemon's small HTTP server: Prometheus `/metrics`, `/healthz` and `/readyz`.

`daemon.bootstrap` starts one `HealthServer` for `rollbackd run` (live and sandbox) on the configured
port; the Dockerfile's HEALTHCHECK and Cloud Run's probes call it.

- `GET /metrics`: `prometheus_client.generate_latest(registry)` in the text exposition format.
- `GET /healthz`: 200 "ok" while the process is alive (`alive()` lets the caller report a wedged
  engine loop as 503); it never looks at Google, so a Pub/Sub outage does not get the
  container restarted.
- `GET /readyz`: 200 "ready: <reason>" when `ready()` returns `(True, reason)`, else 503 with the
  reason (for example "disconnected from projects/p/subscriptions/rollbackd: stream: NOT_FOUND ...").
  A probe that raises is reported as 503, never as a traceback.

Plain `http.server.ThreadingHTTPServer` in a daemon thread: three read-only endpoints need no
framework, and a slow scrape cannot block the engine. Port 0 picks a free port (see `.port`).

A thread per connection must not be held by a client that never finishes its request: the request
line and headers must arrive within `request_timeout_s` in total (a byte at a time does not reset
it), or the connection is closed; at most `max_connections` are served at once, and a connection
over that is closed at once rather than given a thread.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from prometheus_client import exposition
from prometheus_client import generate_latest

# generate_latest() writes the classic text format 0.0.4; prometheus_client >= 0.22 moved
# CONTENT_TYPE_LATEST to 1.0.0, which would mislabel it, so name the format explicitly.
METRICS_CONTENT_TYPE: str = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4",
                                    "text/plain; version=0.0.4; charset=utf-8")

LOG = logging.getLogger("rollbackd.http")

TEXT = "text/plain; charset=utf-8"


class _DeadlineReader:
    """The handler's `rfile` for the request head: `readline` gives up (TimeoutError, which
    http.server answers by closing the connection) once `deadline` (time.monotonic) has passed,
    however slowly the bytes trickle in. GET and HEAD have no body, so only the head is read."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline
        self._buffer = b""
        self.closed = False

    def _fill(self) -> bool:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request not received in time")
        self._sock.settimeout(remaining)
        chunk = self._sock.recv(4096)
        self._buffer += chunk
        return bool(chunk)

    def readline(self, limit: int = -1) -> bytes:
        limit = limit if limit is not None and limit >= 0 else 1 << 20
        while b"\n" not in self._buffer and len(self._buffer) < limit:
            if not self._fill():
                break
        end = self._buffer.find(b"\n")
        size = min(limit, end + 1 if end >= 0 else len(self._buffer))
        line, self._buffer = self._buffer[:size], self._buffer[size:]
        return line

    def read(self, size: int = -1) -> bytes:
        while (size < 0 or len(self._buffer) < size) and self._fill():
            pass
        size = len(self._buffer) if size < 0 else size
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def close(self) -> None:
        self.closed = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # listen backlog: accept a burst (and close it if over the cap)

    def __init__(self, address: tuple[str, int], handler: Any, max_connections: int) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: close it rather than give it a thread
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that resets or stalls is not news; never a traceback on the decision log's stream.
        LOG.debug("connection from %s dropped", client_address, exc_info=True)


class HealthServer:
    """Serves /metrics, /healthz and /readyz until `stop()`."""

    def __init__(self, port: int, *, registry: Any, ready: Callable[[], tuple[bool, str]],
                 alive: Callable[[], bool] = lambda: True, host: str = "0.0.0.0",
                 request_timeout_s: float = 10.0, max_connections: int = 64) -> None:
        self.request_timeout_s = request_timeout_s
        self._registry = registry
        self._ready = ready
        self._alive = alive
        server = self

        class Handler(BaseHTTPRequestHandler):
            # One short response per request; HTTP/1.0 closes the connection so no thread lingers.
            protocol_version = "HTTP/1.0"
            timeout = request_timeout_s  # socket timeout for the writes, too

            def setup(self) -> None:
                super().setup()
                self.rfile.close()  # the buffered file; the socket stays open
                self.rfile = _DeadlineReader(self.connection,  # type: ignore[assignment]
                                             time.monotonic() + server.request_timeout_s)

            def do_GET(self) -> None:  # noqa: N802 - the http.server naming
                self.connection.settimeout(server.request_timeout_s)
                status, content_type, body = server.respond(self.path)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_HEAD(self) -> None:  # noqa: N802
                self.connection.settimeout(server.request_timeout_s)
                status, content_type, body = server.respond(self.path)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
                return None  # probes every few seconds would drown the decision log

        self._httpd = _Server((host, port), Handler, max_connections)
        self.host = host
        self.port: int = int(self._httpd.server_address[1])
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.start()

    def start(self) -> "HealthServer":
        """Serve in a daemon thread. The constructor already calls it; calling it again is a no-op."""
        if self._thread is None and not self._stopped:
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                            name="health-http", daemon=True)
            self._thread.start()
        return self

    def respond(self, raw_path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for one GET; also usable without a socket."""
        path = raw_path.split("?", 1)[0]
        if path == "/metrics":
            try:
                return 200, METRICS_CONTENT_TYPE, generate_latest(self._registry)
            except Exception as exc:  # noqa: BLE001 - a broken collector must not kill the server
                LOG.error("/metrics failed: %s: %s", type(exc).__name__, exc)
                return 500, TEXT, f"metrics unavailable: {type(exc).__name__}\n".encode()
        if path == "/healthz":
            try:
                alive = bool(self._alive())
            except Exception as exc:  # noqa: BLE001
                return 503, TEXT, f"not alive: {type(exc).__name__}: {exc}\n".encode()
            return (200, TEXT, b"ok\n") if alive else (503, TEXT, b"not alive\n")
        if path == "/readyz":
            try:
                ok, reason = self._ready()
            except Exception as exc:  # noqa: BLE001
                return 503, TEXT, f"not ready: readiness check failed: {type(exc).__name__}: {exc}\n".encode()
            if ok:
                return 200, TEXT, f"ready: {reason}\n".encode() if reason else b"ready\n"
            return 503, TEXT, f"not ready: {reason}\n".encode()
        return 404, TEXT, b"not found: try /metrics, /healthz or /readyz\n"

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Stop serving and release the port. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5.0)
        self._httpd.server_close()


__all__ = ["HealthServer"]
