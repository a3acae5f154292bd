"""lvstop_ipvs_backend_external_weight_changes_total counts every undo of a drain outside lvstop once,
whatever the path (issue 14 item 1): an in-place weight change (keepalived's inhibit_on_failure, ipvsadm -e)
or a dest removed and added back (keepalived without inhibit_on_failure, or restarted)."""

from __future__ import annotations

from lvstop.events import DEST_ADDED, DEST_REMOVED, DRAIN_CLOSED, WEIGHT_CHANGED, Event
from lvstop.exporter.core import WatchingEventLog
from lvstop.model import AF_INET, DestKey, ServiceKey

S = ServiceKey.tcp("203.0.113.10", 80)
D = DestKey(AF_INET, "192.0.2.11", 8080)


def _ev(kind: str, old: int | None = None, new: int | None = None) -> Event:
    return Event(0.0, kind, kind, S, D, old, new)


def _drain(log: WatchingEventLog, old: int, actor: str) -> None:
    log.expect_weight(S, D, 0, actor)  # as Control does before its write
    log.append(_ev(WEIGHT_CHANGED, old, 0))


def test_removed_and_added_back_counts_once() -> None:
    log = WatchingEventLog()
    _drain(log, 3, "tui:alice")
    log.append(_ev(DEST_REMOVED))
    log.append(_ev(DEST_ADDED))
    assert log.external == {}
    log.append(_ev(DRAIN_CLOSED, 0, 3))  # Control's reconcile after that poll
    assert log.external == {(S, D): 1}


def test_in_place_undo_is_not_counted_twice() -> None:
    log = WatchingEventLog()
    _drain(log, 3, "tui:alice")
    log.append(_ev(WEIGHT_CHANGED, 0, 3))  # keepalived, inhibit_on_failure: back in place
    log.append(_ev(DRAIN_CLOSED, 0, 3))
    assert log.external == {(S, D): 1}


def test_an_old_outside_change_does_not_hide_a_later_undo() -> None:
    log = WatchingEventLog()
    log.append(_ev(WEIGHT_CHANGED, 1, 3))  # keepalived, long ago
    _drain(log, 3, "api:bob")  # then lvstop drains
    log.append(_ev(DEST_REMOVED))
    log.append(_ev(DEST_ADDED))
    log.append(_ev(DRAIN_CLOSED, 0, 3))
    assert log.external == {(S, D): 2}


def test_a_drain_closed_after_a_restart_counts() -> None:
    log = WatchingEventLog()  # the weight came back while the exporter was down: only the closing is seen
    log.append(_ev(DRAIN_CLOSED, 0, 5))
    assert log.external == {(S, D): 1}
