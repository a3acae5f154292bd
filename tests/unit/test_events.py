from __future__ import annotations

import tracemalloc

import numpy as np

from lvstop.events import (
    COUNTERS_RESET,
    DEST_ADDED,
    DEST_REMOVED,
    DRAIN_FINISHED,
    INCONSISTENT_READ,
    SERVICE_ADDED,
    SERVICE_REMOVED,
    WEIGHT_CHANGED,
    Event,
    EventLog,
    diff_snapshots,
)
from lvstop.model import (
    AF_INET,
    Counters,
    Dest,
    DestKey,
    FwdMethod,
    Issue,
    IssueKind,
    Service,
    ServiceKey,
    ServiceRows,
    Snapshot,
    Table,
)
from lvstop.model import DestTable as Dests

WEB = ServiceKey.tcp("203.0.113.10", 80)
DNS = ServiceKey.udp("203.0.113.10", 53)


def dest(last: int, weight: int = 1, active: int = 0, conns: int = 100) -> Dest:
    return Dest(
        AF_INET,
        f"192.0.2.{last}",
        8080,
        FwdMethod.MASQ,
        weight,
        active_conns=active,
        counters=Counters(conns),
    )


def dk(last: int) -> DestKey:
    return DestKey(AF_INET, f"192.0.2.{last}", 8080)


def snap(*services: Service, t: float = 100.0, **kw: object) -> Snapshot:
    return Snapshot("demo", "d", t, t, services=services, **kw)  # type: ignore[arg-type]


def kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events]


def test_nothing_changed_means_no_events() -> None:
    s = snap(Service(WEB, "wlc", dests=(dest(11), dest(12))))
    again = snap(Service(WEB, "wlc", dests=(dest(11), dest(12))), t=102.0)
    assert diff_snapshots(s, again) == []


def test_services_added_and_removed() -> None:
    before = snap(Service(WEB, "wlc"))
    after = snap(Service(DNS, "rr", dests=(dest(1),)), t=104.0)
    events = diff_snapshots(before, after)
    assert kinds(events) == [SERVICE_ADDED, SERVICE_REMOVED]
    assert events[0].service == DNS and events[0].time == 104.0 and "1 dests" in events[0].message
    assert events[1].service == WEB


def test_dests_added_removed_and_reordered() -> None:
    before = snap(Service(WEB, "wlc", dests=(dest(11), dest(12), dest(13))))
    after = snap(Service(WEB, "wlc", dests=(dest(13), dest(14, weight=5), dest(11))))
    events = diff_snapshots(before, after)
    assert [(e.kind, e.dest) for e in events] == [(DEST_ADDED, dk(14)), (DEST_REMOVED, dk(12))]
    assert "weight 5" in events[0].message


def test_a_change_before_a_reordered_dest_is_reported_once() -> None:
    # The positional pass sees 11's new weight, then 12 and 13 swapped: the match by key takes over.
    before = snap(Service(WEB, "wlc", dests=(dest(11), dest(12), dest(13, conns=50))))
    after = snap(Service(WEB, "wlc", dests=(dest(11, weight=4), dest(13, conns=10), dest(12))))
    events = diff_snapshots(before, after)
    assert [(e.kind, e.dest) for e in events] == [(WEIGHT_CHANGED, dk(11)), (COUNTERS_RESET, dk(13))]


def test_weight_change_carries_old_and_new() -> None:
    before = snap(Service(WEB, "wlc", dests=(dest(11, weight=5),)))
    after = snap(Service(WEB, "wlc", dests=(dest(11, weight=0, active=3),)))
    (e,) = diff_snapshots(before, after)
    assert (e.kind, e.service, e.dest, e.old, e.new, e.actor) == (WEIGHT_CHANGED, WEB, dk(11), 5, 0, None)
    assert "5 -> 0" in e.message


def test_drain_finished_when_the_last_active_connection_is_gone() -> None:
    draining = snap(Service(WEB, "wlc", dests=(dest(11, weight=0, active=2),)))
    done = snap(Service(WEB, "wlc", dests=(dest(11, weight=0, active=0),)))
    assert kinds(diff_snapshots(draining, done)) == [DRAIN_FINISHED]
    # a weighted dest that happens to have no connections is not a drain
    idle = snap(Service(WEB, "wlc", dests=(dest(11, weight=1, active=2),)))
    idle2 = snap(Service(WEB, "wlc", dests=(dest(11, weight=1, active=0),)))
    assert diff_snapshots(idle, idle2) == []


def test_counters_going_down_are_reported_for_dests_services_and_totals() -> None:
    before = snap(
        Service(WEB, "wlc", counters=Counters(500), dests=(dest(11, conns=500),)), totals=Counters(900)
    )
    after = snap(Service(WEB, "wlc", counters=Counters(3), dests=(dest(11, conns=3),)), totals=Counters(10))
    events = diff_snapshots(before, after)
    assert kinds(events) == [COUNTERS_RESET] * 3
    assert [(e.service, e.dest) for e in events] == [(WEB, None), (WEB, dk(11)), (None, None)]


def test_an_incomplete_dest_list_does_not_report_dests_removed() -> None:
    before = snap(Service(WEB, "wlc", dests=(dest(11), dest(12))))
    broken = snap(Service(WEB, "wlc", dests=(dest(11),), error="service vanished during the dump"))
    events = diff_snapshots(before, broken)
    assert kinds(events) == [INCONSISTENT_READ]
    assert events[0].service == WEB and "vanished" in events[0].message
    assert diff_snapshots(broken, before) == []


def test_inconsistent_read_issue_is_reported_when_it_first_appears() -> None:
    issue = Issue(IssueKind.INCONSISTENT, "dests of TCP 203.0.113.10:80 changed during the dump", WEB)
    clean = snap(Service(WEB, "wlc"))
    bad = snap(Service(WEB, "wlc"), issues=(issue, Issue(IssueKind.UNAVAILABLE, "no sync daemon info")))
    assert kinds(diff_snapshots(clean, bad)) == [INCONSISTENT_READ]
    assert diff_snapshots(bad, bad) == []


# ------------------------------------------------------------------------------ EventLog


def change(old: int, new: int, t: float = 100.0, last: int = 11) -> Event:
    return Event(t, WEIGHT_CHANGED, f"{WEB} -> {dk(last)}: weight {old} -> {new}", WEB, dk(last), old, new)


def test_expected_weight_is_credited_to_its_actor() -> None:
    log = EventLog(clock=lambda: 100.0)
    log.expect_weight(WEB, dk(11), 0, "alice")
    stored = log.append(change(5, 0, t=102.0))
    assert stored.actor == "alice" and stored.message.endswith("by alice")
    # the expectation is used up: the next change is someone else's
    assert log.append(change(0, 5, t=104.0)).actor is None


def test_unexpected_or_different_weight_is_outside_lvstop() -> None:
    log = EventLog(clock=lambda: 100.0)
    assert log.append(change(5, 0)).message.endswith("outside lvstop")
    log.expect_weight(WEB, dk(11), 0, "alice")
    assert log.append(change(5, 3, t=101.0)).actor is None  # keepalived won the race
    log.expect_weight(WEB, dk(11), 0, "alice")
    assert log.append(change(5, 0, t=101.0, last=12)).actor is None  # another dest


def test_a_stale_expectation_is_not_credited() -> None:
    log = EventLog(expect_ttl=30.0, clock=lambda: 100.0)
    log.expect_weight(WEB, dk(11), 0, "alice")  # the write failed; much later someone drains it
    assert log.append(change(5, 0, t=200.0)).actor is None


def test_a_withdrawn_expectation_is_not_credited() -> None:
    log = EventLog(clock=lambda: 100.0)
    log.expect_weight(WEB, dk(11), 0, "alice")
    log.withdraw_weight(WEB, dk(11), 0, "alice")  # the write failed
    assert log.append(change(5, 0, t=101.0)).actor is None


def test_withdraw_leaves_a_newer_expectation_alone() -> None:
    log = EventLog(clock=lambda: 100.0)
    log.expect_weight(WEB, dk(11), 0, "alice")
    log.expect_weight(WEB, dk(11), 2, "bob")  # bob's edit came after alice's failed one
    log.withdraw_weight(WEB, dk(11), 0, "alice")
    assert log.append(change(5, 2, t=101.0)).actor == "bob"


def test_log_is_bounded_and_recent_is_oldest_first() -> None:
    log = EventLog(maxlen=3)
    for i in range(5):
        log.append(Event(float(i), SERVICE_ADDED, f"e{i}"))
    assert len(log) == 3
    assert [e.message for e in log.recent()] == ["e2", "e3", "e4"]
    assert [e.message for e in log.recent(2)] == ["e3", "e4"]
    assert log.recent(0) == []


def test_extend_applies_attribution_to_each_event() -> None:
    log = EventLog(clock=lambda: 0.0)
    log.expect_weight(WEB, dk(11), 2, "bob")
    log.extend([change(1, 2, t=1.0), change(1, 2, t=1.0, last=12)])
    assert [e.actor for e in log.recent()] == ["bob", None]


def test_dests_without_counters_are_diffed_without_copying_counter_columns() -> None:
    """/proc has no counters: at 100k dests the reset check copied both snapshots' counter columns
    (2 x 4 MB) in every poll, the exporter's peak. Both tables' keys are made before measuring (each
    snapshot keeps its own)."""
    n, services = 100_000, [Service(ServiceKey.tcp(f"203.0.113.{i}", 80), "wlc") for i in range(100)]
    snaps = []
    for t in (1.0, 3.0):
        d = Dests.empty(n)
        d.service[:] = np.arange(n) // 1000
        d.addr[:] = np.arange(n * 2, dtype=np.uint64).view("V16")
        table = Table.build(services, d)
        table.dest_keys()
        snaps.append(Snapshot("proc", "lab", t, t, ServiceRows(table)))
    tracemalloc.start()
    try:
        events = diff_snapshots(*snaps)
        held = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert events == [] and held < 6 << 20  # was 12 MB
