"""What changed between two polls, and a bounded log of it.

`diff_snapshots` is pure: two snapshots in, events out. `EventLog` keeps the last `maxlen` events and
credits weight changes that lvstop itself made: Control calls `expect_weight` just before it writes,
and the next weight_changed event for that dest and weight gets the actor; any other weight change is
marked as made outside lvstop (keepalived, ldirectord, an operator with ipvsadm).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from lvstop.model import Counters, Dest, DestKey, IssueKind, Service, ServiceKey, Snapshot

SERVICE_ADDED = "service_added"
SERVICE_REMOVED = "service_removed"
DEST_ADDED = "dest_added"
DEST_REMOVED = "dest_removed"
WEIGHT_CHANGED = "weight_changed"
COUNTERS_RESET = "counters_reset"
POLL_FAILED = "poll_failed"
POLL_RECOVERED = "poll_recovered"
DRAIN_FINISHED = "drain_finished"
DRAIN_CLOSED = "drain_closed"  # a drained dest got its weight back outside lvstop
INCONSISTENT_READ = "inconsistent_read"

KINDS = (
    SERVICE_ADDED,
    SERVICE_REMOVED,
    DEST_ADDED,
    DEST_REMOVED,
    WEIGHT_CHANGED,
    COUNTERS_RESET,
    POLL_FAILED,
    POLL_RECOVERED,
    DRAIN_FINISHED,
    DRAIN_CLOSED,
    INCONSISTENT_READ,
)


@dataclass(frozen=True, slots=True)
class Event:
    time: float  # wall time (the snapshot's wall_time for diffs)
    kind: str  # one of KINDS
    message: str
    service: ServiceKey | None = None
    dest: DestKey | None = None
    old: int | None = None  # weight_changed: the weights
    new: int | None = None
    actor: str | None = None  # who made a weight change through lvstop; None = outside lvstop
    action: str | None = None  # what lvstop was asked for: drain, restore, set_weight ("forced drain"...)
    reason: str | None = None  # the reason given with it (a forced edit needs one)


def _went_down(cur: Counters | None, prev: Counters | None) -> bool:
    if cur is None or prev is None:
        return False
    return (
        cur.conns < prev.conns
        or cur.inpkts < prev.inpkts
        or cur.outpkts < prev.outpkts
        or cur.inbytes < prev.inbytes
        or cur.outbytes < prev.outbytes
    )


def _diff_dest(t: float, skey: ServiceKey, old: Dest, new: Dest, out: list[Event]) -> None:
    if old.weight != new.weight:
        out.append(
            Event(
                t,
                WEIGHT_CHANGED,
                f"{skey} -> {new.key}: weight {old.weight} -> {new.weight}",
                skey,
                new.key,
                old.weight,
                new.weight,
            )
        )
    if new.weight == 0 and old.active_conns > 0 and new.active_conns == 0:
        out.append(
            Event(
                t, DRAIN_FINISHED, f"{skey} -> {new.key}: drained, no active connections left", skey, new.key
            )
        )
    if _went_down(new.counters, old.counters):
        out.append(
            Event(t, COUNTERS_RESET, f"{skey} -> {new.key}: counters went down (zeroed)", skey, new.key)
        )


def _diff_service(t: float, old: Service, new: Service, out: list[Event]) -> None:
    skey = new.key
    if _went_down(new.counters, old.counters):
        out.append(Event(t, COUNTERS_RESET, f"{skey}: counters went down (zeroed or re-created)", skey))
    if old.error is not None or new.error is not None:
        return  # an incomplete dest list says nothing about dests coming or going
    if len(old.dests) == len(new.dests):
        # Dumps come in a stable order: pair the dests by position while their keys agree. Most
        # pairs show nothing to report: same weight, not 0, the same counters object.
        mark = len(out)
        for a, b in zip(old.dests, new.dests, strict=True):
            if a.address != b.address or a.port != b.port or a.family != b.family:
                del out[mark:]  # another order or other dests: match them by key below
                break
            if a.counters is not b.counters or a.weight != b.weight or b.weight == 0:
                _diff_dest(t, skey, a, b, out)
        else:
            return
    before = {d.key: d for d in old.dests}
    for d in new.dests:
        prev = before.pop(d.key, None)
        if prev is None:
            out.append(Event(t, DEST_ADDED, f"{skey}: dest {d.key} added (weight {d.weight})", skey, d.key))
        elif prev is not d:
            _diff_dest(t, skey, prev, d, out)
    for k in before:
        out.append(Event(t, DEST_REMOVED, f"{skey}: dest {k} removed", skey, k))


def diff_snapshots(prev: Snapshot, cur: Snapshot) -> list[Event]:
    """Events explaining how `cur` differs from `prev`, stamped with cur.wall_time.

    Dests of a service that could not be read completely (Service.error) are not compared, so a
    half-read never shows as dests removed. Inconsistent reads are reported when they first appear.
    """
    t = cur.wall_time
    out: list[Event] = []
    before = {s.key: s for s in prev.services}
    for s in cur.services:
        old = before.pop(s.key, None)
        if old is None:
            out.append(Event(t, SERVICE_ADDED, f"service {s.key} added ({len(s.dests)} dests)", s.key))
        elif old is not s:
            _diff_service(t, old, s, out)
    for k in before:
        out.append(Event(t, SERVICE_REMOVED, f"service {k} removed", k))
    if _went_down(cur.totals, prev.totals):
        out.append(Event(t, COUNTERS_RESET, "total counters went down (ipvsadm -Z?)"))
    seen = {(i.kind, i.service, i.message) for i in prev.issues}
    seen.update((IssueKind.INCONSISTENT, s.key, s.error) for s in prev.services if s.error is not None)
    for i in cur.issues:
        if i.kind is IssueKind.INCONSISTENT and (i.kind, i.service, i.message) not in seen:
            out.append(Event(t, INCONSISTENT_READ, i.message, i.service))
    for s in cur.services:
        if s.error is not None and (IssueKind.INCONSISTENT, s.key, s.error) not in seen:
            out.append(Event(t, INCONSISTENT_READ, f"{s.key}: {s.error}", s.key))
    return out


@dataclass(frozen=True, slots=True)
class _Expectation:
    weight: int
    actor: str
    until: float  # wall time after which the expectation is stale
    action: str | None
    reason: str | None


class EventLog:
    """The last `maxlen` events, oldest first. Thread-safe: the poller appends, the UI reads."""

    def __init__(
        self, maxlen: int = 1000, *, expect_ttl: float = 60.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._events: deque[Event] = deque(maxlen=maxlen)
        self._expected: dict[tuple[ServiceKey, DestKey], _Expectation] = {}
        self._ttl = expect_ttl
        self._clock = clock
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._events)

    def expect_weight(
        self,
        skey: ServiceKey,
        dkey: DestKey,
        weight: int,
        actor: str,
        action: str | None = None,
        reason: str | None = None,
    ) -> None:
        """lvstop is about to set this weight: credit `actor` (and its action, reason) when it shows up."""
        with self._lock:
            self._expected[(skey, dkey)] = _Expectation(
                weight, actor, self._clock() + self._ttl, action, reason
            )

    def withdraw_weight(self, skey: ServiceKey, dkey: DestKey, weight: int, actor: str) -> None:
        """The write announced by expect_weight did not happen: credit nobody for that weight."""
        with self._lock:
            exp = self._expected.get((skey, dkey))
            if exp is not None and (exp.weight, exp.actor) == (weight, actor):
                del self._expected[(skey, dkey)]

    def append(self, event: Event) -> Event:
        """Store an event, crediting a weight change to its actor or to "outside lvstop"; returns it."""
        with self._lock:
            if event.kind == WEIGHT_CHANGED and event.service is not None and event.dest is not None:
                exp = self._expected.pop((event.service, event.dest), None)
                if exp is not None and exp.weight == event.new and event.time <= exp.until:
                    what = f"{exp.action} by {exp.actor}" if exp.action else f"by {exp.actor}"
                    what += f" ({exp.reason})" if exp.reason else ""
                    event = replace(
                        event,
                        actor=exp.actor,
                        action=exp.action,
                        reason=exp.reason,
                        message=f"{event.message}: {what}",
                    )
                else:
                    event = replace(event, actor=None, message=f"{event.message} outside lvstop")
            self._events.append(event)
            return event

    def extend(self, events: list[Event]) -> None:
        for e in events:
            self.append(e)

    def recent(self, n: int | None = None) -> list[Event]:
        """The last n events (all when n is None), oldest first."""
        with self._lock:
            events = list(self._events)
        if n is None:
            return events
        return events[-n:] if n > 0 else []
