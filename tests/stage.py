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

from lvstop.events import health_event
from lvstop.health.config import HealthConfig, parse
from lvstop.health.runner import PairKey, SimProber, health_map, targets
from lvstop.health.state import CheckHealth, HealthMap, Transition, advance, initial
from lvstop.model import Snapshot
from lvstop.poller import Poller
from lvstop.sources.sim import SimSource
from lvstop.tui.app import DEMO_CHECKS, LvstopApp, make_app, writer_for
from lvstop.tui.feed import Managed, Writer
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


class StagedChecks:
    """The demo's health checks on the stage's clock: one simulated probe of every (check, dest) per
    poll, in the poller's thread, so that health, like the rest, depends only on the number of polls.
    The hysteresis and the events are lvstop.health's and lvstop.events' own."""

    def __init__(self, config: HealthConfig, poller: Poller, clock: ManualClock) -> None:
        self.config = config
        self.prober = SimProber(clock)
        self.clock = clock
        self.events = poller.events
        self.health: dict[PairKey, CheckHealth] = {}
        poller.subscribe(self.update)  # before the app's feed: health is current when it builds

    def update(self, snap: Snapshot) -> None:
        pairs, _ = targets(self.config, snap)
        now = self.clock()
        health: dict[PairKey, CheckHealth] = {}
        for key, (spec, target) in pairs.items():
            before = self.health.get(key) or initial(spec.label)
            result = self.prober.result(spec, target)
            after = health[key] = advance(before, result, now, spec.fall, spec.rise)
            if after.state is not before.state:
                _, skey, dkey = key
                event = health_event(
                    Transition(skey, dkey, after.check, before.state, after.state, result.reason, now)
                )
                if event is not None:
                    self.events.append(event)
        self.health = health

    def view(self) -> HealthMap:
        return health_map(self.health.items())


@dataclass
class Stage:
    """A seeded demo director, its poller and writer, on one manual clock (wall and monotonic alike)."""

    seed: int = 1
    services: int | None = None
    dests_per_service: int | None = None
    clock: ManualClock = field(default_factory=ManualClock)
    source_class: type[SimSource] = SimSource  # tests pass a subclass that can fail
    checks: bool = False  # the demo's health checks (lvstop --demo runs them), staged

    def __post_init__(self) -> None:
        self.source = self.source_class(self.seed, self.services, self.dests_per_service, clock=self.clock)
        self.poller = Poller(self.source, interval=STEP, clock=self.clock, wall_clock=self.clock)
        self.health = StagedChecks(parse(DEMO_CHECKS), self.poller, self.clock) if self.checks else None
        self._dir = tempfile.TemporaryDirectory(prefix="lvstop-stage-")
        drains = os.path.join(self._dir.name, "drains.json")
        self.writer: Writer | None = writer_for(self.source, self.poller, drains, actor=ACTOR)

    def advance(self, polls: int = 1) -> None:
        for _ in range(polls):
            self.clock.now += STEP
            self.poller.poll_once()

    def app(self, resolver: Resolver = lambda _address: None, managed: Managed | None = None) -> LvstopApp:
        """The app over this stage; nothing polls on its own (autostart off); names resolve to none;
        `managed` says who manages which service (the demo: nobody)."""
        return make_app(
            [self.poller],
            writers=[self.writer],
            autostart=False,
            resolver=resolver,
            clock=self.clock,
            checks=[self.health],
            managed=[managed],
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
