"""`--connect`: remote directors through real lvstop exporters on loopback (reads, writes, tabs)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stage import settle

from lvstop.errors import ControlError
from lvstop.exporter.main import Running, build_parser, start
from lvstop.model import DestKey, ServiceKey
from lvstop.poller import Poller
from lvstop.sources.remote import RemoteHealth, RemoteSource
from lvstop.sources.sim import SimSource
from lvstop.tui.app import _remote, make_app, writer_for
from lvstop.tui.widgets.director_view import DirectorView
from lvstop.tui.widgets.live_table import LiveTable
from lvstop.tui.widgets.spans import SpanLines
from lvstop.tui.writes import RemoteWriter

from .test_health_view import API, api_dead_is_down, cells
from .test_managed_view import fake_proc

HTTPS = ServiceKey.tcp("203.0.113.10", 443)
NTP = ServiceKey.udp("203.0.113.15", 123)
DEST = DestKey(2, "192.0.2.13", 8443)


def exporter(tmp: Path, *extra: str) -> Running:
    """An exporter on the demo director, writes on (loopback, no auth), its own drain state."""
    (tmp / "proc").mkdir(parents=True, exist_ok=True)
    args = build_parser().parse_args([
        "--source", "demo", "--web.listen-address", "127.0.0.1:0", "--write.listen-address", "127.0.0.1:0",
        "--write.enable", "--drain-state", str(tmp / "drains.json"), "--audit-log", str(tmp / "audit.jsonl"),
        "--proc-root", str(tmp / "proc"), "--no-collector.conntable", *extra,
    ])  # fmt: skip
    running = start(args, SimSource(seed=1), audit_stream=io.StringIO())
    deadline = time.monotonic() + 10
    while running.poller.latest is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return running


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[Running]:
    r = exporter(tmp_path / "a")
    yield r
    r.stop()


def write_url(r: Running) -> str:
    return r.servers[1].url  # the write listener serves the reads too


def test_remote_writer_goes_through_the_exporters_control(remote: Running) -> None:
    w = RemoteWriter(write_url(remote))
    dry = w.drain(HTTPS, DEST, expect=100, force=False, reason=None, dry_run=True)
    assert (dry.outcome, dry.old, dry.requested, dry.previous) == ("dry_run", 100, 0, 100)
    done = w.drain(HTTPS, DEST, expect=100, force=False, reason=None, dry_run=False)
    assert done.outcome == "applied" and done.verified == 0
    (key, rec), *more = w.drains().items()
    assert key == (HTTPS, DEST) and not more
    assert (rec.previous, rec.cause, rec.reason) == (100, "operator", None) and rec.since > 0
    with pytest.raises(ControlError) as stale:
        w.restore(HTTPS, DEST, expect=7, force=False, reason=None, dry_run=False)
    assert stale.value.status == 409 and "not 7" in str(stale.value)
    assert w.restore(HTTPS, DEST, expect=0, force=False, reason=None, dry_run=False).verified == 100


def test_read_only_listener_refuses_writes_with_its_reason(remote: Running) -> None:
    w = RemoteWriter(remote.servers[0].url)
    with pytest.raises(ControlError) as refused:
        w.drain(HTTPS, DEST, expect=100, force=False, reason=None, dry_run=True)
    assert refused.value.status == 403 and "not served on this listener" in str(refused.value)


def test_unreachable_exporter_is_a_clear_error() -> None:
    with pytest.raises(ControlError) as down:
        RemoteWriter("http://127.0.0.1:9").drains()
    assert down.value.status == 503 and "127.0.0.1:9" in str(down.value)


async def test_two_directors_in_tabs_and_side_by_side(remote: Running, tmp_path: Path) -> None:
    other = exporter(tmp_path / "b")
    try:
        urls = [write_url(remote), write_url(other)]
        pollers = [Poller(RemoteSource(u)) for u in urls]
        writers = [writer_for(p.source, p, "", url=u) for p, u in zip(pollers, urls, strict=True)]
        app = make_app(pollers, writers=writers, labels=urls, autostart=False, resolver=lambda _a: None)
        async with app.run_test(size=(120, 40)) as pilot:
            for _ in range(2):
                for p in pollers:
                    p.poll_once()
                await settle(app, pilot)
            assert [str(t.label) for t in app.query("Tab")][:2] == urls  # type: ignore[attr-defined]
            await pilot.press("greater_than_sign")
            assert app.director.id == "director-1"
            await pilot.press("greater_than_sign")
            side = app.query_one("#side-by-side", LiveTable)
            rows = {r.key: r.cells for r in side.model.rows}
            assert rows["director"][1:] == ("demo-director", "demo-director")
            assert rows["role"][1:] == ("master eth1/7", "master eth1/7")
            assert str(HTTPS) in rows
            await pilot.press("greater_than_sign")  # round to the first director; drain there remotely
            view = app.query_one("#director-0", DirectorView)
            view.query_one("#services-table", LiveTable).select_key(str(HTTPS))
            await pilot.press("enter")
            await settle(app, pilot)
            view.query_one("#dests-table", LiveTable).select_key(str(DEST))
            await pilot.press("d")
            while type(app.screen).__name__ != "ConfirmScreen":
                await pilot.pause(0.02)
            await pilot.press("y")
            deadline = time.monotonic() + 10
            while remote.exporter.source.source.get_dest(HTTPS, DEST).weight != 0:  # type: ignore[attr-defined]
                assert time.monotonic() < deadline
                await pilot.pause(0.05)
            assert other.exporter.source.source.get_dest(HTTPS, DEST).weight == 100  # type: ignore[attr-defined]
    finally:
        other.stop()


async def test_a_remote_directors_health_checks_and_managers_show_as_a_local_ones(tmp_path: Path) -> None:
    """`lvstop --connect`: the Health columns and the Managed by column come from the exporter's
    /api/v1/health and /api/v1/managed (the checks run there, keepalived runs there)."""
    fake_proc(tmp_path)  # keepalived (pid 40) manages HTTPS on the exporter's host
    checks = tmp_path / "checks.yaml"
    checks.write_text(
        "checks:\n  - {service: 'TCP 203.0.113.11:8080', type: tcp, interval: 100ms, jitter: 0, fall: 1}\n"
    )
    there = exporter(tmp_path, "--health.config", str(checks))
    try:
        poller = Poller(RemoteSource(there.servers[0].url))
        health, managed = _remote(poller.source, poller)
        assert isinstance(health, RemoteHealth)
        app = make_app(
            [poller], checks=[health], managed=[managed], autostart=False, resolver=lambda _a: None
        )
        async with app.run_test(size=(160, 40)) as pilot:
            services = app.query_one("#services-table", LiveTable)
            deadline = time.monotonic() + 20
            while "health" not in [c.id for c in services.model.columns] or (
                cells(services.model, "health").get(str(API)) != "3/4 DOWN"
            ):
                assert time.monotonic() < deadline, health.error
                poller.poll_once()
                await settle(app, pilot)
            assert cells(services.model, "managed")[str(HTTPS)] == "keepalived"
            await api_dead_is_down(app, pilot)
            await pilot.press("escape")
            services.select_key(str(HTTPS))
            await pilot.press("enter")
            await settle(app, pilot)
            where = "virtual_server 203.0.113.10 443, /etc/keepalived/keepalived.conf:1"
            assert app.query_one("#dest-notes", SpanLines).plain.startswith(
                f"managed by keepalived (pid 40, {where})"
            )
    finally:
        there.stop()


async def test_a_remote_director_without_checks_shows_no_health(remote: Running) -> None:
    poller = Poller(RemoteSource(remote.servers[0].url))
    health, managed = _remote(poller.source, poller)
    assert isinstance(health, RemoteHealth) and managed is not None
    poller.poll_once()
    assert health.view() is None and health.error is None  # {"checks": false}: no Health columns
    assert managed() == ({}, ())
    app = make_app([poller], checks=[health], managed=[managed], autostart=False, resolver=lambda _a: None)
    async with app.run_test(size=(160, 40)) as pilot:
        poller.poll_once()
        await settle(app, pilot)
        services = app.query_one("#services-table", LiveTable)
        assert services.model.rows and "health" not in [c.id for c in services.model.columns]
