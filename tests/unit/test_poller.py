from __future__ import annotations

import dataclasses
import gc
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from lvstop.errors import SourceError
from lvstop.estimator import KernelEstimator
from lvstop.events import POLL_FAILED, POLL_RECOVERED, WEIGHT_CHANGED, EventLog
from lvstop.model import (
    AF_INET,
    Counters,
    Dest,
    FwdMethod,
    IssueKind,
    Protocol,
    Rates,
    Service,
    ServiceKey,
    Snapshot,
    dest_key_bytes,
)
from lvstop.poller import Poller, with_rates

WEB = ServiceKey.tcp("203.0.113.10", 80)
DNS = ServiceKey.udp("203.0.113.10", 53)


class FakeSource:
    """Serves snapshots built by `make(n)` for the n-th read; `fail` makes reads raise."""

    name = "fake"

    def __init__(self, make: Callable[[int], Snapshot]) -> None:
        self.make = make
        self.reads = 0
        self.fail: Exception | None = None
        self.delay = 0.0
        self.inside = 0
        self.max_inside = 0
        self._lock = threading.Lock()

    def read(self) -> Snapshot:
        with self._lock:
            self.inside += 1
            self.max_inside = max(self.max_inside, self.inside)
        try:
            if self.delay:
                time.sleep(self.delay)
            if self.fail is not None:
                raise self.fail
            self.reads += 1
            return self.make(self.reads)
        finally:
            with self._lock:
                self.inside -= 1

    def conn_lines(self, sync: bool = False) -> Iterator[str]:
        yield "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"

    def close(self) -> None:
        pass


def dest(last: int, conns: int, weight: int = 1, rates: Rates | None = None) -> Dest:
    return Dest(
        AF_INET,
        f"192.0.2.{last}",
        8080,
        FwdMethod.MASQ,
        weight,
        counters=Counters(conns, 2 * conns),
        rates=rates,
    )


def director(n: int) -> Snapshot:
    """Read n at mono time 2n: 10 conns per tick on .11, 4 on .12; totals add both."""
    t = 2.0 * n
    return Snapshot(
        "fake",
        "test",
        1000.0 + t,
        t,
        services=(
            Service(WEB, "wlc", counters=Counters(14 * n, 28 * n), dests=(dest(11, 10 * n), dest(12, 4 * n))),
        ),
        totals=Counters(14 * n, 28 * n),
    )


def test_poll_once_fills_seq_instant_and_the_kernel_ewma() -> None:
    poller = Poller(FakeSource(director))
    first = poller.poll_once()
    assert first.seq == 1
    assert first.services[0].rates is None and first.services[0].instant is None
    kernel = KernelEstimator.zeroed(Counters(10, 20))
    for n in range(2, 6):
        snap = poller.poll_once()
        kernel.tick(Counters(10 * n, 20 * n))
    d = snap.services[0].dests[0]
    # first seen with history: warm-started at 10 per tick, then kernel arithmetic
    warm = KernelEstimator.steady(Counters(20, 40), Counters(10, 20))
    for n in range(3, 6):
        warm.tick(Counters(10 * n, 20 * n))
    assert d.rates == warm.read() and d.rates is not None and d.rates.cps == 5
    assert d.instant == Rates(5.0, 10.0, 0.0, 0.0, 0.0)
    assert snap.seq == 5 and poller.latest is snap
    assert [len(e) for e in poller.estimators] == [2, 1, 1]  # 2 dests, the service, the totals
    assert snap.total_rates is not None and snap.total_rates.cps == 7
    assert snap.total_instant == Rates(7.0, 14.0, 0.0, 0.0, 0.0)
    assert snap.poll_duration is not None and poller.last_duration is not None


def test_rates_given_by_the_source_are_kept() -> None:
    kernel_rates = Rates(9, 9, 9, 9, 9)

    def make(n: int) -> Snapshot:
        s = director(n)
        d = (dest(11, 10 * n, rates=kernel_rates),)
        return Snapshot(
            s.source, s.director, s.wall_time, s.mono_time, services=(Service(WEB, "wlc", dests=d),)
        )

    poller = Poller(FakeSource(make))
    poller.poll_once()
    d = poller.poll_once().services[0].dests[0]
    assert d.rates == kernel_rates
    assert d.instant == Rates(5.0, 10.0, 0.0, 0.0, 0.0)


def test_with_the_kernels_rates_the_estimator_computes_only_instant_rates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kernel_rates = Rates(9, 9, 9, 9, 9)

    def make(n: int) -> Snapshot:  # what netlink gives: counters and the kernel's rates everywhere
        s = director(n)
        svc = s.services[0]
        dests = tuple(dataclasses.replace(d, rates=kernel_rates) for d in svc.dests)
        svc = dataclasses.replace(svc, rates=kernel_rates, dests=dests)
        return dataclasses.replace(s, services=(svc,), total_rates=kernel_rates)

    poller = Poller(FakeSource(make))
    flags: list[bool] = []
    for est in poller.estimators:

        def spy(
            keys: Any,
            counters: Any,
            t: float,
            kernel_rates: Any = False,
            keep: Any = None,
            *,
            update: Any = est.update,
        ) -> Any:
            flags.extend(np.broadcast_to(kernel_rates, (len(keys),)).tolist())
            return update(keys, counters, t, kernel_rates, keep)

        monkeypatch.setattr(est, "update", spy)
    for _ in range(3):
        snap = poller.poll_once()
    assert flags == [True] * 12  # 2 dests, the service and the totals, per poll
    svc = snap.services[0]
    assert svc.rates is kernel_rates and snap.total_rates is kernel_rates
    assert all(d.rates == kernel_rates for d in svc.dests)
    assert svc.dests[0].instant == Rates(5.0, 10.0, 0.0, 0.0, 0.0)
    assert svc.instant == snap.total_instant == Rates(7.0, 14.0, 0.0, 0.0, 0.0)


def test_failed_poll_keeps_latest_and_records_once_then_recovers() -> None:
    src = FakeSource(director)
    events = EventLog()
    poller = Poller(src, events=events)
    good = poller.poll_once()
    src.fail = SourceError(IssueKind.NO_PERMISSION, "CAP_NET_ADMIN needed")
    for _ in range(3):
        with pytest.raises(SourceError):
            poller.poll_once()
    assert poller.latest is good
    assert poller.last_error == "CAP_NET_ADMIN needed"
    assert poller.last_duration is not None
    assert [e.kind for e in events.recent()] == [POLL_FAILED]  # not one per failed poll
    src.fail = SourceError(IssueKind.NO_IPVS, "ip_vs is not loaded")
    with pytest.raises(SourceError):
        poller.poll_once()
    src.fail = None
    poller.poll_once()
    assert poller.last_error is None
    assert [e.kind for e in events.recent()] == [POLL_FAILED, POLL_FAILED, POLL_RECOVERED]
    assert "ip_vs is not loaded" in events.recent()[-1].message


def test_a_bug_in_the_source_is_recorded_too() -> None:
    src = FakeSource(director)
    src.fail = KeyError("oops")
    poller = Poller(src)
    with pytest.raises(KeyError):
        poller.poll_once()
    assert poller.last_error == "KeyError: 'oops'"


def test_weight_changes_between_polls_become_events() -> None:
    weights = {1: 5, 2: 0}

    def make(n: int) -> Snapshot:
        return Snapshot(
            "fake", "t", float(n), float(n), services=(Service(WEB, "wlc", dests=(dest(11, n, weights[n]),)),)
        )

    events = EventLog()
    poller = Poller(FakeSource(make), events=events)
    poller.poll_once()
    poller.poll_once()
    (e,) = events.recent()
    assert (e.kind, e.old, e.new) == (WEIGHT_CHANGED, 5, 0)


def test_estimator_forgets_vanished_entries_but_not_those_of_an_incomplete_read() -> None:
    def make(n: int) -> Snapshot:
        dests = (dest(11, n), dest(12, n))
        if n == 2:
            svc = Service(WEB, "wlc", dests=dests[:1], error="dests changed during the dump")
        elif n in (1, 3):
            svc = Service(WEB, "wlc", dests=dests)
        else:
            svc = Service(WEB, "wlc", dests=dests[:1])
        return Snapshot("fake", "t", float(2 * n), float(2 * n), services=(svc,), totals=Counters(n))

    poller = Poller(FakeSource(make))
    key12 = dest_key_bytes(WEB, AF_INET, "192.0.2.12", 8080)
    dests = poller.estimators[0]
    poller.poll_once()
    assert key12 in dests.keys.tolist() and len(poller.estimators[2]) == 1
    poller.poll_once()  # .12 missing from an incomplete read: keep its state
    assert key12 in dests.keys.tolist()
    d12 = poller.poll_once().services[0].dests[1]
    assert d12.instant is not None  # continuity: a rate right away
    poller.poll_once()  # .12 really gone
    assert key12 not in dests.keys.tolist()


def test_subscribers_get_each_snapshot_and_their_errors_are_contained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    poller = Poller(FakeSource(director))
    got: list[int] = []

    def broken(s: Snapshot) -> None:
        raise RuntimeError("subscriber bug")

    poller.subscribe(broken)
    unsubscribe = poller.subscribe(lambda s: got.append(s.seq))
    poller.poll_once()
    poller.poll_once()
    unsubscribe()
    poller.poll_once()
    assert got == [1, 2]
    assert poller.latest is not None and poller.latest.seq == 3
    assert "subscriber bug" in caplog.text


def test_thread_polls_until_stopped_and_stop_is_prompt() -> None:
    poller = Poller(FakeSource(director), interval=30.0)
    seen = threading.Event()
    poller.subscribe(lambda s: seen.set())
    poller.start()
    try:
        assert seen.wait(5.0)
        assert poller.running
    finally:
        t0 = time.monotonic()
        poller.stop()
    assert time.monotonic() - t0 < 1.0  # not waiting out the 30 s interval
    assert not poller.running


def test_polls_never_overlap_and_failures_do_not_kill_the_thread() -> None:
    src = FakeSource(director)
    src.delay = 0.05
    poller = Poller(src, interval=0.01)
    src.fail = SourceError(IssueKind.IO, "flaky")
    poller.start()
    try:
        deadline = time.monotonic() + 5.0
        while poller.last_error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        src.fail = None
        # a synchronous poll from another thread while the poller thread runs
        callers = [threading.Thread(target=poller.poll_once) for _ in range(3)]
        for c in callers:
            c.start()
        for c in callers:
            c.join()
        while src.reads < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        poller.stop()
    assert src.reads >= 6
    assert src.max_inside == 1
    assert poller.last_error is None


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Poller(FakeSource(director), interval=0)


def test_stop_from_a_subscriber_then_start_again() -> None:
    # Replay playback stops the poller from its subscriber at the end, and starts it on resume.
    poller = Poller(FakeSource(director), interval=0.01)
    first = threading.Event()
    again = threading.Event()

    def on_snapshot(s: Snapshot) -> None:
        if not first.is_set():
            first.set()
            poller.stop()
        else:
            again.set()

    poller.subscribe(on_snapshot)
    poller.start()
    try:
        assert first.wait(5.0)
        poller.start()  # at once: the stopping thread may still be finishing
        assert again.wait(5.0)
        assert poller.running
    finally:
        poller.stop()
    assert not poller.running


def test_a_poll_holds_the_collector_off_and_leaves_it_as_it_found_it() -> None:
    during: list[bool] = []

    def make(n: int) -> Snapshot:
        during.append(gc.isenabled())
        return director(n)

    src = FakeSource(make)
    poller = Poller(src)
    poller.poll_once()
    assert during == [False] and gc.isenabled()
    src.fail = SourceError(IssueKind.IO, "flaky")
    with pytest.raises(SourceError):
        poller.poll_once()
    assert gc.isenabled()
    src.fail = None
    gc.disable()  # an application that runs the collector itself keeps it off
    try:
        poller.poll_once()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_in_a_managed_process_each_poll_freezes_the_snapshot_it_publishes() -> None:
    from lvstop import gcpolicy

    poller = Poller(FakeSource(director))
    gc.unfreeze()
    gcpolicy.manage()
    try:
        snap = poller.poll_once()
        assert gc.get_freeze_count() > 0
        assert not any(o is snap for o in gc.get_objects())  # frozen: no collection walks it
    finally:
        gcpolicy.release()
    assert gc.get_freeze_count() == 0


def test_on_demand_reads_when_asked_at_most_once_per_interval() -> None:
    now = [0.0]
    src = FakeSource(director)
    poller = Poller(src, interval=2.0, clock=lambda: now[0], on_demand=True)
    assert poller.fresh() is not None and src.reads == 1  # nothing yet: polls at once
    now[0] = 1.9
    assert poller.fresh().seq == 1 and src.reads == 1  # type: ignore[union-attr]
    now[0] = 2.0
    assert poller.fresh().seq == 2 and src.reads == 2  # type: ignore[union-attr]
    src.fail = SourceError(IssueKind.IO, "gone")
    now[0] = 4.0
    assert poller.fresh().seq == 2 and poller.last_error is not None  # type: ignore[union-attr]
    src.fail = None
    now[0] = 5.9  # a failed read counts too: no second try within its interval
    assert poller.fresh().seq == 2 and poller.last_error is not None  # type: ignore[union-attr]
    now[0] = 6.0
    assert poller.fresh().seq == 3 and poller.last_error is None  # type: ignore[union-attr]
    assert Poller(src, interval=2.0).fresh() is None  # not on demand: fresh() is `latest`


def test_on_demand_polls_keep_to_the_grid_of_the_interval() -> None:
    # Prometheus scraping every 0.999 s: polled as soon as 2 s passed, polls would come every 3 s (the
    # scrape just before the 2 s mark is too early) and the EWMA would count 3 s of traffic as one tick.
    now = [0.0]
    src = FakeSource(director)
    poller = Poller(src, interval=2.0, clock=lambda: now[0], on_demand=True)
    polled = []
    for i in range(120):
        now[0] = i * 0.999
        before = src.reads
        poller.fresh()
        if src.reads != before:
            polled.append(now[0])
    gaps = [b - a for a, b in itertools.pairwise(polled)]
    assert min(gaps) >= 1.0 and max(gaps[1:]) < 2.5 and len(polled) >= 58  # 40 without the grid


def test_on_demand_a_consumer_during_a_poll_gets_the_snapshot_before_it() -> None:
    now = [0.0]
    src = FakeSource(director)
    poller = Poller(src, interval=2.0, clock=lambda: now[0], on_demand=True)
    first = poller.fresh()
    now[0] = 2.0
    src.delay = 0.5
    slow = threading.Thread(target=poller.fresh)
    slow.start()
    while src.inside == 0:
        time.sleep(0.001)
    t0 = time.monotonic()
    assert poller.fresh() is first  # at once, not after the read
    assert time.monotonic() - t0 < 0.4
    slow.join()
    assert poller.latest is not None and poller.latest.seq == 2


def test_on_demand_the_thread_polls_until_one_poll_succeeded_then_leaves_it_to_consumers() -> None:
    src = FakeSource(director)
    src.fail = SourceError(IssueKind.NO_IPVS, "no ip_vs")
    poller = Poller(src, interval=0.01, on_demand=True)
    poller.start()
    try:
        deadline = time.monotonic() + 10
        while poller.last_error is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert poller.running and poller.latest is None
        src.fail = None
        assert poller._worker is not None
        poller._worker.join(10)
        assert not poller._worker.is_alive() and poller.latest is not None and src.reads == 1
    finally:
        poller.stop()


def test_with_rates_is_replace_of_the_rates() -> None:
    """poller.with_rates builds the Service positionally: every field must land where replace puts it."""
    dest = Dest(AF_INET, "192.0.2.11", 80, FwdMethod.ROUTE, 1)
    svc = Service(
        ServiceKey(AF_INET, Protocol.TCP, "192.0.2.1", 80),
        "wlc",
        flags=3,
        timeout=300,
        netmask=0xFFFFFF00,
        pe_name="sip",
        counters=Counters(1, 2, 3, 4, 5),
        rates=Rates(6, 7, 8, 9, 10),
        instant=Rates(11, 12, 13, 14, 15),
        dests=(dest,),
        error="vanished during the read",
    )
    assert all(
        getattr(svc, f.name) != f.default for f in dataclasses.fields(Service)
    )  # nothing left at default
    rates, instant = Rates(1.5, 2, 3, 4, 5), Rates(0.5, 1, 1, 2, 2)
    assert with_rates(svc, rates, instant) == dataclasses.replace(svc, rates=rates, instant=instant)
    assert with_rates(svc, None, None) == dataclasses.replace(svc, rates=None, instant=None)
