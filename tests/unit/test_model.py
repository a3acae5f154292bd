"""The model's columns (Table, DestTable, ServiceRows, align) and its fast row builder."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import tracemalloc

import numpy as np
import pytest

from lvstop.model import (
    AF_INET,
    AF_INET6,
    ConnEntry,
    Counters,
    Daemon,
    Dest,
    DestKey,
    FwdMethod,
    Issue,
    Rates,
    Service,
    ServiceKey,
    ServiceRows,
    Snapshot,
    Table,
    Timeouts,
    TunType,
    align,
    fast_constructor,
)

WEB = ServiceKey.tcp("203.0.113.1", 80)
V6 = ServiceKey.udp("2001:db8::1", 53)
MARK = ServiceKey.mark(7, AF_INET6)


def services() -> tuple[Service, ...]:
    d4 = Dest(
        AF_INET, "192.0.2.11", 8080, FwdMethod.MASQ, 5, 10, 2, 3, 4, 1, counters=Counters(1, 2, 3, 4, 5)
    )
    d6 = Dest(
        AF_INET6,
        "2001:db8::11",
        0,
        FwdMethod.TUNNEL,
        0,
        tun_type=TunType.GUE,
        tun_port=6080,
        tun_flags=3,
        persist_conns=None,
        counters=Counters(2**64 - 1, 0, 0, 2**63, 0),
        rates=Rates(1, 2, 3, 4, 2**40),
        instant=Rates(0.5, 1.25, 0.0, 0.0, 3.0),
    )
    unseen = Dest(AF_INET, "192.0.2.99", 80, FwdMethod.ROUTE, 1, None, None, 2, 0, None, None, None, None)
    return (
        Service(WEB, "wlc", counters=Counters(9), rates=Rates(1, 1, 1, 1, 1), dests=(d4, d6)),
        Service(V6, "rr", error="vanished during the read"),
        Service(MARK, "sh", flags=8, dests=(dataclasses.replace(d4, weight=7), unseen)),
    )


def test_rows_made_from_columns_equal_the_rows_they_were_made_of() -> None:
    rows = ServiceRows(Table.from_rows(services()))
    assert rows == services() and tuple(rows) == services() and len(rows) == 3
    assert rows[-1] == services()[2] and rows[0:2] == services()[:2] and rows[::2] == services()[::2]
    fresh = ServiceRows(Table.from_rows(services()))
    assert fresh[1] == services()[1] and list(fresh) == list(services())  # one row, then the rest
    d = rows[0].dests[1]
    assert type(d.rates) is Rates and d.rates.outbps == 2**40 and type(d.rates.cps) is int
    assert d.instant == Rates(0.5, 1.25, 0.0, 0.0, 3.0) and type(d.instant.cps) is float
    assert d.persist_conns is None and d.tun_type is TunType.GUE and d.fwd is FwdMethod.TUNNEL
    assert rows[0].dests[0].rates is None and rows[0].dests[0].instant is None
    unseen = rows[2].dests[1]
    assert (unseen.u_threshold, unseen.l_threshold, unseen.persist_conns, unseen.tun_type) == (None,) * 4
    assert unseen.tun_port is None and unseen.tun_flags is None and unseen.counters is None


def test_a_snapshot_of_columns_is_a_snapshot_of_rows() -> None:
    cols = Snapshot("netlink", "d", 1.0, 2.0, ServiceRows(Table.from_rows(services())))
    plain = Snapshot("netlink", "d", 1.0, 2.0, services())
    assert cols == plain and hash(cols.services) == hash(plain.services)
    assert cols.service(MARK) == plain.service(MARK) == services()[2]
    assert cols.service(ServiceKey.mark(8)) is None and plain.service(ServiceKey.mark(8)) is None
    assert plain.table.dests.weight.tolist() == cols.table.dests.weight.tolist() == [5, 0, 7, 1]
    assert plain.table.starts.tolist() == [0, 2, 2, 4]
    assert pickle.loads(pickle.dumps(cols.services)) == plain.services
    assert dataclasses.replace(cols, services=cols.services[2:]).services == services()[2:]
    assert dataclasses.replace(cols, services=()).table.dests.weight.tolist() == []


def test_dest_keys_name_a_dest_of_a_service_across_snapshots() -> None:
    a = Table.from_rows(services()).dest_keys()
    b = Table.from_rows(services()[::-1]).dest_keys()
    assert len(set(a.tolist())) == 4  # the same dest in two services: two keys
    assert align(a, b).tolist() == [2, 3, 0, 1] and align(b, a).tolist() == [2, 3, 0, 1]
    assert align(a[:2], b).tolist() == [-1, -1, 0, 1]
    assert align(a, a).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("moved", [0, 1, 3, 10, 60])
def test_align_finds_moved_added_and_removed_keys(moved: int) -> None:
    rng = np.random.default_rng(moved)
    prev = np.array([b"%07d" % i for i in range(100)], "V7")
    cur = prev.copy()
    swap = rng.choice(100, moved, replace=False)
    cur[swap] = np.array([b"new%04d" % i for i in range(moved)], "V7")  # churn in place
    got = align(prev, cur)
    want = [i if i not in set(swap.tolist()) else -1 for i in range(100)]
    assert got.tolist() == want
    perm = rng.permutation(100)
    assert align(prev, prev[perm]).tolist() == perm.tolist()
    assert align(prev[:0], prev[:3]).tolist() == [-1, -1, -1]


def test_aligning_equal_keys_copies_neither() -> None:
    """The usual poll (the same dests in the same order) is matched in place: at 100k dests a copy of
    both key columns was 9.6 MB held for a moment in every poll (the exporter's peak RSS)."""
    keys = np.arange(100_000 * 6, dtype=np.uint64).view("V48")
    same = keys.copy()
    tracemalloc.start()
    try:
        got = align(keys, same)
        held = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got.tolist() == list(range(100_000))
    assert held < 2 << 20  # the index array (0.8 MB) and a bool per key


MODEL = [ServiceKey, DestKey, Counters, Rates, Dest, Service, Daemon, Timeouts, Issue, ConnEntry]


@pytest.mark.parametrize("cls", MODEL, ids=lambda c: c.__name__)
def test_fast_constructor_builds_exactly_what_the_dataclass_builds(cls: type) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    values = [f"value of {n}" for n in names]
    fast: object = fast_constructor(cls)(*values)
    slow = cls(*values)
    assert type(fast) is cls
    assert [getattr(fast, n) for n in names] == values
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert pickle.loads(pickle.dumps(fast)) == slow and copy.deepcopy(fast) == slow
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(fast, names[0], "changed")
