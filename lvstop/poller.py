"""The one poller: reads a source on a steady cadence in its own thread and publishes snapshots.

Each poll reads the source, fills in `seq`, the instant rates (plain deltas over the measured
interval) and, where the source gave counters but not the kernel's rates (the demo director), the
kernel's EWMA as reproduced by lvstop.estimator; then it diffs against the previous snapshot into the
event log and hands the new snapshot to every subscriber.

Polls never overlap: the next one is armed only when the previous one has finished, for the next
slot of the cadence (start + interval), or at once when a poll overran its slot. A failed poll keeps
`latest`, records `last_error`, `last_duration` and a poll_failed event (once per distinct error; a
poll_recovered event when polls succeed again); subscribers are only called with good snapshots.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from lvstop import gcpolicy
from lvstop.errors import LvstopError
from lvstop.estimator import Estimator
from lvstop.events import POLL_FAILED, POLL_RECOVERED, Event, EventLog, diff_snapshots
from lvstop.model import Dest, Service, ServiceKey, Snapshot, fast_replacer
from lvstop.sources import Source

log = logging.getLogger(__name__)

TOTALS = "totals"  # the estimator's key for the director-wide counters

Subscriber = Callable[[Snapshot], None]
# A fast dataclasses.replace: at 5,000 dests a poll rebuilds every Dest whose rates moved.
_dest_with = fast_replacer(Dest, "rates", "instant")
_service_with = fast_replacer(Service, "rates", "instant", "dests")


def service_key(skey: ServiceKey) -> tuple[object, ...]:
    """The estimator's key for a service: its key's fields, a tuple that hashes in C (a ServiceKey's
    dataclass __hash__ is Python code, which would run for each of thousands of dests per poll)."""
    return (skey.family, skey.protocol, skey.address, skey.port, skey.fwmark)


def dest_key(skey: ServiceKey, family: int, address: str, port: int) -> tuple[object, ...]:
    """The estimator's key for a dest of service `skey` (built inline in the poll's loop)."""
    return (service_key(skey), family, address, port)


def _describe(e: BaseException) -> str:
    return str(e) if isinstance(e, LvstopError) else f"{type(e).__name__}: {e}"


class Poller:
    def __init__(
        self,
        source: Source,
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        events: EventLog | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"poll interval must be positive, not {interval!r}")
        self.source = source
        self.interval = interval
        self.events = events if events is not None else EventLog()
        self.estimator = Estimator()
        self.latest: Snapshot | None = None  # the last good snapshot
        self.last_error: str | None = None  # None once a poll succeeded again
        self.last_duration: float | None = None  # seconds the last poll took, read and processing
        self._clock = clock
        self._wall = wall_clock
        self._seq = 0
        self._subscribers: tuple[Subscriber, ...] = ()
        self._sub_lock = threading.Lock()
        # Re-entrant: a subscriber may call poll_once (it then runs inside the current poll's turn).
        self._poll_lock = threading.RLock()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

    # ------------------------------------------------------------------------------------ consumers

    def subscribe(self, cb: Subscriber) -> Callable[[], None]:
        """Call `cb(snapshot)` (in the poller's thread) after every good poll. Returns unsubscribe."""
        with self._sub_lock:
            self._subscribers = (*self._subscribers, cb)

        def unsubscribe() -> None:
            with self._sub_lock:
                subs = list(self._subscribers)
                if cb in subs:
                    subs.remove(cb)
                self._subscribers = tuple(subs)

        return unsubscribe

    # ------------------------------------------------------------------------------------ polling

    def poll_once(self) -> Snapshot:
        """One poll now, in the caller's thread. Raises what the read raised, after recording it."""
        with self._poll_lock:
            t0 = self._clock()
            try:
                with gcpolicy.paused():  # and the new snapshot frozen before it resumes (lvstop.gcpolicy)
                    raw = self.source.read()
                    read_s = self._clock() - t0
                    snap = self._enrich(raw, read_s)
            except Exception as e:
                self.last_duration = self._clock() - t0
                self._record_failure(_describe(e))
                raise
            self.last_duration = self._clock() - t0
            self._publish(snap)
            return snap

    def _enrich(self, raw: Snapshot, read_s: float) -> Snapshot:
        update = self.estimator.update
        t = raw.mono_time
        services: list[Service] = []
        for s in raw.services:
            skey = s.key
            prefix = service_key(skey)  # also the start of its dests' keys (see dest_key)
            if s.error is not None:
                self._keep_dest_state(skey)  # its dest list is incomplete, not shrunk
            dests: list[Dest] = []
            append = dests.append
            changed = False
            for d in s.dests:
                c = d.counters
                if c is None:
                    append(d)
                    continue
                kernel = d.rates  # netlink gives the kernel's own: no EWMA to compute
                ewma, inst = update((prefix, d.family, d.address, d.port), c, t, kernel is not None)
                rates = ewma if kernel is None else kernel
                if rates is kernel and inst is d.instant:
                    append(d)
                else:
                    append(_dest_with(d, rates, inst))
                    changed = True
            rates, inst = s.rates, s.instant
            if s.counters is not None:
                ewma, inst = update(prefix, s.counters, t, rates is not None)
                if rates is None:
                    rates = ewma
            if changed or rates is not s.rates or inst is not s.instant:
                s = _service_with(s, rates, inst, tuple(dests) if changed else s.dests)
            services.append(s)
        total_rates, total_instant = raw.total_rates, None
        if raw.totals is not None:
            ewma, total_instant = update(TOTALS, raw.totals, t, total_rates is not None)
            if total_rates is None:
                total_rates = ewma
        self.estimator.sweep()
        self._seq += 1
        return dataclasses.replace(
            raw,
            services=tuple(services),
            total_rates=total_rates,
            total_instant=total_instant,
            poll_duration=read_s if raw.poll_duration is None else raw.poll_duration,
            seq=self._seq,
        )

    def _keep_dest_state(self, skey: ServiceKey) -> None:
        prev = self.latest.service(skey) if self.latest is not None else None
        if prev is not None:
            for d in prev.dests:
                self.estimator.touch(dest_key(skey, d.family, d.address, d.port))

    def _publish(self, snap: Snapshot) -> None:
        prev = self.latest
        if self.last_error is not None:
            self.events.append(
                Event(self._wall(), POLL_RECOVERED, f"polls succeed again (was: {self.last_error})")
            )
            self.last_error = None
        if prev is not None:
            self.events.extend(diff_snapshots(prev, snap))
        self.latest = snap
        for cb in self._subscribers:
            try:
                cb(snap)
            except Exception:
                log.exception("snapshot subscriber %r failed", cb)

    def _record_failure(self, message: str) -> None:
        if message != self.last_error:
            self.events.append(Event(self._wall(), POLL_FAILED, f"poll failed: {message}"))
        self.last_error = message

    # ------------------------------------------------------------------------------------ thread

    def start(self) -> None:
        """Poll in a daemon thread until stop(). Does nothing if already running."""
        if self.running:
            return
        # Each thread has its own stop flag: a thread still finishing a slow read after stop()
        # ends after that read, even when a new one has started meanwhile (polls still never
        # overlap: they take turns on the poll lock).
        self._stop = threading.Event()
        self._worker = threading.Thread(
            target=self._run, args=(self._stop,), name="lvstop-poller", daemon=True
        )
        self._worker.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop polling. Returns at once if idle; waits at most `timeout` for a read in progress
        (the thread is a daemon and ends after that read). Callable from a subscriber."""
        self._stop.set()
        t = self._worker
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    @property
    def running(self) -> bool:
        return self._worker is not None and self._worker.is_alive() and not self._stop.is_set()

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            start = self._clock()
            # A failure is recorded in last_error and the event log; the thread lives on.
            with contextlib.suppress(Exception):
                self.poll_once()
            if stop.wait(max(0.0, start + self.interval - self._clock())):
                break
