"""Screens compared with accepted SVG snapshots (pytest-textual-snapshot).

Deterministic: the demo director is seeded and every clock is a manual one (tests/stage.py), time
zone UTC, no cursor blink (conftest). Update after an intended change with
`pytest tests/tui/test_snapshots.py --snapshot-update` and look at the report it writes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from stage import STEP, ManualClock, Stage, play, settle
from textual.pilot import Pilot

from lvstop.model import DestKey, ServiceKey
from lvstop.poller import Poller
from lvstop.sources.replay import Recorder, ReplaySource
from lvstop.tui.app import LvstopApp, make_app
from lvstop.tui.playback import Playback
from lvstop.tui.widgets.director_view import DirectorView
from lvstop.tui.widgets.live_table import LiveTable

HTTPS = ServiceKey.tcp("203.0.113.10", 443)
HTTPS_13 = DestKey(2, "192.0.2.13", 8443)
API = ServiceKey.tcp("203.0.113.11", 8080)
SIZES = [pytest.param((120, 40), id="120x40"), pytest.param((80, 24), id="80x24")]

Compare = Callable[..., bool]
Before = Callable[[Pilot[int]], Awaitable[None]]


def demo(
    stage: Stage, then: Callable[[LvstopApp, Pilot[int]], Awaitable[None]] | None = None
) -> tuple[LvstopApp, Before]:
    """The demo after 30 polls, with 192.0.2.13 drained after 10 of them; then `then`."""
    app = stage.app()

    async def before(pilot: Pilot[int]) -> None:
        await play(app, pilot, stage, 10)
        assert stage.writer is not None
        stage.writer.drain(HTTPS, HTTPS_13, expect=100, dry_run=False)
        await play(app, pilot, stage, 20)
        if then is not None:
            await then(app, pilot)
        await settle(app, pilot)

    return app, before


async def open_https(app: LvstopApp, pilot: Pilot[int]) -> None:
    app.query_one("#services-table", LiveTable).select_key(str(HTTPS))
    await pilot.press("enter")
    await settle(app, pilot)
    app.query_one("#dests-table", LiveTable).select_key(str(HTTPS_13))


def keys(*pressed: str) -> Callable[[LvstopApp, Pilot[int]], Awaitable[None]]:
    async def press(app: LvstopApp, pilot: Pilot[int]) -> None:
        await pilot.press(*pressed)
        await settle(app, pilot)

    return press


class TestDemo:
    @pytest.mark.parametrize("size", SIZES)
    def test_services(self, snap_compare: Compare, stage: Stage, size: tuple[int, int]) -> None:
        app, before = demo(stage)
        assert snap_compare(app, terminal_size=size, run_before=before)

    @pytest.mark.parametrize("size", SIZES)
    def test_dests_with_a_drain_in_progress(
        self, snap_compare: Compare, stage: Stage, size: tuple[int, int]
    ) -> None:
        app, before = demo(stage, open_https)
        assert snap_compare(app, terminal_size=size, run_before=before)

    @pytest.mark.parametrize("size", SIZES)
    def test_dead_dest_stands_out(self, snap_compare: Compare, stage: Stage, size: tuple[int, int]) -> None:
        async def open_api(app: LvstopApp, pilot: Pilot[int]) -> None:
            app.query_one("#services-table", LiveTable).select_key(str(API))
            await pilot.press("enter")

        app, before = demo(stage, open_api)
        assert snap_compare(app, terminal_size=size, run_before=before)

    @pytest.mark.parametrize("size", SIZES)
    def test_connections(self, snap_compare: Compare, stage: Stage, size: tuple[int, int]) -> None:
        async def conns(app: LvstopApp, pilot: Pilot[int]) -> None:
            await open_https(app, pilot)
            await pilot.press("2")
            view = app.query_one(DirectorView)
            while not (view.views and view.views.conns and view.views.conns.entries.rows):
                await pilot.pause(0.02)

        app, before = demo(stage, conns)
        assert snap_compare(app, terminal_size=size, run_before=before)

    @pytest.mark.parametrize("size", SIZES)
    def test_director(self, snap_compare: Compare, stage: Stage, size: tuple[int, int]) -> None:
        app, before = demo(stage, keys("3"))
        assert snap_compare(app, terminal_size=size, run_before=before)

    @pytest.mark.parametrize("size", SIZES)
    def test_events(self, snap_compare: Compare, stage: Stage, size: tuple[int, int]) -> None:
        app, before = demo(stage, keys("4"))
        assert snap_compare(app, terminal_size=size, run_before=before)

    @pytest.mark.parametrize("size", SIZES)
    def test_drain_confirmation(self, snap_compare: Compare, stage: Stage, size: tuple[int, int]) -> None:
        async def confirm(app: LvstopApp, pilot: Pilot[int]) -> None:
            await open_https(app, pilot)
            app.query_one("#dests-table", LiveTable).select_key("192.0.2.12:8443")
            await pilot.press("d")
            while type(app.screen).__name__ != "ConfirmScreen":
                await pilot.pause(0.02)

        app, before = demo(stage, confirm)
        assert snap_compare(app, terminal_size=size, run_before=before)


@pytest.fixture
def checked() -> Iterator[Stage]:
    """The demo with the health checks `lvstop --demo` runs (simulated answers, one per poll)."""
    s = Stage(checks=True)
    yield s
    s.close()


class TestHealth:
    @pytest.mark.parametrize("size", SIZES)
    def test_services(self, snap_compare: Compare, checked: Stage, size: tuple[int, int]) -> None:
        app, before = demo(checked)
        assert snap_compare(app, terminal_size=size, run_before=before)

    @pytest.mark.parametrize("size", SIZES)
    def test_dests_down_with_weight(
        self, snap_compare: Compare, checked: Stage, size: tuple[int, int]
    ) -> None:
        async def open_api(app: LvstopApp, pilot: Pilot[int]) -> None:
            app.query_one("#services-table", LiveTable).select_key(str(API))
            await pilot.press("enter")

        app, before = demo(checked, open_api)
        assert snap_compare(app, terminal_size=size, run_before=before)


@pytest.fixture
def recording(tmp_path: Path) -> Iterator[Path]:
    """Twelve polls of the demo director, recorded as `lvstop record` would."""
    stage = Stage()
    path = tmp_path / "demo.jsonl.gz"
    with Recorder(path) as rec:
        for _ in range(12):
            stage.advance()
            assert stage.poller.latest is not None
            rec.write(stage.poller.latest)
    stage.close()
    yield path


class TestReplay:
    @pytest.mark.parametrize("size", SIZES)
    def test_paused_replay_stepped(
        self, snap_compare: Compare, recording: Path, size: tuple[int, int]
    ) -> None:
        clock = ManualClock()
        source = ReplaySource(recording)
        poller = Poller(source, interval=STEP, clock=clock, wall_clock=clock)
        playback = Playback(poller, source, STEP)
        app = make_app([poller], playbacks=[playback], autostart=False, resolver=lambda _a: None, clock=clock)

        async def before(pilot: Pilot[int]) -> None:
            playback.pause()
            for _ in range(7):
                clock.now += STEP
                assert playback.step() is None
                await settle(app, pilot)
            await pilot.press("right_square_bracket", "right_square_bracket")  # 4x
            await settle(app, pilot)

        assert snap_compare(app, terminal_size=size, run_before=before)
        assert source.position == 7 and poller.interval == STEP / 4
