"""Running the checks: which dests each check applies to, the scheduler, its thread, one round, the demo.

The scheduler lives in its own thread with its own asyncio loop, so no probe ever waits on the poller
or the UI and neither waits on a probe. Each (check, dest) pair is probed every interval +- jitter,
never twice at once, with a bound on how many probes run together (Scheduler). With `--netns` the
thread enters the namespace before it makes its loop: every socket it opens and every command it
starts is then in that namespace.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import heapq
import itertools
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass

from lvstop.health import checks
from lvstop.health.checks import Prober, Starter, Target
from lvstop.health.config import CheckSpec, HealthConfig
from lvstop.health.state import (
    CheckHealth,
    HealthMap,
    ProbeResult,
    Transition,
    advance,
    combine,
    initial,
)
from lvstop.model import DestKey, ServiceKey, Snapshot
from lvstop.sources.netns import enter_netns

DEFAULT_CONCURRENCY = 256
PairKey = tuple[int, ServiceKey, DestKey]  # (index of the check in the file, service, dest)
Pairs = dict[PairKey, tuple[CheckSpec, Target]]


@dataclass(frozen=True, slots=True)
class Skipped:
    """A dest a check matches but cannot probe (a fwmark dest without a port to probe)."""

    spec: CheckSpec
    service: ServiceKey
    dest: DestKey
    reason: str


def targets(config: HealthConfig, snap: Snapshot) -> tuple[Pairs, list[Skipped]]:
    """Every (check, dest) pair the configuration asks for in `snap`, in the snapshot's order."""
    pairs: Pairs = {}
    skipped: list[Skipped] = []
    for svc in snap.services:
        specs = [(i, s) for i, s in enumerate(config.checks) if s.service is None or s.service == svc.key]
        if not specs:
            continue
        for d in svc.dests:
            dkey = d.key
            for i, spec in specs:
                m = spec.dest
                if m is not None and (
                    (m.family, m.address) != (d.family, d.address) or m.port not in (0, d.port)
                ):
                    continue
                port = spec.port or d.port
                if not port:
                    skipped.append(Skipped(spec, svc.key, dkey, "the dest has port 0 (fwmark): set port:"))
                    continue
                pairs[(i, svc.key, dkey)] = (spec, Target(svc.key, dkey, d.fwd, d.weight, port))
    return pairs, skipped


def next_delay(spec: CheckSpec, rng: random.Random) -> float:
    """Seconds to the next probe: the interval, moved by up to the jitter either way."""
    return spec.interval + rng.uniform(-spec.jitter, spec.jitter)


class Scheduler:
    """When each (check, dest) pair is probed next, and its hysteresis. Runs inside one asyncio loop.

    One heap of due times and one loop timer for the earliest, rather than a task per pair: at 5,000
    pairs every 2 s the tasks' sleeps and wake-ups cost more than the probes (bench/bench_health.py).
    A pair is due again `interval +- jitter` after it was last due (as HAProxy's `inter`: slow answers
    or a busy loop do not slow the rate down), but never before its last probe ended, so probes of one
    pair never overlap; at most `concurrency` probes run at once, the others wait their turn.
    """

    def __init__(
        self,
        start: Starter | None = None,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_transition: Callable[[Transition], None] | None = None,
    ) -> None:
        self._probes: checks.Probes | None = None
        if start is None:
            self._probes = checks.Probes()
            start = self._probes.start
        self._start = start
        self._limit = concurrency
        self._clock = clock
        self._rng = rng or random.Random()
        self._on_transition = on_transition
        self._loop = asyncio.get_running_loop()
        self._heap: list[tuple[float, int, PairKey]] = []
        self._due: dict[PairKey, float] = {}  # a heap entry whose time differs is stale
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._running = 0
        self._specs: Pairs = {}
        self.health: dict[PairKey, CheckHealth] = {}
        self.version = 0  # moves whenever a result arrives, so readers can skip rebuilding their view
        self.probes: dict[str, tuple[int, int, float]] = {}  # by check type: probes, failures, seconds

    def set_targets(self, pairs: Pairs) -> None:
        """Schedule new pairs (their first probe spread over one interval), forget vanished ones."""
        for key in self._specs.keys() - pairs.keys():
            del self._specs[key]
            self._due.pop(key, None)
            self.health.pop(key, None)
            self.version += 1
        now = self._loop.time()
        for key, pair in pairs.items():
            if key not in self._specs:
                self.health[key] = initial(pair[0].label)
                self._push(key, now + self._rng.uniform(0, pair[0].interval))
            self._specs[key] = pair  # a weight or forwarding change reaches the next probe
        self._arm()

    def _push(self, key: PairKey, due: float) -> None:
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._seq), key))

    def _arm(self) -> None:
        if not self._heap or self._running >= self._limit:
            return  # a probe that ends calls _fire
        due = self._heap[0][0]
        if self._timer is None or self._timer.when() > due:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time()
        heap = self._heap
        while heap and heap[0][0] <= now and self._running < self._limit:
            due, _, key = heapq.heappop(heap)
            if self._due.get(key) != due:
                continue
            del self._due[key]
            spec, target = self._specs[key]
            self._running += 1
            self._start(spec, target, functools.partial(self._done, key, spec, due))
        self._arm()

    def _done(self, key: PairKey, spec: CheckSpec, due: float, result: ProbeResult) -> None:
        self._running -= 1
        self.record(key, spec, result)
        if key in self._specs:
            self._push(key, max(self._loop.time(), due + next_delay(spec, self._rng)))
        if self._timer is None:
            self._fire()
        else:
            self._arm()

    def record(self, key: PairKey, spec: CheckSpec, result: ProbeResult) -> None:
        n, failed, seconds = self.probes.get(spec.type, (0, 0, 0.0))
        self.probes[spec.type] = (n + 1, failed + (not result.ok), seconds + result.latency)
        before = self.health.get(key)
        if before is None:  # the pair vanished while its probe ran
            return
        after = advance(before, result, self._clock(), spec.fall, spec.rise)
        self.health[key] = after
        self.version += 1
        if after.state is not before.state and self._on_transition is not None:
            _, skey, dkey = key
            self._on_transition(
                Transition(skey, dkey, after.check, before.state, after.state, result.reason, self._clock())
            )

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._heap.clear()
        self._due.clear()
        self._specs.clear()
        if self._probes is not None:
            self._probes.close()


def health_map(items: Iterable[tuple[PairKey, CheckHealth]]) -> HealthMap:
    """Per (service, dest): its checks combined."""
    grouped: dict[tuple[ServiceKey, DestKey], list[CheckHealth]] = {}
    for (_, skey, dkey), h in items:
        grouped.setdefault((skey, dkey), []).append(h)
    return {k: combine(v) for k, v in grouped.items()}


class HealthRunner:
    """The scheduler in its own thread. `update(snapshot)` from any thread; `view()` from any thread."""

    def __init__(
        self,
        config: HealthConfig,
        *,
        start: Starter | None = None,
        netns: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        on_transition: Callable[[Transition], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._start = start
        self._netns = netns
        self._concurrency = concurrency
        self._on_transition = on_transition
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduler: Scheduler | None = None
        self._thread: threading.Thread | None = None
        self._view: tuple[int, HealthMap] = (-1, {})
        self.skipped: list[Skipped] = []

    def start(self) -> None:
        started: Future[None] = Future()
        self._thread = threading.Thread(target=self._main, args=(started,), name="lvstop-health", daemon=True)
        self._thread.start()
        started.result()  # a namespace that cannot be entered fails here, in the caller

    def _main(self, started: Future[None]) -> None:
        try:
            if self._netns is not None:
                enter_netns(self._netns)
            loop = asyncio.new_event_loop()
        except BaseException as e:
            started.set_exception(e)
            return
        self._loop = loop
        self._scheduler = loop.run_until_complete(self._make_scheduler())
        started.set_result(None)
        try:
            loop.run_forever()
        finally:
            self._scheduler.stop()
            for task in asyncio.all_tasks(loop):  # probes under way (not tcp: those are callbacks)
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))  # let them end
            loop.close()

    async def _make_scheduler(self) -> Scheduler:
        return Scheduler(
            self._start, concurrency=self._concurrency, clock=self._clock, on_transition=self._on_transition
        )

    def update(self, snap: Snapshot) -> None:
        """The dests to check are those of `snap`; thread-safe, returns at once."""
        pairs, self.skipped = targets(self.config, snap)
        if self._loop is not None and self._scheduler is not None:
            self._loop.call_soon_threadsafe(self._scheduler.set_targets, pairs)

    @property
    def results(self) -> int:
        """How many results (and target changes) arrived so far: moves whenever view() would change."""
        return self._scheduler.version if self._scheduler is not None else 0

    def probe_counts(self) -> dict[str, tuple[int, int, float]]:
        """By check type: probes run, probes failed, seconds they took (counters, from the start)."""
        return dict(self._scheduler.probes) if self._scheduler is not None else {}

    def view(self) -> HealthMap:
        """Per (service, dest) health; rebuilt only when a result arrived since the last call."""
        scheduler = self._scheduler
        if scheduler is None:
            return {}
        version, cached = self._view
        if version == scheduler.version:
            return cached
        version = scheduler.version
        items = self.checks()
        if items is None:
            return cached
        view = health_map(items)
        self._view = (version, view)
        return view

    def checks(self) -> list[tuple[PairKey, CheckHealth]] | None:
        """Every (check, dest) pair's health, copied from the loop's thread (None: it kept changing)."""
        scheduler = self._scheduler
        if scheduler is None:
            return []
        for _ in range(3):  # the loop thread may resize the dict while it is copied
            try:
                return list(scheduler.health.items())
            except RuntimeError:
                continue
        return None

    def stop(self, timeout: float = 5.0) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)


async def run_round(
    config: HealthConfig,
    snap: Snapshot,
    prober: Prober | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> tuple[list[tuple[CheckSpec, Target, ProbeResult]], list[Skipped]]:
    """One probe of every (check, dest) pair at once (bounded), in the snapshot's order."""
    pairs, skipped = targets(config, snap)
    sem = asyncio.Semaphore(concurrency)
    probes = checks.Probes()
    run = prober or probes.run

    async def one(spec: CheckSpec, target: Target) -> ProbeResult:
        async with sem:
            return await run(spec, target)

    try:
        results = await asyncio.gather(*(one(s, t) for s, t in pairs.values()))
    finally:
        probes.close()
    return [(s, t, r) for (s, t), r in zip(pairs.values(), results, strict=True)], skipped


# --- the demo: simulated results, no probe leaves the machine -----------------------------------

FLAP_PERIOD = 300.0  # the demo's flapping dest fails for FLAP_DOWN s of every FLAP_PERIOD s
FLAP_DOWN = 40.0


class SimProber:
    """Results for the demo director from its own story: the dead dest (192.0.2.24) never answers, one
    web server (192.0.2.13) stops answering for 40 s every 5 minutes, every other dest answers at a
    steady sub-millisecond latency. A function of the clock alone, like the demo director."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        from lvstop.sources.sim import demo_services

        self._clock = clock
        self._dead = {
            (svc.key.address, d.address, d.port) for svc in demo_services() for d in svc.dests if d.failing
        }
        self._flapping = ("192.0.2.13", 8080)

    async def __call__(self, spec: CheckSpec, target: Target) -> ProbeResult:
        return self.result(spec, target)

    def start(self, spec: CheckSpec, target: Target, done: Callable[[ProbeResult], None]) -> None:
        done(self.result(spec, target))

    def result(self, spec: CheckSpec, target: Target) -> ProbeResult:
        key = (target.service.address, target.address, target.dest.port)
        if key in self._dead:
            return ProbeResult(False, spec.timeout, f"timed out after {spec.timeout:g} s")
        if (target.address, target.dest.port) == self._flapping and self._clock() % FLAP_PERIOD < FLAP_DOWN:
            return ProbeResult(False, 0.0002, "connection refused")
        latency = 0.0002 + _unit_hash(str(target.dest)) * 0.0018
        return ProbeResult(True, latency, _SIM_OK.get(spec.type, "ok"))


_SIM_OK = {"tcp": "connected", "http": "status 200", "https": "status 200", "agent": "agent: up"}


def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big") / 2**32
