"""Item 1: every field of every service and dest that NetlinkSource reads equals ipvsadm's, and
ProcSource agrees with ipvsadm on everything /proc shows (and marks the rest unseen)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lvstop.model import EXPLAINING_SYSCTLS
from lvstop.sources.netlink import NetlinkSource

from .compare import RATE_MODE, STATIC_MODES, check_procsource, listing_of, sandwich
from .lab import DIRECTORS, MASTER, Lab
from .oracle import differences, snapshot_listing

pytestmark = pytest.mark.kernel

RATE_FIELDS = {"cps", "inpps", "outpps", "inbps", "outbps"}


@pytest.fixture(scope="module")
def netlink(lab: Lab) -> Iterator[dict[str, NetlinkSource]]:
    sources = {ns: NetlinkSource(netns=ns) for ns in DIRECTORS}
    yield sources
    for s in sources.values():
        s.close()


def _nonzero(listing_fields: list[dict[str, object]], names: set[str]) -> bool:
    return any(isinstance(f.get(n), int) and f.get(n) for f in listing_fields for n in names)


@pytest.mark.parametrize("ns", DIRECTORS)
def test_netlink_fields_equal_ipvsadm(lab: Lab, netlink: dict[str, NetlinkSource], ns: str) -> None:
    source = netlink[ns]
    texts, snap, _ = sandwich(lab, ns, list(STATIC_MODES.values()), source.read)
    expected = listing_of(texts)
    got = snapshot_listing(snap)
    assert not snap.issues, f"a healthy read has no issues: {snap.issues}"
    diffs = differences(expected, got)  # ipvsadm's static modes carry no rate columns
    assert not diffs, f"{ns}: lvstop's netlink read differs from ipvsadm:\n" + "\n".join(diffs)
    # the lab really is what it claims to be: services, dests, and traffic through the master
    assert len(expected.services) >= (20 if ns != "lvt-dx" else 2)
    if ns == MASTER:
        fields = list(expected.services.values())
        assert _nonzero(fields, {"conns", "inpkts", "outbytes"}), "no traffic reached the master"

    rate_texts, snap, _ = sandwich(lab, ns, [RATE_MODE], source.read, after_tick=True)
    expected = listing_of(rate_texts)
    diffs = differences(expected, snapshot_listing(snap), fields=RATE_FIELDS)
    assert not diffs, f"{ns}: lvstop's kernel rates differ from ipvsadm --rate:\n" + "\n".join(diffs)
    if ns == MASTER:
        assert _nonzero(list(expected.services.values()), RATE_FIELDS), (
            "rates all zero: comparison is vacuous"
        )


def test_netlink_sysctls_and_info(lab: Lab, netlink: dict[str, NetlinkSource]) -> None:
    """The sysctls that explain traffic behaviour are read from the director's own namespace."""
    lab.in_ns(MASTER, ["sysctl", "-qw", "net.ipv4.vs.expire_nodest_conn=1", "net.ipv4.vs.sloppy_tcp=1"])
    snap = netlink[MASTER].read()
    for name in EXPLAINING_SYSCTLS:
        want = int(lab.in_ns(MASTER, ["sysctl", "-n", f"net.ipv4.vs.{name}"]).stdout)
        assert snap.sysctls.get(name) == want, f"{name}: lvstop {snap.sysctls.get(name)} sysctl {want}"
    assert snap.sysctls["expire_nodest_conn"] == 1 and snap.sysctls["sloppy_tcp"] == 1
    head = lab.ipvsadm("-Ln", ns=MASTER).splitlines()[0]
    assert head == f"IP Virtual Server version {snap.version} (size={snap.conn_tab_size})"


@pytest.mark.parametrize("ns", DIRECTORS)
def test_procsource_agrees_on_what_it_sees(lab: Lab, ns: str) -> None:
    snap = check_procsource(lab, ns, whole_table=False)
    # the totals line of /proc/net/ip_vs_stats: lvstop's hex parse against our own
    with open(f"{lab.proc_root(ns)}/net/ip_vs_stats") as f:
        words = f.read().split("\n")[2].split()
    assert snap.totals is not None
    assert (snap.totals.conns, snap.totals.inpkts, snap.totals.outpkts) == tuple(
        int(w, 16) for w in words[:3]
    )
