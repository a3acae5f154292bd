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
from typing import TYPE_CHECKING

import numpy as np

from lvstop.model import (
    Array,
    Counters,
    DestKey,
    DestTable,
    IssueKind,
    ServiceKey,
    Snapshot,
    Table,
    address_text,
    align,
)

if TYPE_CHECKING:
    from lvstop.health.state import Transition

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
HEALTH_ACT = "health_act"  # acting on health: a drain, restore or sorry server change, or why not
HEALTH_DOWN = "health_down"  # a dest's health checks (lvstop.health) say down
HEALTH_UP = "health_up"  # ... say up again

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
    HEALTH_ACT,
    HEALTH_DOWN,
    HEALTH_UP,
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
    reason: str | None = None  # the reason given with it (a forced edit needs one); health: the answer
    states: tuple[str, str] | None = None  # health_*: the states before and after ("up", "down")


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


def _dest_events(t: float, pt: Table, ct: Table, pairs: Array) -> dict[int, list[Event]]:
    """Dest events of each service of `ct` (by index) that `pairs` pairs with one of `pt`, on whole
    columns: weight changes, finished drains, counter resets, dests added and removed."""
    pd, cd = pt.dests, ct.dests
    match = align(pt.dest_keys(), ct.dest_keys())  # a dest key holds its service's key
    comparable = pairs[cd.service] >= 0
    m = np.flatnonzero(comparable & (match >= 0))
    old = match[m]
    weight_changed = pd.weight[old] != cd.weight[m]
    drained = (cd.weight[m] == 0) & (pd.active[old] > 0) & (cd.active[m] == 0)
    reset = pd.has_counters[old] & cd.has_counters[m]
    if reset.any():  # /proc has no counters: no copies of them to compare (8 MB at 100k dests)
        both = np.flatnonzero(reset)
        reset[both] = (cd.counters[m[both]] < pd.counters[old[both]]).any(axis=1)
    flagged = np.zeros(len(cd), bool)
    flagged[m] = weight_changed | drained | reset
    added = comparable & (match < 0)
    kept = np.zeros(len(pd), bool)
    kept[match[match >= 0]] = True
    back = np.full(len(pt.services), -1)
    back[pairs[pairs >= 0]] = np.flatnonzero(pairs >= 0)
    removed = np.flatnonzero((back[pd.service] >= 0) & ~kept)
    out: dict[int, list[Event]] = {}
    for r in np.flatnonzero(flagged | added).tolist():
        i = int(cd.service[r])
        skey, dkey = ct.services[i].key, _dest_key(cd, r)
        events = out.setdefault(i, [])
        if added[r]:
            events.append(
                Event(t, DEST_ADDED, f"{skey}: dest {dkey} added (weight {cd.weight[r]})", skey, dkey)
            )
            continue
        o = int(match[r])
        w0, w1 = int(pd.weight[o]), int(cd.weight[r])
        if w0 != w1:
            events.append(
                Event(t, WEIGHT_CHANGED, f"{skey} -> {dkey}: weight {w0} -> {w1}", skey, dkey, w0, w1)
            )
        if w1 == 0 and pd.active[o] > 0 and cd.active[r] == 0:
            msg = f"{skey} -> {dkey}: drained, no active connections left"
            events.append(Event(t, DRAIN_FINISHED, msg, skey, dkey))
        if pd.has_counters[o] and cd.has_counters[r] and (cd.counters[r] < pd.counters[o]).any():
            events.append(
                Event(t, COUNTERS_RESET, f"{skey} -> {dkey}: counters went down (zeroed)", skey, dkey)
            )
    for r in removed.tolist():
        i = int(back[pd.service[r]])
        skey = ct.services[i].key
        out.setdefault(i, []).append(
            Event(t, DEST_REMOVED, f"{skey}: dest {_dest_key(pd, r)} removed", skey, _dest_key(pd, r))
        )
    return out


def _dest_key(d: DestTable, row: int) -> DestKey:
    family = int(d.family[row])
    return DestKey(family, address_text(family, d.addr[row].tobytes()), int(d.port[row]))


def _previous(pt: Table, ct: Table) -> list[int | None]:
    """For each service of `ct`, the index of the same service in `pt`, or None."""
    if len(pt.services) == len(ct.services) and pt.service_keys().tobytes() == ct.service_keys().tobytes():
        return list(range(len(ct.services)))  # the usual poll: the same services in the same order
    before = {s.key: j for j, s in enumerate(pt.services)}
    return [before.get(s.key) for s in ct.services]


def diff_snapshots(prev: Snapshot, cur: Snapshot) -> list[Event]:
    """Events explaining how `cur` differs from `prev`, stamped with cur.wall_time.

    Dests of a service that could not be read completely (Service.error) are not compared, so a
    half-read never shows as dests removed. Inconsistent reads are reported when they first appear.
    """
    t = cur.wall_time
    out: list[Event] = []
    pt, ct = prev.table, cur.table
    previous = _previous(pt, ct)
    pairs = np.full(len(ct.services), -1)  # the prev service whose dests each service's are compared with
    for i, (s, j) in enumerate(zip(ct.services, previous, strict=True)):
        if j is not None and s.error is None and pt.services[j].error is None:
            pairs[i] = j
    dest_events = _dest_events(t, pt, ct, pairs)
    for i, (s, j) in enumerate(zip(ct.services, previous, strict=True)):
        if j is None:
            out.append(Event(t, SERVICE_ADDED, f"service {s.key} added ({ct.dest_count(i)} dests)", s.key))
            continue
        if _went_down(s.counters, pt.services[j].counters):
            out.append(Event(t, COUNTERS_RESET, f"{s.key}: counters went down (zeroed or re-created)", s.key))
        out += dest_events.get(i, ())
    if len(pt.services) > len(ct.services) - previous.count(None):
        kept = set(previous)
        for j, p in enumerate(pt.services):
            if j not in kept:
                out.append(Event(t, SERVICE_REMOVED, f"service {p.key} removed", p.key))
    if _went_down(cur.totals, prev.totals):
        out.append(Event(t, COUNTERS_RESET, "total counters went down (ipvsadm -Z?)"))
    seen = {(i.kind, i.service, i.message) for i in prev.issues}
    seen.update((IssueKind.INCONSISTENT, s.key, s.error) for s in pt.services if s.error is not None)
    for issue in cur.issues:
        if issue.kind is IssueKind.INCONSISTENT and (issue.kind, issue.service, issue.message) not in seen:
            out.append(Event(t, INCONSISTENT_READ, issue.message, issue.service))
    for s in ct.services:
        if s.error is not None and (IssueKind.INCONSISTENT, s.key, s.error) not in seen:
            out.append(Event(t, INCONSISTENT_READ, f"{s.key}: {s.error}", s.key))
    return out


def health_event(t: Transition) -> Event | None:
    """The event of a health transition; None for a new dest's first good answer (unknown -> up), which
    is no news and, for every dest at once when the checks start, would push the log's news out."""
    if t.old == "unknown" and t.new == "up":
        return None
    kind = HEALTH_DOWN if t.new == "down" else HEALTH_UP
    answer = f"{t.check}: {t.reason}"
    message = f"{t.service} -> {t.dest}: health {t.old} -> {t.new} ({answer})"
    return Event(t.time, kind, message, t.service, t.dest, reason=answer, states=(str(t.old), str(t.new)))


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
