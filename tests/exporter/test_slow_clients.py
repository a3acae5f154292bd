"""Slow and idle clients beside scrapes (issue 12 item 5): no thread each, and no scrape kept out."""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvstop.exporter.http import Server
from lvstop.sources.sim import SimSource

from .support import Harness, listener, start_exporter


def slow_header(addr: tuple[str, int]) -> socket.socket:
    """A client that sent part of a request head and sends nothing more."""
    s = socket.create_connection(addr, timeout=5)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: a")
    return s


def slow_reader(addr: tuple[str, int]) -> socket.socket:
    """A client that asked for the metrics page and never reads the answer (a tiny receive window)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    s.settimeout(5)
    s.connect(addr)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    return s


def get(addr: tuple[str, int], path: str) -> int:
    conn = http.client.HTTPConnection(*addr, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@pytest.fixture
def big(tmp_path: Path) -> Iterator[Harness]:
    """1,000 dests: a 2.3 MB page, more than a socket's buffers hold for a client that does not read."""
    h = start_exporter(tmp_path, source=SimSource(seed=1, services=100, dests_per_service=10))
    yield h
    h.running.stop()


def test_300_slow_clients_neither_starve_scrapes_nor_hold_a_thread_each(big: Harness) -> None:
    """150 clients dripping a request head and 150 that asked for /metrics and read nothing: every scrape
    and health check on a new connection is answered, and the process has not grown a thread per client.
    (The thread-per-connection server answered every scrape 503 for 30 s: the slow readers held all 40
    scrape slots in blocked writes; and it held 256 threads.)"""
    exporter = big
    exporter.get("/metrics")  # the page rendered once: the readers get it at once
    threads = threading.active_count()
    slow: list[socket.socket] = []
    try:
        for addr in listener(exporter):
            for i in range(300):
                slow.append(slow_header(addr) if i % 2 else slow_reader(addr))
            time.sleep(1.0)  # every reader's answer is stuck in its socket by now
            grown = threading.active_count() - threads
            answers = [get(addr, path) for path in ("/metrics", "/-/healthy", "/-/ready") * 4]
            assert answers == [200] * len(answers)
            assert grown < 32, f"{grown} more threads for 300 slow clients"
    finally:
        for s in slow:
            with contextlib.suppress(OSError):
                s.close()


def raw(addr: tuple[str, int], data: bytes) -> bytes:
    """What the server answers to `data` before it closes the connection."""
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_malformed_requests_get_their_status_and_the_connection_ends(exporter: Harness) -> None:
    for addr in listener(exporter):
        for data, status in (
            (b"GARBAGE\r\n\r\n", b"400"),
            (b"GET /-/healthy HTTP/1.1\r\n\r\n", b"400"),  # no Host
            (b"POST /api/v1/drain HTTP/1.1\r\nHost: x\r\nContent-Length: \xc2\xb2\r\n\r\n", b"400"),
        ):
            answer = raw(addr, data)
            assert answer.startswith(b"HTTP/1.1 " + status) and b"Connection: close" in answer, answer
            assert b'{"error": "bad request: ' in answer and b"X-Content-Type-Options: nosniff" in answer


def test_keep_alive_pipelining_and_http_1_0(exporter: Harness) -> None:
    for addr in listener(exporter):
        two = raw(addr, b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\nHEAD /-/ready HTTP/1.1\r\nHost: x\r\n"
                        b"Connection: close\r\n\r\n")  # fmt: skip
        assert two.count(b"HTTP/1.1 200 OK") == 2 and two.endswith(b"\r\n\r\n") and b"Healthy\n" in two
        old = raw(addr, b"GET /-/healthy HTTP/1.0\r\n\r\n")  # closed after the answer: HTTP/1.0's default
        assert old.startswith(b"HTTP/1.1 200 OK") and old.endswith(b"Healthy\n")


def test_a_tls_handshake_counts_against_the_request_deadline(exporter: Harness, tmp_path: Path) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-subj", "/CN=localhost", "-days", "1", "-keyout", str(tmp_path / "k"), "-out", str(tmp_path / "c")],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "c", tmp_path / "k")
    srv = Server(("127.0.0.1", 0), exporter.running.app, writes=False, tls=ctx, head_deadline=0.5)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with socket.create_connection(srv.server_address, timeout=5) as s:
            t0 = time.monotonic()
            s.sendall(b"\x16\x03\x01")  # the start of a ClientHello, and nothing more
            assert s.recv(1) == b""  # cut
            assert time.monotonic() - t0 < 3
        client = ssl.create_default_context(cafile=str(tmp_path / "c"))
        client.check_hostname = False
        conn = http.client.HTTPSConnection(*srv.server_address, context=client, timeout=10)
        conn.request("GET", "/-/healthy")
        assert conn.getresponse().status == 200  # a prompt client is served
        conn.close()
    finally:
        srv.shutdown()
        srv.server_close()
