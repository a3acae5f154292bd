"""RemoteSource reads a running exporter's snapshot (what `lvstop --connect` shows)."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import http.server
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lvstop.errors import ControlError, SourceError
from lvstop.model import DestKey, IssueKind, ServiceKey
from lvstop.poller import Poller
from lvstop.sources import remote
from lvstop.sources.remote import RemoteSource, basic_auth, gunzip
from lvstop.tui.writes import RemoteWriter

from .support import Harness, start_exporter
from .test_api import web_config


def test_remote_snapshot_equals_the_exporters(exporter: Harness) -> None:
    exporter.running.poller.stop()
    local = exporter.poll()
    remote = RemoteSource(exporter.read_url + "/").read()
    assert remote == dataclasses.replace(local, source="remote", seq=0, total_instant=None)


def test_a_poller_over_a_remote_keeps_the_remotes_rates(exporter: Harness) -> None:
    exporter.running.poller.stop()
    exporter.poll()
    poller = Poller(RemoteSource(exporter.read_url))
    first = poller.poll_once()
    again = poller.poll_once()  # the same remote poll read twice: no interval, no instant rates
    assert first.services[0].rates == exporter.running.poller.latest.services[0].rates  # type: ignore[union-attr]
    assert again.services[0].dests[0].instant is None
    exporter.poll()
    later = poller.poll_once()
    assert later.services[0].dests[0].instant is not None and later.seq == 3


def test_credentials_in_the_url_and_their_absence(tmp_path: Path) -> None:
    h = start_exporter(tmp_path, "--web.config.file", str(web_config(tmp_path)))
    try:
        host = h.read_url.split("://")[1]
        assert RemoteSource(f"http://alice:alice-pw@{host}").read().source == "remote"
        with pytest.raises(SourceError) as e:
            RemoteSource(f"http://alice:nope@{host}").read()
        assert e.value.kind is IssueKind.NO_PERMISSION and "nope" not in str(e.value)
    finally:
        h.running.stop()


def test_nothing_listening_is_an_io_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SourceError) as e:
        RemoteSource(f"127.0.0.1:{port}", timeout=2).read()
    assert e.value.kind is IssueKind.IO


@pytest.fixture
def liar() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"schema": 1, "services": "many"}' if "json" in self.path else b"<html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_something_else_answering_is_malformed(liar: str) -> None:
    with pytest.raises(SourceError) as e:
        RemoteSource(liar).read()
    assert e.value.kind is IssueKind.MALFORMED


def test_bad_urls_and_no_connection_table() -> None:
    with pytest.raises(ValueError):
        RemoteSource("ftp://example.org/")
    with pytest.raises(SourceError) as e:
        RemoteSource("http://127.0.0.1:1").conn_lines()
    assert e.value.kind is IssueKind.UNAVAILABLE


def test_credentials_in_the_url_become_one_basic_header_for_reads_and_writes() -> None:
    url = "http://al%40ice:p%3Aw@127.0.0.1:9"
    want = {"Authorization": "Basic " + base64.b64encode(b"al@ice:p:w").decode()}
    assert basic_auth(url) == want and basic_auth("127.0.0.1:9") == {}
    bob = basic_auth("http://bob@127.0.0.1:9")["Authorization"]
    assert bob == "Basic " + base64.b64encode(b"bob:").decode()
    assert RemoteSource(url)._headers["Authorization"] == want["Authorization"]
    assert RemoteWriter(url)._headers["Authorization"] == want["Authorization"]
    assert "p%3Aw" not in RemoteSource(url).url
    assert "Authorization" not in RemoteWriter("127.0.0.1:9")._headers


Reply = Callable[[http.server.BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]]
Serve = Callable[[Reply], tuple[str, list[tuple[str, dict[str, str]]]]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """serve(reply) -> (url, requests seen as (method, headers)) of a loopback server answering with reply."""
    servers: list[http.server.HTTPServer] = []

    def start(reply: Reply) -> tuple[str, list[tuple[str, dict[str, str]]]]:
        seen: list[tuple[str, dict[str, str]]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self) -> None:
                seen.append((self.command, dict(self.headers)))
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                code, headers, body = reply(self)
                self.send_response(code)
                for k, v in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = answer

            def log_message(self, *a: object) -> None:
                pass

        srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}", seen

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("code", [301, 302, 307, 308])
def test_redirects_are_refused_so_credentials_never_leave_for_another_host(serve: Serve, code: int) -> None:
    elsewhere, reached = serve(lambda h: (200, {"Content-Type": "application/json"}, b"{}"))
    elsewhere = elsewhere.replace("127.0.0.1", "localhost")
    url, seen = serve(lambda h: (code, {"Location": elsewhere + h.path}, b""))
    creds = url.replace("http://", "http://alice:secret@")
    with pytest.raises(SourceError) as e:
        RemoteSource(creds).read()
    assert e.value.kind is IssueKind.IO and f"HTTP {code}" in str(e.value)
    assert "not followed" in str(e.value) and "localhost" in str(e.value) and "secret" not in str(e.value)
    with pytest.raises(ControlError) as w:
        RemoteWriter(creds).drain(
            ServiceKey.tcp("203.0.113.1", 80), DestKey(2, "192.0.2.1", 80),
            expect=None, force=False, reason=None, dry_run=True,
        )  # fmt: skip
    assert w.value.status == code and "not followed" in str(w.value)
    assert [m for m, _ in seen] == ["GET", "POST"] and all("Authorization" in hd for _, hd in seen)
    assert reached == []


def test_gunzip_is_bounded_and_strict() -> None:
    assert gunzip(gzip.compress(b"x" * 1000), 1000) == b"x" * 1000
    with pytest.raises(ValueError, match="more than 999 bytes"):
        gunzip(gzip.compress(b"x" * 1000), 999)
    whole = gzip.compress(b'{"a": 1}')
    for bad, why in ((whole[:-3], "truncated"), (whole + whole, "after its end"), (b"{}", "not valid gzip")):
        with pytest.raises(ValueError, match=why):
            gunzip(bad, 1000)


def test_a_gzip_reply_that_inflates_past_the_limit_is_refused(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = gzip.compress(b" " * 100_000)  # valid JSON whitespace, 100 kB from a few hundred bytes
    url, _ = serve(lambda h: (200, {"Content-Encoding": "gzip"}, bomb))
    monkeypatch.setattr(remote, "MAX_BYTES", 50_000)
    assert len(bomb) < 50_000
    with pytest.raises(SourceError) as e:
        RemoteSource(url).read()
    assert e.value.kind is IssueKind.MALFORMED and "more than 50000 bytes once decompressed" in str(e.value)
