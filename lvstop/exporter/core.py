"""The exporter's state between the poller and HTTP: health counters and pages rendered once per change.

A page (the exposition, the JSON snapshot) is rendered at most once per change, by the first request
that finds it stale, and then served from memory. When pages are asked for at least once per poll on
average, the next one is rendered right after the poll instead, so that no scrape waits for a render.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from lvstop import codec, gcpolicy
from lvstop.control import Control, WeightManagers
from lvstop.errors import LvstopError, SourceError
from lvstop.events import DRAIN_CLOSED, WEIGHT_CHANGED, Event, EventLog
from lvstop.exporter.metrics import (
    EDIT_OUTCOMES,
    BackendHealth,
    Body,
    BodyWriter,
    ConnStats,
    ControlView,
    Health,
    Inputs,
    Options,
    render_inputs,
)
from lvstop.model import DestKey, IssueKind, ServiceKey, Snapshot
from lvstop.sources import Source

log = logging.getLogger("lvstop.exporter")

if TYPE_CHECKING:
    from lvstop.poller import Poller

# Services per json.dumps call in the snapshot page: one call over 100k dests holds the GIL ~450 ms.
SNAPSHOT_CHUNK = 50


def write_snapshot(snap: Snapshot, out: BodyWriter) -> None:
    """codec.dumps(snap), byte for byte, encoded SNAPSHOT_CHUNK services at a time."""
    # "services" is a top-level key; an escaped string value cannot contain '"services":[]'.
    head, tail = codec.dumps(dataclasses.replace(snap, services=())).split('"services":[]', 1)
    out.write(head + '"services":[')
    for i in range(0, len(snap.services), SNAPSHOT_CHUNK):
        part = codec.snapshot_to_dict(
            dataclasses.replace(snap, services=snap.services[i : i + SNAPSHOT_CHUNK])
        )
        text = json.dumps(part["services"], separators=(",", ":"), allow_nan=False)[1:-1]
        out.write(text if i == 0 else "," + text)
    out.write("]" + tail)


class CountingSource:
    """Wraps the poller's source: counts failures and partial reads by kind, notes the last success."""

    def __init__(
        self, source: Source, on_failure: Callable[[], None], clock: Callable[[], float] = time.time
    ) -> None:
        self.source = source
        self.name = source.name  # refreshed by each read: `auto` says proc once it fell back to /proc
        self._on_failure = on_failure  # a good read shows up with its snapshot; a failed one has none
        self._clock = clock
        self._lock = threading.Lock()
        self.errors: dict[str, int] = {}
        self.ok: bool | None = None  # None until the first poll
        self.last_success: float | None = None
        self.last_error: str | None = None

    def read(self) -> Snapshot:
        try:
            snap = self.source.read()
        except SourceError as e:
            self._count([e.kind.value], str(e))
            raise
        except Exception as e:
            self._count(["internal"], f"{type(e).__name__}: {e}")
            raise
        finally:
            self.name = self.source.name
        # UNAVAILABLE marks what a source can never read (/proc has no counters): not an error per poll.
        self._count([i.kind.value for i in snap.issues if i.kind is not IssueKind.UNAVAILABLE], None)
        return snap

    def _count(self, kinds: list[str], failure: str | None) -> None:
        with self._lock:
            for k in kinds:
                self.errors[k] = self.errors.get(k, 0) + 1
            self.ok = failure is None
            self.last_error = failure
            if failure is None:
                self.last_success = self._clock()
        if failure is not None:
            self._on_failure()

    def conn_lines(self, sync: bool = False) -> Iterator[str]:
        return self.source.conn_lines(sync)

    def close(self) -> None:
        self.source.close()


COUNTED_KEPT = 16384


class WatchingEventLog(EventLog):
    """An EventLog that also counts weight changes made outside lvstop, per dest, for the metrics.

    A drained dest can come back without any weight_changed: keepalived without inhibit_on_failure (or
    restarted) removes it and adds it back at its configured weight, or the weight came back while the
    exporter was down. The drain record Control then closes counts as that outside change, unless the
    weight_changed that undid the drain was already counted."""

    def __init__(self, maxlen: int = 1000) -> None:
        super().__init__(maxlen)
        self.external: dict[tuple[ServiceKey, DestKey], int] = {}
        # dests whose last weight change came from outside and was counted (the newest COUNTED_KEPT)
        self._counted: dict[tuple[ServiceKey, DestKey], None] = {}

    def append(self, event: Event) -> Event:
        event = super().append(event)
        if event.service is None or event.dest is None:
            return event
        key = (event.service, event.dest)
        if event.kind == WEIGHT_CHANGED and event.actor is not None:
            self._counted.pop(key, None)  # lvstop's own edit: what comes next is a new story
        elif event.kind == WEIGHT_CHANGED:
            self._count(key)
            self._counted[key] = None
            if len(self._counted) > COUNTED_KEPT:
                del self._counted[next(iter(self._counted))]
        elif event.kind == DRAIN_CLOSED:
            if key in self._counted:
                del self._counted[key]  # the weight_changed that undid the drain was counted
            else:
                self._count(key)  # re-added by its manager, or changed while nobody watched
        return event

    def _count(self, key: tuple[ServiceKey, DestKey]) -> None:
        self.external[key] = self.external.get(key, 0) + 1


class PageCache:
    """One rendered page per key (a snapshot, or a generation token, compared by identity).

    The first request for a new key renders it; requests that arrive while a render runs get the page
    before it (at most one poll older) instead of queueing behind the render. With no page yet, they
    wait for the render, which runs once for all of them. A render is a big build: it runs with the
    collector paused (its temporaries hold no cycles; at 100k dests they set off collections of 20 ms+),
    and what is alive at its end is frozen before the collector is back: re-enabled, it would at once
    collect everything allocated meanwhile, a concurrent poll included (90-120 ms with the GIL held).
    """

    def __init__(self, render: Callable[[], Body | None]) -> None:
        self._render = render
        self._render_lock = threading.Lock()  # one render at a time
        self._lock = threading.Lock()  # guards the fields below
        self._key: object = object()
        self._body: Body | None = None
        self._rendering = False
        self.renders = 0
        self.requests = 0  # pages asked for since the last render
        self.last_render: float | None = None

    @property
    def body(self) -> Body | None:
        """The page served now (None before the first render)."""
        return self._body

    def get(self, key: object) -> Body | None:
        with self._lock:
            self.requests += 1
            if key is self._key or (self._rendering and self._body is not None):
                return self._body
        return self.render(key)

    def reserve(self) -> bool:
        """Mark a render as under way before it starts (in another thread); False if one already is."""
        with self._lock:
            if self._rendering:
                return False
            self._rendering = True
            return True

    def render(self, key: object, *, reserved: bool = False) -> Body | None:
        """The page for `key`, rendered now unless it already is; `reserved` after reserve()."""
        with self._render_lock:
            with self._lock:
                if key is self._key:
                    self._rendering = self._rendering and not reserved
                    return self._body
                self._rendering = True
            try:
                t0 = time.perf_counter()
                with gcpolicy.paused():
                    body = self._render()
                elapsed = time.perf_counter() - t0
            finally:
                with self._lock:
                    self._rendering = False
            with self._lock:
                self._key, self._body, self.last_render = key, body, elapsed
                self.renders += 1
                self.requests = 0
            return body


class Exporter:
    """Everything the HTTP layer reads: pages, health, events, drains; everything it counts."""

    def __init__(
        self,
        poller: Poller,
        source: CountingSource,
        events: WatchingEventLog,
        *,
        options: Options | None = None,
        control: Control | None = None,
        proc_root: str = "/proc",
        conn: Callable[[], ConnStats | None] = lambda: None,
        keep_limit: int = 32 << 20,
        managers: WeightManagers | None = None,
        runtime: Callable[[], str] | None = None,
        backends: Callable[[], BackendHealth | None] = lambda: None,
    ) -> None:
        self.poller = poller
        self.source = source
        self.events = events
        self.options = options or Options()
        self.control = control
        # Scanned at most once per poll interval, however many scrapes and status requests come.
        ttl = max(5.0, self.options.tick)
        self._managers = managers if managers is not None else WeightManagers(proc_root, ttl=ttl)
        self._conn = conn
        self._backends = backends
        self._keep_limit = keep_limit
        self._runtime = runtime
        self._lock = threading.Lock()
        self._generation = object()  # replaced on every change; pages are keyed by it
        self.edits: dict[str, int] = dict.fromkeys(EDIT_OUTCOMES, 0)
        self.scrape_duration: float | None = None
        self.metrics_cache = PageCache(self._render_metrics)
        self.snapshot_cache = PageCache(self._render_snapshot)
        # Pages asked for per snapshot, over the last few: at one or more, every snapshot gets rendered
        # anyway, so render it right after the poll and no scrape waits for a render.
        self._asked = 0
        self._demand: deque[int] = deque(maxlen=4)
        self._eager = False
        self._prefetching = False  # a prefetch thread is running
        # Why the drain state file cannot be read (None: it can): the exporter is then not ready.
        self.drain_error: str | None = None
        self.acting: Callable[[], dict[str, Any]] | None = None  # HealthActor.status, when acting on health
        # GET /api/v1/health and /api/v1/managed (set by lvstop.exporter.main): what `lvstop --connect` shows
        self.dest_health: Callable[[], dict[str, Any]] = lambda: {"checks": False, "dests": []}
        self.managed: Callable[[], dict[str, Any]] = lambda: {"services": [], "unread": []}
        poller.subscribe(self._new_snapshot)

    def _new_snapshot(self, snap: Snapshot) -> None:
        if self.control is not None:
            try:
                self.control.reconcile(snap)
                self._drain_state(None)
            except LvstopError as e:
                self._drain_state(str(e))
        with self._lock:
            self._demand.append(self._asked)
            self._asked = 0
            # (Never when polls are made on demand: the scrape that polled renders the page itself.)
            self._eager = (
                not self.poller.on_demand
                and len(self._demand) == self._demand.maxlen
                and sum(self._demand) >= len(self._demand)
            )
            # Reserved before the new generation exists: a scrape in between gets the previous page. When a
            # render is still running, the prefetch thread that runs it renders this generation next.
            start = self._eager and not self._prefetching and self.metrics_cache.reserve()
            self._prefetching = self._prefetching or start
            self._generation = key = object()
        if start:
            threading.Thread(target=self._prefetch, args=(key,), name="lvstop-render", daemon=True).start()

    def _prefetch(self, key: object) -> None:
        while True:
            try:
                self.metrics_cache.render(key, reserved=True)
            except BaseException:
                with self._lock:
                    self._prefetching = False  # scrapes render on demand (and report the error)
                raise
            with self._lock:
                if key is self._generation or not self._eager or not self.metrics_cache.reserve():
                    self._prefetching = False
                    return
                key = self._generation

    def changed(self) -> None:
        """Something a page shows changed (new snapshot, failed poll, edit, connection-table read)."""
        with self._lock:
            self._generation = object()

    def metrics_page(self) -> Body:
        self.poller.fresh()  # on demand: polls first when the last poll is an interval old
        with self._lock:
            self._asked += 1
            key = self._generation
        body = self.metrics_cache.get(key)
        assert body is not None
        return body

    def snapshot_page(self) -> Body | None:
        return self.snapshot_cache.get(self.poller.fresh())

    def _drain_state(self, error: str | None) -> None:
        if error != self.drain_error:
            if error is not None:
                log.error("drain state unusable, not ready until it is fixed (the file is kept): %s", error)
            else:
                log.info("drain state readable again")
            self.drain_error = error

    def record_edit(self, outcome: str) -> None:
        with self._lock:
            self.edits[outcome] += 1
            self._generation = object()

    def record_scrape(self, seconds: float) -> None:
        self.scrape_duration = seconds  # shows on the next page: this one is already rendered

    def managers(self) -> tuple[tuple[str, int], ...]:
        return self._managers()

    def health_act(self) -> dict[str, Any]:
        """Acting on health, for /api/v1/status: whether it is on, and the services it leaves alone."""
        return self.acting() if self.acting is not None else {"enabled": False, "skipped": []}

    def health(self) -> Health:
        s = self.source
        return Health(
            source=s.name,
            poll_success=bool(s.ok),
            last_success=s.last_success,
            poll_duration=self.poller.last_duration,
            errors=dict(s.errors),
            scrape_duration=self.scrape_duration,
            render_duration=self.metrics_cache.last_render,
        )

    def inputs(self) -> Inputs:
        with self._lock:
            edits = dict(self.edits)
        try:
            drains = self.control.drains() if self.control is not None else {}
            if self.control is not None:
                self._drain_state(None)
        except LvstopError as e:  # a bad drain state file must not take every other metric down
            self._drain_state(str(e))
            drains = {}
        return Inputs(
            self.poller.latest,
            self.health(),
            ControlView(
                drains,
                edits,
                dict(self.events.external),
                self.managers(),
                None if self.control is None else self.drain_error is None,
            ),
            self._conn(),
            self.options,
            self._runtime,
            backends=self._backends(),
        )

    def _render_metrics(self) -> Body:
        return render_inputs(self.inputs(), self._keep_limit)

    def _render_snapshot(self) -> Body | None:
        snap = self.poller.latest
        if snap is None:
            return None
        w = BodyWriter(self._keep_limit)
        write_snapshot(snap, w)
        return w.finish()
