"""The feed between the poller and the UI: coalescing, pause, drains, failures; playback of replays."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from stage import STEP, ManualClock, Stage

from lvstop.control import DrainRecord
from lvstop.errors import LvstopError
from lvstop.model import DestKey, ServiceKey
from lvstop.poller import Poller
from lvstop.sources.replay import Recorder, ReplaySource
from lvstop.tui.feed import DirectorFeed
from lvstop.tui.playback import Playback


def wait(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.fixture
def feed(stage: Stage) -> Iterator[tuple[DirectorFeed, list[int]]]:
    notified: list[int] = []
    f = DirectorFeed(stage.poller, writer=stage.writer, resolver=lambda _a: None, clock=stage.clock)
    f.start(lambda: notified.append(1), poll=False)
    yield f, notified
    f.stop()


def test_snapshots_coalesce_until_the_ui_takes_them(
    stage: Stage, feed: tuple[DirectorFeed, list[int]]
) -> None:
    f, notified = feed
    wait(lambda: f.idle or notified)
    first = f.take()
    notified.clear()
    for _ in range(8):  # the UI is busy: eight polls, one notification
        stage.advance()
    wait(lambda: not f._dirty and not f._busy)
    assert len(notified) == 1
    views = f.take()
    assert views is not None and first is not None and views.build > first.build
    assert views.live is stage.poller.latest  # the newest, not the one that caused the notify
    wait(lambda: f.idle)


def test_a_build_that_changes_nothing_on_screen_is_not_sent(
    stage: Stage, feed: tuple[DirectorFeed, list[int]]
) -> None:
    f, notified = feed
    stage.advance()
    wait(lambda: f.take() is not None and f.idle)
    shown = f.take()
    notified.clear()
    f.request()  # a rebuild from the same state: nothing on screen would change
    wait(lambda: f.idle)
    assert notified == [] and f.take() is shown  # no message to the UI, no repaint
    stage.advance()  # a poll with new numbers is sent as before
    wait(lambda: not f._dirty and not f._busy)
    assert notified == [1] and f.take() is not shown


def test_pause_keeps_tables_and_moves_the_header(stage: Stage, feed: tuple[DirectorFeed, list[int]]) -> None:
    f, _ = feed
    stage.advance(2)
    wait(lambda: f.take() is not None and f.idle)
    f.set_paused(True)
    stage.advance(2)
    wait(lambda: not f._dirty and not f._busy)
    views = f.take()
    assert views is not None and views.live is not None and views.shown is not None
    assert views.shown.seq == 2 and views.live.seq == 4


def test_drains_are_read_once_per_poll_and_their_failure_is_kept(stage: Stage) -> None:
    calls: list[float] = []

    class Writer:
        fail = False

        def drains(self) -> Mapping[tuple[ServiceKey, DestKey], DrainRecord]:
            calls.append(time.monotonic())
            if self.fail:
                raise LvstopError("/var/lib/lvstop/drains.json: unreadable drain state")
            return {
                (ServiceKey.tcp("203.0.113.10", 80), DestKey(2, "192.0.2.11", 8080)): DrainRecord(
                    100, 0.0, "a"
                )
            }

        drain = restore = set_weight = None

    w = Writer()
    f = DirectorFeed(stage.poller, writer=w, resolver=lambda _a: None, clock=stage.clock)  # type: ignore[arg-type]
    stage.advance()
    f.on_snapshot(stage.poller.latest)  # type: ignore[arg-type]
    for _ in range(3):  # keystrokes rebuild; the file is not read again
        f.build()
    assert len(calls) == 1
    w.fail = True
    stage.advance()
    f.on_snapshot(stage.poller.latest)  # type: ignore[arg-type]
    views = f.build()
    assert len(views.drains) == 1 and "unreadable" in (f.drains_error or "")


def test_a_failing_build_is_reported_and_the_thread_lives_on(stage: Stage) -> None:
    notified = threading.Event()
    f = DirectorFeed(stage.poller, resolver=lambda _a: None, clock=stage.clock)
    broken = [True]
    real = f.build

    def build():  # type: ignore[no-untyped-def]
        if broken[0]:
            raise KeyError("boom")
        return real()

    f.build = build  # type: ignore[method-assign]
    f.start(notified.set, poll=False)
    try:
        wait(lambda: f.build_error is not None)
        assert "KeyError" in f.build_error  # type: ignore[operator]
        broken[0] = False
        f.request()
        assert notified.wait(5) and f.build_error is None
    finally:
        f.stop()


def test_retired_views_are_freed_on_the_builder_thread(
    stage: Stage, feed: tuple[DirectorFeed, list[int]]
) -> None:
    f, _ = feed
    freed_on: list[int] = []

    class Marker:
        def __del__(self) -> None:
            freed_on.append(threading.get_ident())

    stage.advance()
    wait(lambda: f.take() is not None and f.idle)
    views = f.take()
    assert views is not None
    holder = [views, Marker()]
    f.retire(holder)  # type: ignore[arg-type]
    del holder, views
    wait(lambda: freed_on)
    assert freed_on == [f._thread.ident]  # type: ignore[union-attr]


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    stage = Stage()
    path = tmp_path / "r.jsonl.gz"
    with Recorder(path) as rec:
        for _ in range(4):
            stage.advance()
            rec.write(stage.poller.latest)  # type: ignore[arg-type]
    stage.close()
    return path


def test_playback_steps_speeds_and_stops_at_the_end(recording: Path) -> None:
    clock = ManualClock()
    source = ReplaySource(recording)
    poller = Poller(source, interval=STEP, clock=clock, wall_clock=clock)
    pb = Playback(poller, source, STEP)
    poller.subscribe(pb.on_snapshot)
    pb.pause()
    assert pb.label == "replay 0/4 at 1x, paused"
    for _ in range(4):
        clock.now += STEP
        assert pb.step() is None
    assert pb.label == "replay 4/4 at 1x, end" and not pb.playing
    assert pb.step() is None and source.position == 4  # nothing past the end
    assert pb.set_speed(2) == 2 and poller.interval == STEP / 2
    assert pb.set_speed(1000) == 64  # clamped
    pb.resume()  # from the end: starts over
    try:
        assert source.position == 0 or pb.playing
    finally:
        pb.pause()
