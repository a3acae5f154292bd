"""Item 3: connection-table aggregates equal what `ipvsadm -Lnc` lists; entries that reached the backup
through the sync daemon are recognised as such; both daemons and the timeouts are read right."""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from lvstop.conntable import ConnSummary, ConnTable
from lvstop.model import DaemonState, ServiceKey
from lvstop.sources.netlink import NetlinkSource
from lvstop.sources.procfs import ConnFile

from .compare import listing_of, sandwich
from .lab import BACKUP, MASTER, Lab, traffic_plan
from .oracle import Conn, Listing, hostport, parse_conns, parse_daemons, parse_timeout, service_name

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def sources(lab: Lab) -> Iterator[dict[str, NetlinkSource]]:
    # fresh entries (the burst's may have expired by now), and time for the master's sync daemon to
    # send them (it flushes its buffer at least every 2 s)
    lab.burst([{**p, "count": 1} for p in traffic_plan(tunnels=lab.tunnels, sctp=lab.sctp)])
    time.sleep(3)
    s = {ns: NetlinkSource(netns=ns) for ns in (MASTER, BACKUP)}
    yield s
    for src in s.values():
        src.close()


def _entry_set(text: str) -> str:
    return "\n".join(
        sorted(" ".join((c.protocol, c.state, c.source, c.virtual, c.destination)) for c in parse_conns(text))
    )


def _configured(dest: str, dests: dict[str, Any]) -> str | None:
    """The service's dest an entry went to, as -Ln lists it: a dest configured with port 0 (port-zero
    and fwmark services) serves whatever port the packet had."""
    if dest in dests:
        return dest
    any_port = dest.rpartition(":")[0] + ":0"
    return any_port if any_port in dests else None


def _attribute(c: Conn, listing: Listing) -> tuple[str, str, bool]:
    """(service, dest, attributed) of an -Lnc entry, from what ipvsadm shows, in IPVS's own lookup
    order: a fwmark template carries its mark as its address; otherwise the service at the entry's
    address and port, else at its address with port 0 (persistent port-zero services); otherwise
    (fwmark traffic shows the packet's own address) the one fwmark service of that family with the
    entry's dest. Two fwmark services sharing the dest cannot be told apart from the table: then the
    entry stays unattributed, keyed as printed."""
    vaddr, _, vport = c.virtual.rpartition(":")
    family = 10 if vaddr.startswith("[") else 2
    vaddr = vaddr.strip("[]")
    if c.protocol == "IP":
        mark = int(ipaddress.ip_address(vaddr).packed[:4].hex(), 16)
        name = service_name("", family, "", 0, mark)
        return name, c.destination, name in listing.services
    for port in (int(vport), 0):
        name = service_name(c.protocol, family, vaddr, port, 0)
        if name in listing.services:
            return name, _configured(c.destination, listing.dests[name]) or c.destination, True
    owners = [
        s
        for s in listing.services
        if s.startswith("FWM")
        and s.endswith("IPv6") == (family == 10)
        and _configured(c.destination, listing.dests[s])
    ]
    if len(owners) == 1:
        return owners[0], _configured(c.destination, listing.dests[owners[0]]) or c.destination, True
    return service_name(c.protocol, family, vaddr, int(vport), 0), c.destination, False


def _oracle(
    conns: list[Conn], listing: Listing
) -> tuple[Counter[tuple[str, str]], Counter[str], Counter[tuple[str, str, str]], int]:
    """(service, state) entry counts, templates by service, (service, dest, state) counts, unattributed."""
    states: Counter[tuple[str, str]] = Counter()
    templates: Counter[str] = Counter()
    by_dest: Counter[tuple[str, str, str]] = Counter()
    unattributed = 0
    for c in conns:
        svc, dest, attributed = _attribute(c, listing)
        unattributed += not attributed
        if c.source.endswith(":0"):
            templates[svc] += 1
        else:
            states[(svc, c.state)] += 1
            by_dest[(svc, dest, c.state)] += 1
    return states, templates, by_dest, unattributed


def _name(k: ServiceKey) -> str:
    return service_name(k.protocol.name, k.family, k.address, k.port, k.fwmark)


@pytest.mark.parametrize("ns", [MASTER, BACKUP])
def test_conntable_equals_ipvsadm_lnc(lab: Lab, sources: dict[str, NetlinkSource], ns: str) -> None:
    source = sources[ns]
    snap = source.read()
    sync = ns == BACKUP

    def read() -> tuple[ConnSummary, list[str], list[str]]:
        seq = source.conn_lines(sync=sync)
        assert isinstance(seq, ConnFile), "the seq file is not read in blocks"
        blocks = ConnTable(snap.services).summarize(seq, sync=sync, budget_s=None, filters=None)
        return blocks, list(source.conn_lines(sync=sync)), list(source.conn_lines(sync=not sync))

    # the set of entries must stay put around our reads; their expiry timers may tick
    (text,), (blocks, lines, other), _ = sandwich(lab, ns, [("-Lnc",)], read, same=_entry_set)
    conns = parse_conns(text)
    assert conns, f"{ns}: the lab's traffic left no connection entries"
    summary = ConnTable(snap.services).summarize(lines, sync=sync, budget_s=None, filters=None)
    assert not summary.partial and summary.total == len(conns) == len(other) - 1
    # the seq file itself read in blocks of whole lines (the exporter's and the TUI's way) counts the same
    fields = ("overall", "by_service", "by_dest", "top_clients", "distinct_clients", "total", "unattributed")
    assert {f: getattr(blocks, f) for f in fields} == {f: getattr(summary, f) for f in fields}

    states, templates, by_dest, unattributed = _oracle(conns, listing_of([lab.ipvsadm("-Ln", ns=ns)]))
    got_states = Counter(
        {(_name(k), st): n for k, c in summary.by_service.items() for st, n in c.states.items()}
    )
    got_templates = Counter({_name(k): c.templates for k, c in summary.by_service.items() if c.templates})
    got_by_dest = Counter(
        {
            (_name(k), hostport(d.family, d.address, d.port), st): n
            for (k, d), c in summary.by_dest.items()
            for st, n in c.states.items()
        }
    )
    assert got_states == states
    assert got_templates == templates
    assert got_by_dest == by_dest
    assert summary.unattributed == unattributed
    if not sync:
        assert 0 < unattributed < len(conns), "the lab has entries of ambiguous fwmark dests, and others"
        assert any(svc == "TCP  203.0.113.14:0" for svc, _ in states), "no entry of the port-zero service"
    assert summary.overall.conns + summary.overall.templates == len(conns)

    # ip_vs_conn_sync's Origin column, split by hand from the copy read inside the sandwich (a later
    # re-read races with entries expiring)
    sync_lines = lines if sync else other
    origins = Counter(line.split()[8] for line in sync_lines[1:] if line.strip())
    if sync:
        assert origins["SYNC"] > 0, "the backup received nothing through the sync daemon"
        assert dict(summary.overall.origins) == dict(origins), "SYNC entries not recognised as such"
    else:
        assert dict(origins) == {"LOCAL": len(conns)}


def test_daemons_and_timeouts(lab: Lab, sources: dict[str, NetlinkSource]) -> None:
    lab.ipvsadm("--set", "901", "121", "301", ns=MASTER)
    timeouts = {}
    for ns in (MASTER, BACKUP):
        snap = sources[ns].read()
        assert snap.daemons is not None, "netlink sees the sync daemons"
        want = parse_daemons(lab.ipvsadm("-L", "--daemon", ns=ns))
        got = [
            {
                "state": DaemonState(d.state).name.lower(),
                "mcast": d.mcast_ifn,
                "syncid": d.syncid,
                "maxlen": d.maxlen,
                "group": d.group,
                "port": d.port,
                "ttl": d.ttl,
            }
            for d in snap.daemons
        ]
        assert sorted(got, key=str) == sorted(want, key=str), ns
        assert snap.timeouts is not None
        t = snap.timeouts
        timeouts[ns] = (t.tcp, t.tcpfin, t.udp)
        assert timeouts[ns] == parse_timeout(lab.ipvsadm("-L", "--timeout", ns=ns)), ns
        assert len(snap.daemons) == len(want) >= (2 if ns == BACKUP else 1), f"{ns}: daemons {want}"
    assert timeouts == {MASTER: (901, 121, 301), BACKUP: (900, 120, 300)}, "timeouts are per namespace"
