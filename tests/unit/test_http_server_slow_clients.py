"""HealthServer against clients that never finish a request: half-sent requests and byte-at-a-time
trickles are dropped after the request timeout, connections over the cap are closed at once, and
/healthz keeps answering. Real loopback sockets; nothing asserts on how long anything took."""
from __future__ import annotations

import socket
import threading
import urllib.request
from typing import Iterator

import pytest
from prometheus_client import CollectorRegistry

from daemon.adapters.http_server import HealthServer

HALF_SENT = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow"  # no end of headers


@pytest.fixture
def server() -> Iterator[HealthServer]:
    s = HealthServer(0, registry=CollectorRegistry(), ready=lambda: (True, ""), host="127.0.0.1",
                     request_timeout_s=0.5, max_connections=20)
    yield s
    s.stop()


def healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
        return int(response.status)


def dropped(sock: socket.socket) -> bool:
    """True once the server has closed the connection (EOF or reset) without answering."""
    sock.settimeout(10)  # far above the server's timeout: a connection still held fails the test
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def handler_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("Thread-") and t.is_alive())


def test_many_half_sent_requests_are_dropped_and_healthz_still_answers(server: HealthServer) -> None:
    before = handler_threads()
    socks = []
    for _ in range(60):  # three times the connection cap
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(HALF_SENT)
        socks.append(sock)
    try:
        assert all(dropped(sock) for sock in socks)
        assert handler_threads() <= before + 20
        assert healthz(server.port) == 200
    finally:
        for sock in socks:
            sock.close()


def test_a_trickle_does_not_reset_the_timeout(server: HealthServer) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port))
    try:
        closed = threading.Event()

        def trickle() -> None:
            for byte in HALF_SENT:  # one byte every 50 ms: each read is quick, the request never ends
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    closed.set()
                    return
                if closed.wait(0.05):
                    return

        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        assert dropped(sock)
        closed.set()
        sender.join(5)
        assert healthz(server.port) == 200
    finally:
        sock.close()


def test_a_slow_but_complete_request_is_answered(server: HealthServer) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port))
    try:
        sock.sendall(b"GET /healthz HTTP/1.0\r\n")
        sock.sendall(b"Host: 127.0.0.1\r\n\r\n")
        sock.settimeout(10)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
        assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"ok\n")
    finally:
        sock.close()
