"""One director's data path into the UI: poller -> builder thread -> coalesced "views ready" callback.

The poller thread hands over each snapshot; a builder thread turns the newest one into view models
(sorting, filtering, formatting, history, drain state, events) and then calls `notify` once. Until the
UI has taken the views (`take()`), further builds replace them without another notify, so the UI's
queue never holds more than one pending update (memray's coalescing). Nothing here imports Textual.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from lvstop import gcpolicy
from lvstop.conntable import ConnFilter, ConnSummary, ConnTableReader
from lvstop.errors import LvstopError
from lvstop.model import DestKey, Service, ServiceKey, Snapshot
from lvstop.sources import Source
from lvstop.tui import viewmodel as vm
from lvstop.tui.names import NameCache, Resolver, reverse_dns
from lvstop.tui.playback import Playback

if TYPE_CHECKING:
    from lvstop.control import ControlResult
    from lvstop.events import Event, EventLog

EVENTS_SHOWN = 500
CONN_INTERVAL = 5.0  # seconds between connection-table reads while the view is open
CONN_BUDGET = 1.0  # seconds a read may take before it stops and says "partial"


class PollerLike(Protocol):
    """The part of lvstop.poller.Poller the UI uses."""

    latest: Snapshot | None
    last_error: str | None
    last_duration: float | None
    interval: float
    events: EventLog
    source: Source

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def subscribe(self, cb: Callable[[Snapshot], None]) -> Callable[[], None]: ...


class HealthChecks(Protocol):
    """The part of lvstop.health.runner.HealthRunner the UI reads: per-dest health, from any thread."""

    def view(self) -> vm.HealthMap | None: ...  # None: no checks (a remote exporter runs none)


Managed = Callable[[], tuple[vm.ManagedMap, tuple[str, ...]]]  # lvstop.managers.ManagedLookup


class Writer(Protocol):
    """Weight edits for one director: lvstop.control.Control locally, the exporter's write API remotely."""

    def drain(self, skey: ServiceKey, dkey: DestKey, **kw: Any) -> ControlResult: ...

    def restore(self, skey: ServiceKey, dkey: DestKey, **kw: Any) -> ControlResult: ...

    def set_weight(self, skey: ServiceKey, dkey: DestKey, weight: int, **kw: Any) -> ControlResult: ...

    def drains(self) -> vm.DrainMap: ...


@dataclass(frozen=True, slots=True)
class Views:
    """Everything the director's screens show, built in one go from one snapshot."""

    build: int
    live: Snapshot | None  # newest snapshot: the header
    shown: Snapshot | None  # what the tables show (frozen while paused)
    settings: vm.ViewSettings
    header: tuple[tuple[vm.Chunk, ...], ...]
    services: vm.TableModel
    dests: vm.TableModel
    summary: tuple[vm.Span, ...]
    dest_notes: tuple[tuple[vm.Span, ...], ...]
    events: vm.TableModel
    recent: tuple[tuple[vm.Span, ...], ...]  # the newest events, for the strip under the services
    director: tuple[vm.Setting, ...]
    service_keys: Mapping[str, ServiceKey]
    dest_keys: Mapping[str, DestKey]
    drains: vm.DrainMap
    conns: vm.ConnViews | None  # only while the connections view is open
    brief: vm.Brief | None  # for the side-by-side tab of several directors
    build_seconds: float

    def shows_the_same(self, other: Views) -> bool:
        """Everything a screen shows or acts on equals `other`'s (the snapshots themselves aside)."""
        same = dataclasses.replace(
            self, build=other.build, live=other.live, shown=other.shown, build_seconds=other.build_seconds
        )
        return same == other


class DirectorFeed:
    """Owns the poller subscription, the history and the view settings of one director."""

    def __init__(
        self,
        poller: PollerLike,
        *,
        writer: Writer | None = None,
        resolver: Resolver = reverse_dns,
        clock: Callable[[], float] = time.monotonic,
        label: str = "",
        playback: Playback | None = None,
        checks: HealthChecks | None = None,
        managed: Managed | None = None,
    ) -> None:
        self.poller = poller
        self.writer = writer
        self.checks = checks  # health checks; None: none run, and nothing on screen says health
        self.managed = managed  # who manages which service; None: nobody looks (demo, replay, remote)
        self.playback = playback
        self.wants_brief = False  # set when the app shows several directors side by side
        self.clock = clock
        self.label = label
        self.history = vm.History()
        self._service_rows = vm.RowCache()  # the services' rows of the last build (builder thread)
        self.names = NameCache(resolver, on_resolved=self.request)
        self._cond = threading.Condition()
        self._settings = vm.ViewSettings()
        self._latest: Snapshot | None = None
        self._frozen: Snapshot | None = None
        self._frozen_health: vm.HealthMap | None = None
        self._paused = False
        self._dirty = False
        self._busy = False
        self._pending = False
        self._views: Views | None = None
        self._retired: list[Views] = []
        self._builds = 0
        self._drains: vm.DrainMap = MappingProxyType({})
        self._drains_seq: int | None = None
        self.drains_error: str | None = None
        self.build_error: str | None = None
        self.conn_query = vm.ConnQuery()
        self._conn_reader: ConnTableReader | None = None
        self._conn_summary: ConnSummary | None = None
        self._conn_frozen: ConnSummary | None = None
        self._frozen_past: tuple[vm.History, list[Event]] | None = None
        self._conn_received: float | None = None
        self._received: float | None = None
        self._notify: Callable[[], None] = lambda: None
        self._stop = False
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self, notify: Callable[[], None], *, poll: bool = True) -> None:
        """`notify` is called from the builder thread; it must be thread-safe (post a message)."""
        self._notify = notify
        self._unsubscribe = self.poller.subscribe(self.on_snapshot)
        self._thread = threading.Thread(target=self._run, name="lvstop-views", daemon=True)
        self._thread.start()
        if poll:
            self.poller.start()
        self.request()

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self.poller.stop()
        self.watch_conns(False)
        if self._thread is not None:
            self._thread.join(timeout=2)

    # --- inputs (any thread) -------------------------------------------------------------------------

    def on_snapshot(self, snap: Snapshot) -> None:
        with self._cond:
            self._latest = snap
            self._received = self.clock()
            self._dirty = True
            self._cond.notify_all()

    def request(self) -> None:
        """Rebuild the views (settings changed, a name resolved, a write finished)."""
        with self._cond:
            self._dirty = True
            self._cond.notify_all()

    def refresh_drains(self) -> None:
        with self._cond:
            self._drains_seq = None
            self._dirty = True
            self._cond.notify_all()

    @property
    def settings(self) -> vm.ViewSettings:
        return self._settings

    def update(self, **changes: Any) -> vm.ViewSettings:
        with self._cond:
            self._settings = dataclasses.replace(self._settings, **changes)
            self._dirty = True
            self._cond.notify_all()
            return self._settings

    @property
    def paused(self) -> bool:
        return self._paused

    def set_paused(self, paused: bool) -> None:
        with self._cond:
            self._paused = paused
            self._frozen = self._latest_snapshot() if paused else None
            self._frozen_health = self.checks.view() if paused and self.checks is not None else None
            self._conn_frozen = self._conn_summary if paused else None
            self._dirty = True
            self._cond.notify_all()

    # --- output (UI thread) -------------------------------------------------------------------------

    def take(self) -> Views | None:
        """The newest views; re-arms the notify for the next build."""
        with self._cond:
            self._pending = False
            return self._views

    def retire(self, views: Views) -> None:
        """The UI is done with these views: the builder thread drops them. Freeing a 100k-dest snapshot
        and its rows takes tens of milliseconds, which must not land on the UI thread."""
        with self._cond:
            self._retired.append(views)
            self._cond.notify_all()

    @property
    def idle(self) -> bool:
        """Nothing queued, being built, or built and not yet taken by the UI (tests wait for this)."""
        with self._cond:
            return not self._dirty and not self._busy and not self._pending

    def health(self) -> vm.PollHealth:
        """Attribute reads only: safe and cheap on the UI thread every second."""
        p = self.poller
        # Age from when this feed got the snapshot: a replay's or a remote's clocks are not ours.
        age = None if self._received is None else max(0.0, self.clock() - self._received)
        return vm.PollHealth(p.last_error, p.last_duration, age, p.interval)

    # --- connection table (read only while its view is open: it costs the director) ---------------

    def watch_conns(self, on: bool) -> None:
        reader = self._conn_reader
        if on and reader is None:
            reader = self._conn_reader = ConnTableReader(
                self.poller.source,
                interval=CONN_INTERVAL,
                budget_s=CONN_BUDGET,
                services=self._known_services,
                filters=conn_filter(self.conn_query),
                clock=self.clock,
            )
            reader.subscribe(self._on_conns)
        if reader is None:
            return
        if on:
            reader.start()
        else:
            reader.stop(timeout=0)
            self._conn_reader = None
        self.request()

    def set_conn_query(self, query: vm.ConnQuery) -> None:
        """New scope or filter: read again now (in a thread: the read is blocking I/O)."""
        self.conn_query = query
        reader = self._conn_reader
        if reader is not None:
            reader.filters = conn_filter(query)
            threading.Thread(target=self._read_conns_now, args=(reader,), daemon=True).start()
        self.request()

    @staticmethod
    def _read_conns_now(reader: ConnTableReader) -> None:
        try:
            reader.refresh_now()
        except LvstopError:  # kept in reader.last_error, which the view shows
            return

    def _known_services(self) -> Sequence[Service] | None:
        latest = self._latest_snapshot()
        return latest.services if latest is not None else None

    def _on_conns(self, summary: ConnSummary) -> None:
        with self._cond:
            self._conn_summary = summary
            self._conn_received = self.clock()
            self._dirty = True
            self._cond.notify_all()

    def recent_events(self, n: int = EVENTS_SHOWN) -> list[Event]:
        return self.poller.events.recent(n)

    # --- building ------------------------------------------------------------------------------------

    def _latest_snapshot(self) -> Snapshot | None:
        return self._latest if self._latest is not None else self.poller.latest

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._dirty and not self._stop and not self._retired:
                    self._cond.wait()
                retired, self._retired = self._retired, []
                if self._stop:
                    return
                dirty, self._dirty = self._dirty, False
                self._busy = dirty
            retired.clear()  # the old views are freed here, outside the lock and off the UI thread
            if not dirty:
                continue
            try:
                with gcpolicy.paused():  # the new views live until the next build (lvstop.gcpolicy)
                    views: Views | None = self.build()
                self.build_error = None
            except Exception as e:  # a bug in a view must not stop the updates: the banner shows it
                views, self.build_error = None, f"{type(e).__name__}: {e}"
            with self._cond:
                self._busy = False
                if views is None or (self._views is not None and views.shows_the_same(self._views)):
                    continue  # nothing on screen would change: no message, no repaint
                self._views = views
                notify = not self._pending
                self._pending = True
            if notify:
                self._notify()

    def build(self) -> Views:
        """One full build from the current state; runs on the builder thread (or in tests and benches)."""
        t0 = time.perf_counter()
        with self._cond:
            settings = self._settings
            live = self._latest_snapshot()
            shown = self._frozen if self._paused else live
            self._builds += 1
            build = self._builds
        # Paused: the tables show the state (trends and events included) of the moment of the pause,
        # so the trends are copied before a snapshot that came after the pause is recorded.
        if self._paused and self._frozen_past is None:
            self._frozen_past = (self.history.copy(), self.recent_events())
        elif not self._paused:
            self._frozen_past = None
        if live is not None:
            self.history.record(live)
        history, events = self._frozen_past or (self.history, self.recent_events())
        drains = self._current_drains(live)
        names = self.names.lookup if settings.names else vm.no_names
        health = self.checks.view() if self.checks is not None else None
        shown_health = self._frozen_health if self._paused and health is not None else health
        owned, unread = self.managed() if self.managed is not None else ({}, ())
        services = vm.services_table(shown, settings, history, names, shown_health, owned, self._service_rows)
        dests = vm.dests_table(shown, settings, history, drains, names, shown_health)
        svc = shown.service(settings.service) if shown is not None and settings.service is not None else None
        summary: tuple[vm.Span, ...] = ()
        notes: tuple[tuple[vm.Span, ...], ...] = ()
        dest_keys: dict[str, DestKey] = {}
        if svc is not None and shown is not None:
            summary = vm.service_summary(svc, settings, names)
            notes = tuple(
                vm.dest_notes(
                    shown, svc, drains, history, settings.human, shown_health, owned.get(svc.key, ()), unread
                )
            )
            dest_keys = {vm.dest_id(d.key): d.key for d in svc.dests}
        service_keys = (
            {vm.service_id(s.key): s.key for s in shown.table.services} if shown is not None else {}
        )
        conns = None
        reader = self._conn_reader
        if reader is not None:
            table = self._conn_frozen if self._paused else self._conn_summary
            age = None if self._conn_received is None else self.clock() - self._conn_received
            conns = vm.conn_views(
                table, self.conn_query, error=reader.last_error, age=age, human=settings.human, names=names
            )
        return Views(
            build=build,
            live=live,
            shown=shown,
            settings=settings,
            header=tuple(vm.header_lines(live, self.history, settings, health)),
            services=services,
            dests=dests,
            summary=summary,
            dest_notes=notes,
            events=vm.events_table(events, settings),
            recent=tuple(vm.recent_events(events)),
            director=tuple(vm.director_settings(live)),
            service_keys=MappingProxyType(service_keys),
            dest_keys=MappingProxyType(dest_keys),
            drains=drains,
            conns=conns,
            brief=vm.brief(live) if self.wants_brief else None,
            build_seconds=time.perf_counter() - t0,
        )

    def _current_drains(self, live: Snapshot | None) -> vm.DrainMap:
        """The drain state file (or remote API) is read once per poll, not once per keystroke."""
        seq = live.seq if live is not None else None
        if self.writer is None or (seq == self._drains_seq and self._drains_seq is not None):
            return self._drains
        try:
            self._drains = MappingProxyType(dict(self.writer.drains()))
            self.drains_error = None
        except (LvstopError, OSError) as e:
            self.drains_error = str(e)  # keep the last known drains; the banner says why they may be old
        self._drains_seq = seq
        return self._drains


def conn_filter(q: vm.ConnQuery) -> ConnFilter:
    prefix = ipaddress.ip_network(q.client, strict=False) if q.client else None
    return ConnFilter(q.service, q.dest, prefix, q.state or None, q.protocol or None)
