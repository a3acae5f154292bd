"""The demo director on a hand-driven clock: the same pictures every time.

The dashboard's tests, its snapshot tests and bench/bench_tui.py need a director whose numbers and
history do not depend on when they run: a seeded SimSource and a poller whose clocks only move when told to.
`Stage.advance()` moves time by one poll and polls; the app shows what the real `--demo` would
show after that many polls.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import dataclass, field

from textual.pilot import Pilot

from lvstop.poller import Poller
from lvstop.sources.sim import SimSource
from lvstop.tui.app import LvstopApp, make_app, writer_for
from lvstop.tui.feed import Writer
from lvstop.tui.names import Resolver

# 2026-01-14 15:30 UTC: near the demo's daily peak, so the tables are busy.
START = 1_768_404_600.0
STEP = 2.0
ACTOR = "tui:oncall"


@dataclass
class ManualClock:
    now: float = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Stage:
    """A seeded demo director, its poller and writer, on one manual clock (wall and monotonic alike)."""

    seed: int = 1
    services: int | None = None
    dests_per_service: int | None = None
    clock: ManualClock = field(default_factory=ManualClock)
    source_class: type[SimSource] = SimSource  # tests pass a subclass that can fail

    def __post_init__(self) -> None:
        self.source = self.source_class(self.seed, self.services, self.dests_per_service, clock=self.clock)
        self.poller = Poller(self.source, interval=STEP, clock=self.clock, wall_clock=self.clock)
        self._dir = tempfile.TemporaryDirectory(prefix="lvstop-stage-")
        drains = os.path.join(self._dir.name, "drains.json")
        self.writer: Writer | None = writer_for(self.source, self.poller, drains, actor=ACTOR)

    def advance(self, polls: int = 1) -> None:
        for _ in range(polls):
            self.clock.now += STEP
            self.poller.poll_once()

    def app(self, resolver: Resolver = lambda _address: None) -> LvstopApp:
        """The app over this stage; nothing polls on its own (autostart off); names resolve to none."""
        return make_app(
            [self.poller], writers=[self.writer], autostart=False, resolver=resolver, clock=self.clock
        )

    def close(self) -> None:
        self._dir.cleanup()


async def settle(app: LvstopApp, pilot: Pilot[int], timeout: float = 10.0, *, repaint: bool = True) -> None:
    """Wait until every feed has built and the UI has taken the newest views, then for a repaint."""
    deadline = time.monotonic() + timeout
    while not all(f.idle for f in app.feeds):
        if time.monotonic() > deadline:
            raise TimeoutError("the views did not settle")
        await asyncio.sleep(0.002)  # the UI takes the views meanwhile (this is its event loop)
    if repaint:
        await pilot.pause()


async def play(app: LvstopApp, pilot: Pilot[int], stage: Stage, polls: int) -> None:
    """Poll `polls` times, letting the UI take each snapshot (so the sparklines get every point)."""
    for n in range(polls):
        stage.advance()
        await settle(app, pilot, repaint=n == polls - 1)
