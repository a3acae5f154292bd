"""RemoteSource reads a running exporter's snapshot (what `lvstop --connect` shows)."""

from __future__ import annotations

import dataclasses
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvstop.errors import SourceError
from lvstop.model import IssueKind
from lvstop.poller import Poller
from lvstop.sources.remote import RemoteSource

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
