"""Running the checks: which dests each check applies to, the scheduler, the runner, one round, the demo.

The probes live in a process of their own (worker.py) with its own asyncio loop, so no probe ever
waits on the poller or the UI and neither waits on a probe, nor on the probes' interpreter. Each
(check, dest) pair is probed every interval +- jitter, never twice at once, with a bound on how many
probes run together (Scheduler: when, and the probes); the Book, in lvstop's own process, keeps the
pairs' health (hysteresis, transitions) and what readers in other threads see. With `--netns` the
checks' process enters the namespace before it makes its loop: every socket it opens and every
command it starts is then in that namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import heapq
import itertools
import logging
import os
import random
import select
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass

from lvstop.errors import LvstopError
from lvstop.health import checks
from lvstop.health.checks import Prober, Starter, Target
from lvstop.health.config import CheckSpec, HealthConfig
from lvstop.health.state import (
    CheckHealth,
    DestHealth,
    HealthMap,
    ProbeResult,
    State,
    Transition,
    advance,
    combine,
    initial,
)
from lvstop.health.worker import Child
from lvstop.model import DestKey, ServiceKey, Snapshot, dest_key_bytes
from lvstop.sources.netns import enter_netns

_log = logging.getLogger("lvstop.health")


def _logged(message: str, working: bool) -> None:
    """Where a runner's trouble goes unless told (the exporter's log)."""
    _log.log(logging.INFO if working else logging.WARNING, message)


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


TICK = 0.02  # probes due within one tick start together: a loop wake-up per tick, not per probe
Change = tuple[int, int, CheckSpec, Target]  # (slot, generation, check, target): a new or changed pair
Result = tuple[int, int, ProbeResult]  # (slot, generation, result)


class Book:
    """The (check, dest) pairs in numbered slots, their health and hysteresis: no loop, no I/O.

    Slots are list indices and each pair has a generation, so a result costs no hashing of service
    and dest keys, and a result for a pair that left (or whose slot went to another) is recognised
    and dropped. Readers in other threads take `table()`: the slots of each (service, dest) and a copy
    of the per-slot health, consistent with each other, from which HealthView makes rows when asked.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        on_transition: Callable[[Transition], None] | None = None,
    ) -> None:
        self._clock = clock
        self._on_transition = on_transition
        self._slot: dict[PairKey, int] = {}
        self._keys: list[PairKey | None] = []  # by slot; None: a free slot
        self._pairs: list[tuple[CheckSpec, Target] | None] = []
        self._gen: list[int] = []  # by slot: its pair's generation, 0 while free
        self._free: list[int] = []
        self._gens = itertools.count(1)
        self._health: list[CheckHealth | None] = []  # by slot; results write here
        # what readers see: the groups, the pairs by slot, their health, and each group's dest key bytes
        self._published: tuple[Groups, list[PairKey | None], list[CheckHealth | None], list[bytes]] = (
            {},
            [],
            self._health,
            [],
        )
        self._counts: dict[str, list[float]] = {}  # by check type: probes, failures, seconds
        self.version = 0  # moves whenever a result arrives, so readers can skip rebuilding their view

    @property
    def health(self) -> dict[PairKey, CheckHealth]:
        """Every pair's health, as a dict made now (readers in other threads use table())."""
        return {
            k: h for k, h in zip(self._keys, self._health, strict=True) if k is not None and h is not None
        }

    @property
    def probes(self) -> dict[str, tuple[int, int, float]]:
        """By check type: probes run, probes failed, seconds they took."""
        return {t: (int(n), int(f), s) for t, (n, f, s) in list(self._counts.items())}

    def table(self) -> Table:
        groups, _, health, packed = self._published
        return groups, health.copy(), packed

    def pairs(self) -> list[tuple[PairKey, CheckHealth]]:
        """Every pair and its health, for a reader in another thread."""
        _, keys, health, _ = self._published
        return [(k, h) for k, h in zip(keys, health.copy(), strict=True) if k is not None and h is not None]

    def set_targets(self, pairs: Pairs) -> tuple[list[Change], list[int]]:
        """Take `pairs` as the pairs to check: the new or changed ones and the slots of those that left."""
        health = self._health.copy()  # readers keep the old list, consistent with the old groups
        removed = [self._slot.pop(k) for k in [k for k in self._slot if k not in pairs]]
        for s in removed:
            self._keys[s] = self._pairs[s] = health[s] = None
            self._gen[s] = 0
        self._free.extend(removed)
        changes: list[Change] = []
        added = False
        for key, pair in pairs.items():
            known = self._slot.get(key)
            if known is None:
                s = self._slot[key] = self._new_slot(health)
                self._keys[s], self._gen[s], health[s] = key, next(self._gens), initial(pair[0].label)
                added = True
            elif pair == self._pairs[known]:
                continue
            else:
                s = known
            self._pairs[s] = pair  # a weight or forwarding change reaches the next probe
            changes.append((s, self._gen[s], *pair))
        if removed or added:
            groups: Groups = {}
            for _, skey, dkey in pairs:
                groups.setdefault((skey, dkey), [])
            for key, s in self._slot.items():
                groups[key[1], key[2]].append(s)
            self._health = health
            packed = [dest_key_bytes(s, d.family, d.address, d.port) for s, d in groups]
            self._published = (groups, self._keys.copy(), health, packed)
            self.version += 1
        return changes, removed

    def live(self) -> list[Change]:
        """Every pair as a change: what a new checks' process is told first."""
        return [(s, self._gen[s], *pair) for s, pair in enumerate(self._pairs) if pair is not None]

    def lost(self, reason: str) -> None:
        """The results stopped coming (the checks' process ended): every pair is unknown, for `reason`,
        until its next result. No transitions: one report says why, not one per dest."""
        now = self._clock()
        gone = ProbeResult(False, 0.0, reason)
        health = [
            None if h is None else CheckHealth(h.check, State.UNKNOWN, None, gone, now) for h in self._health
        ]
        self._health = health
        groups, keys, _, packed = self._published
        self._published = (groups, keys, health, packed)
        self.version += 1

    def _new_slot(self, health: list[CheckHealth | None]) -> int:
        if self._free:
            return self._free.pop()
        self._keys.append(None)
        self._pairs.append(None)
        self._gen.append(0)
        health.append(None)
        return len(self._keys) - 1

    def record(self, results: Iterable[Result]) -> None:
        """Results from the scheduler: counters, hysteresis, transitions."""
        counts, gens, pairs, healths = self._counts, self._gen, self._pairs, self._health
        now = self._clock()
        for s, gen, result in results:
            if gens[s] != gen:
                continue  # the pair left while its probe ran
            spec = pairs[s][0]  # type: ignore[index]
            c = counts.get(spec.type)
            if c is None:
                c = counts[spec.type] = [0, 0, 0.0]
            c[0] += 1
            c[1] += not result.ok
            c[2] += result.latency
            before = healths[s]
            assert before is not None
            after = healths[s] = advance(before, result, now, spec.fall, spec.rise)
            self.version += 1
            if after.state is not before.state and self._on_transition is not None:
                key = self._keys[s]
                assert key is not None
                self._on_transition(
                    Transition(key[1], key[2], after.check, before.state, after.state, result.reason, now)
                )


class Scheduler:
    """When each pair (by slot) is probed next; it starts the probes and hands their results, a batch
    per tick, to `deliver`. Runs inside one asyncio loop.

    One heap of due times and one loop timer, rather than a task per pair: at 5,000 pairs every 2 s
    the tasks' sleeps and wake-ups cost more than the probes (bench/bench_health.py). The timer fires
    at most once per TICK and starts every probe due by then. A pair is due again `interval +- jitter`
    after it was last due (as HAProxy's `inter`: slow answers or a busy loop do not slow the rate
    down), but never before its last probe ended, so probes of one pair never overlap; at most
    `concurrency` probes run at once, the others wait for a later tick.
    """

    def __init__(
        self,
        deliver: Callable[[list[Result]], None],
        start: Starter | None = None,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        rng: random.Random | None = None,
    ) -> None:
        self._probes: checks.Probes | None = None
        if start is None:
            self._probes = checks.Probes()
            start = self._probes.start
        self._start = start
        self._deliver = deliver
        self._limit = concurrency
        self._rng = rng or random.Random()
        self._loop = asyncio.get_running_loop()
        self._live: dict[int, Change] = {}  # by slot
        self._heap: list[tuple[float, int, int]] = []  # (due, generation, slot)
        self._timer: asyncio.TimerHandle | None = None
        self._last_tick = -TICK
        self._running = 0
        self._outbox: list[Result] = []

    def apply(self, changes: list[Change], removed: list[int]) -> None:
        """New pairs (their first probe spread over one interval), changed ones, and slots now empty."""
        for s in removed:
            self._live.pop(s, None)
        now = self._loop.time()
        for change in changes:
            s, gen, spec, _ = change
            old = self._live.get(s)
            self._live[s] = change
            if old is None or old[1] != gen:
                heapq.heappush(self._heap, (now + self._rng.uniform(0, spec.interval), gen, s))
        self._arm()

    def _arm(self) -> None:
        heap = self._heap
        if not heap:
            return
        when = self._last_tick + TICK
        if self._running < self._limit:
            when = max(when, heap[0][0])  # when full, a probe that ends makes room by the next tick
        timer = self._timer
        if timer is not None:
            if timer.when() <= when:
                return
            timer.cancel()
        self._timer = self._loop.call_at(when, self._tick)

    def _tick(self) -> None:
        self._timer = None
        now = self._last_tick = self._loop.time()
        heap, live, start = self._heap, self._live, self._start
        while heap and heap[0][0] <= now and self._running < self._limit:
            due, gen, s = heapq.heappop(heap)
            pair = live.get(s)
            if pair is None or pair[1] != gen:
                continue  # its pair left
            self._running += 1
            start(pair[2], pair[3], functools.partial(self._done, s, gen, due))
        self._arm()

    def _done(self, s: int, gen: int, due: float, result: ProbeResult) -> None:
        self._running -= 1
        if not self._outbox:
            self._loop.call_soon(self._flush)
        self._outbox.append((s, gen, result))
        pair = self._live.get(s)
        if pair is None or pair[1] != gen:
            return  # the pair left while its probe ran
        due = max(self._loop.time(), due + next_delay(pair[2], self._rng))
        heapq.heappush(self._heap, (due, gen, s))
        timer = self._timer
        if timer is None or timer.when() > due:
            self._arm()

    def _flush(self) -> None:
        batch, self._outbox = self._outbox, []
        self._deliver(batch)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()
        self._live.clear()
        if self._probes is not None:
            self._probes.close()


Groups = dict[tuple[ServiceKey, DestKey], list[int]]  # the slots of each dest's checks
Table = tuple[Groups, list[CheckHealth | None], list[bytes]]  # and each group's dest key bytes


def health_map(items: Iterable[tuple[PairKey, CheckHealth]]) -> HealthMap:
    """Per (service, dest): its checks combined."""
    grouped: dict[tuple[ServiceKey, DestKey], list[CheckHealth]] = {}
    for (_, skey, dkey), h in items:
        grouped.setdefault((skey, dkey), []).append(h)
    return {k: combine(v) for k, v in grouped.items()}


class HealthView(Mapping[tuple[ServiceKey, DestKey], DestHealth]):
    """Per (service, dest) health at one moment. A dest's row is made when first read: the TUI reads
    the rows it shows, not all 5,000 of them in its frame (bench/bench_health.py)."""

    __slots__ = ("_groups", "_health", "_packed", "_rows")

    def __init__(self, table: Table) -> None:
        self._groups, self._health, self._packed = table
        self._rows: dict[tuple[ServiceKey, DestKey], DestHealth] = {}

    def __getitem__(self, key: tuple[ServiceKey, DestKey]) -> DestHealth:
        row = self._rows.get(key)
        if row is None:
            health = self._health
            row = self._rows[key] = combine([h for s in self._groups[key] if (h := health[s]) is not None])
        return row

    def __iter__(self) -> Iterator[tuple[ServiceKey, DestKey]]:
        return iter(self._groups)

    def states(self) -> Iterator[tuple[tuple[ServiceKey, DestKey], State]]:
        """(service and dest, state) of every checked dest, without making a row where one check
        decides the state: what counts such as "healthy/total" per service need."""
        health = self._health
        for key, slots in self._groups.items():
            h = health[slots[0]] if len(slots) == 1 else None
            yield key, h.state if h is not None else self[key].state

    def keyed_states(self) -> dict[bytes, State]:
        """The states by each dest's key bytes (model.dest_key_bytes): counts from a snapshot's key
        column, with no dest row made (lvstop.tui.viewmodel.health.row_states)."""
        return dict(zip(self._packed, (state for _, state in self.states()), strict=True))

    def __len__(self) -> int:
        return len(self._groups)


RESTART_FIRST = 0.5  # seconds before a checks' process that ended is started again
RESTART_MAX = 30.0  # the backoff doubles up to this; it starts over after a process that lived this long


class HealthRunner:
    """The checks beside the poller and the UI: `update(snapshot)` and `view()` from any thread, each
    costing its caller a few microseconds; view() copies a list and rows are made when read.

    The probes run in a process of their own (worker.py: the Scheduler and its asyncio loop), so the
    poller and the UI never wait for the interpreter (the GIL) while probes run. This process keeps
    the Book, in one thread that only works out the targets (when the dests, their weights or
    forwarding changed), sends them down and records the results that come back in batches. A
    process that ends is reported (`on_trouble(line, False)`; `(line, True)` once a new one runs),
    every check turns unknown, and it is
    started again after a backoff. With `--netns` the process enters the namespace first. Given
    `start` (the demo's simulated answers, tests' probers), the probes run in this process, in the
    thread's own asyncio loop, and nothing is started.
    """

    def __init__(
        self,
        config: HealthConfig,
        *,
        start: Starter | None = None,
        netns: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        on_transition: Callable[[Transition], None] | None = None,
        on_trouble: Callable[[str, bool], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._start = start
        self._netns = netns
        self._concurrency = concurrency
        self._on_trouble = on_trouble or _logged
        self._book = Book(clock, on_transition)
        self._loop: asyncio.AbstractEventLoop | None = None  # in-process: the probes' loop
        self._scheduler: Scheduler | None = None
        self._child: Child | None = None  # otherwise: their process
        self._wake: tuple[int, int] | None = None  # a pipe that wakes the thread: a snapshot, or stop()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._view = (-1, HealthView(({}, [], [])))
        self._lock = threading.Lock()
        self._latest: Snapshot | None = None  # the newest snapshot not yet taken
        self._seen: tuple[bytes, ...] | None = None  # what decided the targets last
        self.skipped: list[Skipped] = []

    def start(self) -> None:
        """A namespace that cannot be entered, or a process that cannot start, fails here, in the caller."""
        if self._start is None:
            self._child = Child(self._netns, self._concurrency)
            self._wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._thread = threading.Thread(target=self._parent, name="lvstop-health", daemon=True)
            self._thread.start()
            return
        started: Future[None] = Future()
        self._thread = threading.Thread(target=self._main, args=(started,), name="lvstop-health", daemon=True)
        self._thread.start()
        started.result()

    # --- the probes in a process of their own: this thread keeps the Book -----------------------

    def _parent(self) -> None:
        child = self._child
        assert child is not None and self._wake is not None
        wake = self._wake[0]
        backoff = RESTART_FIRST
        while self._serve(child, wake):
            why = child.status()
            child.close(0.0)
            self._child = None
            if time.monotonic() - child.started >= RESTART_MAX:
                backoff = RESTART_FIRST
            self._book.lost(f"the checks' process ended ({why})")
            self._on_trouble(
                f"health checks: their process ended ({why}); every check is unknown; "
                f"starting it again in {backoff:g} s",
                False,
            )
            restarted = self._restart(backoff, wake)
            if restarted is None:
                return
            child, backoff = restarted
            self._on_trouble("health checks: their process started again", True)
        child.close()

    def _serve(self, child: Child, wake: int) -> bool:
        """Until the child ends (True) or stop() (False): targets down, results up."""
        poll = select.poll()
        poll.register(wake, select.POLLIN)
        poll.register(child.sock.fileno(), select.POLLIN)
        self._targets()  # a snapshot given before start()
        if not self._send(child, (self._book.live(), [])):
            return True
        while True:
            for fd, _ in poll.poll():
                if fd == wake:
                    if self._woken(wake):
                        return False
                    work = self._targets()
                    if work is not None and (work[0] or work[1]) and not self._send(child, work):
                        return True
                    continue
                try:
                    data = child.sock.recv(1 << 20)
                except OSError:
                    data = b""
                if not data:
                    return True
                for _, batch in child.frames.feed(data):
                    self._book.record((s, g, ProbeResult(*r)) for s, g, *r in batch)

    @staticmethod
    def _send(child: Child, work: tuple[list[Change], list[int]]) -> bool:
        try:
            child.send(work)
        except OSError:
            return False  # it ended: its end of the socket will say so; a new one is told everything
        return True

    def _restart(self, backoff: float, wake: int) -> tuple[Child, float] | None:
        """A new child after `backoff` s (doubling while it cannot start), told every pair; None: stop()."""
        while True:
            deadline = time.monotonic() + backoff
            while (left := deadline - time.monotonic()) > 0:
                if select.select([wake], [], [], left)[0]:
                    if self._woken(wake):
                        return None
                    self._targets()  # into the Book: the new child is told all of them
            backoff = min(RESTART_MAX, backoff * 2)
            try:
                child = Child(self._netns, self._concurrency)
            except (OSError, LvstopError) as e:
                self._on_trouble(
                    f"health checks: their process did not start again ({e}); next try in {backoff:g} s",
                    False,
                )
                continue
            with self._lock:
                if self._stopping:
                    child.close()
                    return None
                self._child = child
            return child, backoff

    def _woken(self, wake: int) -> bool:
        """Empties the wake pipe; True when stop() woke it."""
        with contextlib.suppress(BlockingIOError):
            os.read(wake, 4096)
        return self._stopping

    def _wake_up(self) -> None:
        """Called with the lock held (stop() closes the pipe under it)."""
        if self._wake is not None:
            with contextlib.suppress(BlockingIOError):  # full: it is awake already
                os.write(self._wake[1], b"\0")

    # --- the probes in this process (the demo, tests) ---------------------------------------------

    def _main(self, started: Future[None]) -> None:
        try:
            if self._netns is not None:
                enter_netns(self._netns)
            loop = asyncio.new_event_loop()
        except BaseException as e:
            started.set_exception(e)
            return
        self._scheduler = loop.run_until_complete(self._make_scheduler())
        self._loop = loop
        loop.call_soon(self._retarget)  # a snapshot given before start()
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
        return Scheduler(self._book.record, self._start, concurrency=self._concurrency)

    def _retarget(self) -> None:
        if self._scheduler is None:
            return
        work = self._targets()
        if work is not None:
            self._scheduler.apply(*work)

    # ---

    def update(self, snap: Snapshot) -> None:
        """The dests to check are those of `snap`; thread-safe, returns at once (snapshots given
        faster than the checks' thread takes them are replaced by the newest)."""
        with self._lock:
            handed = self._latest is None
            self._latest = snap
            loop = self._loop
            if handed:
                self._wake_up()
        if handed and loop is not None:
            loop.call_soon_threadsafe(self._retarget)

    def _targets(self) -> tuple[list[Change], list[int]] | None:
        """The newest snapshot's pairs into the Book: what changed, or None if the dests did not."""
        with self._lock:
            snap, self._latest = self._latest, None
        if snap is None:
            return None
        table = snap.table
        seen = (table.dest_keys().tobytes(), table.dests.weight.tobytes(), table.dests.fwd.tobytes())
        if seen == self._seen:
            return None  # the same dests as last time: the same targets
        self._seen = seen
        pairs, self.skipped = targets(self.config, snap)
        return self._book.set_targets(pairs)

    @property
    def results(self) -> int:
        """How many results (and target changes) arrived so far: moves whenever view() would change."""
        return self._book.version

    def probe_counts(self) -> dict[str, tuple[int, int, float]]:
        """By check type: probes run, probes failed, seconds they took (counters, from the start)."""
        return self._book.probes

    def view(self) -> HealthView:
        """Per (service, dest) health; a new view only when a result arrived since the last call."""
        version, cached = self._view
        if version == self._book.version:
            return cached
        version = self._book.version
        view = HealthView(self._book.table())
        self._view = (version, view)
        return view

    def checks(self) -> list[tuple[PairKey, CheckHealth]]:
        """Every (check, dest) pair's health, copied consistently from the checks' thread."""
        return self._book.pairs()

    def stop(self, timeout: float = 5.0) -> None:
        """Ends the checks (and their process, which ends when its socket closes)."""
        with self._lock:
            self._stopping = True
            loop, self._loop = self._loop, None  # update() after stop() only keeps the snapshot
            self._wake_up()
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return  # it still reads the pipe
        with self._lock:
            wake, self._wake = self._wake, None
        if wake is not None:
            for fd in wake:
                os.close(fd)


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
