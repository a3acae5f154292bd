"""Reading ipvsadm and lvstop at "the same moment" on a live kernel.

The kernel refreshes counters and rates every 2 s (its estimator tick), and connections expire while
we read. So a comparison is a sandwich: ipvsadm, then lvstop, then ipvsadm again; only when both
ipvsadm reads are identical is lvstop's read known to have seen the same state, and then it must
match exactly. Otherwise the sandwich is retried.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Generic, NamedTuple, TypeVar

import pytest

from lvstop.model import IssueKind, Snapshot
from lvstop.sources.procfs import ProcSource

from .lab import Lab
from .oracle import Listing, differences, parse_list, proc_service_names, snapshot_listing

T = TypeVar("T")

# ipvsadm listing modes that do not change between estimator ticks once traffic has stopped
STATIC_MODES: dict[str, tuple[str, ...]] = {
    "plain": ("-Ln",),
    "stats": ("-Ln", "--stats", "--exact"),
    "thresholds": ("-Ln", "--thresholds"),
    "persistent": ("-Ln", "--persistent-conn"),
    "tun": ("-Ln", "--tun-info"),
}
RATE_MODE = ("-Ln", "--rate", "--exact")
TICK_S = 2.0
# What /proc/net/ip_vs prints; counters, rates, thresholds, tunnel settings, scheduler flags and
# persistent-connection counts it does not.
PROC_FIELDS = {"scheduler", "persistent", "mask", "ops", "fwd", "weight", "active", "inactive"}


def read_modes(lab: Lab, ns: str, modes: Sequence[Sequence[str]]) -> tuple[str, ...]:
    return tuple(lab.ipvsadm(*m, ns=ns) for m in modes)


def listing_of(texts: Sequence[str]) -> Listing:
    out = Listing()
    for t in texts:
        out.merge(parse_list(t))
    return out


def wait_for_tick(lab: Lab, ns: str, limit_s: float = 2.0 * TICK_S + 1) -> bool:
    """Return right after the kernel's estimator ran (the rates listing changed); False if it never
    changed within `limit_s` (all rates at rest: then any moment is as good as another)."""
    first = lab.ipvsadm(*RATE_MODE, ns=ns)
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if lab.ipvsadm(*RATE_MODE, ns=ns) != first:
            return True
    return False


class Sandwich(NamedTuple, Generic[T]):
    before: tuple[str, ...]  # ipvsadm's texts, one per mode
    got: T  # lvstop's read
    after: tuple[str, ...]


def sandwich(
    lab: Lab,
    ns: str,
    modes: Sequence[Sequence[str]],
    read: Callable[[], T],
    *,
    attempts: int = 8,
    after_tick: bool = False,
    same: Callable[[str], str] = lambda text: text,
) -> Sandwich[T]:
    """lvstop's read taken while ipvsadm showed the same thing (as seen through `same`) before and after."""
    seen = []
    for _ in range(attempts):
        if after_tick:
            wait_for_tick(lab, ns)
        t0 = time.monotonic()
        before = read_modes(lab, ns, modes)
        got = read()
        after = read_modes(lab, ns, modes)
        seen.append(round(time.monotonic() - t0, 2))
        if list(map(same, before)) == list(map(same, after)):
            return Sandwich(before, got, after)
    pytest.fail(
        f"{ns}: ipvsadm never read the same twice around lvstop's read in {attempts} attempts "
        f"(sandwich durations {seen} s; the kernel estimator ticks every {TICK_S} s)"
    )


def check_procsource(lab: Lab, ns: str, *, whole_table: bool) -> Snapshot:
    """ProcSource shows exactly the services /proc printed, each as ipvsadm shows it (on the fields
    /proc has). With whole_table, /proc must also have printed every service ipvsadm lists."""
    # /proc/PID/net is the namespace of PID: that is how ProcSource reads another namespace
    source = ProcSource(root=lab.proc_root(ns), sys_root="/proc/sys")

    def read() -> tuple[str, Snapshot]:
        with open(f"{lab.proc_root(ns)}/net/ip_vs") as f:
            return f.read(), source.read()

    texts, (raw, snap), _ = sandwich(lab, ns, [STATIC_MODES["plain"]], read)
    expected, got = listing_of(texts), snapshot_listing(snap)
    printed = proc_service_names(raw)
    assert set(got.services) == printed, f"{ns}: ProcSource shows other services than /proc printed"
    assert printed <= set(expected.services)
    if whole_table:
        assert printed == set(expected.services), (
            f"{ns}: /proc printed {len(printed)} of {len(expected.services)}"
        )
    elif printed != set(expected.services):
        # kernel 6.1: with IPVS services in several namespaces, /proc/net/ip_vs loses services after its
        # first page (seq_next walks every namespace's services, the restart position counts only one)
        n, total = len(printed), len(expected.services)
        print(f"[note] {ns}: the kernel's /proc/net/ip_vs printed {n} of {total} services")
    seen = Listing({s: expected.services[s] for s in printed}, {s: expected.dests[s] for s in printed})
    diffs = differences(seen, got, fields=PROC_FIELDS)
    assert not diffs, f"{ns}: ProcSource differs from ipvsadm -Ln:\n" + "\n".join(diffs)
    assert any(i.kind is IssueKind.UNAVAILABLE for i in snap.issues), "what /proc lacks must be marked"
    assert_proc_marks_unseen(snap)
    return snap


def assert_proc_marks_unseen(snap: Snapshot) -> None:
    for s in snap.services:
        assert s.counters is None and s.rates is None, f"{s.key}: /proc has no per-service counters"
        for d in s.dests:
            assert d.counters is None and d.rates is None and d.persist_conns is None, d
            unseen = (d.u_threshold, d.l_threshold, d.tun_type, d.tun_port, d.tun_flags)
            assert unseen == (None,) * 5, f"/proc has no thresholds or tunnel settings: {d}"
    assert snap.daemons is None, "/proc cannot see the sync daemons: unknown, not none"
