"""The last phase: one director alone with IPVS services (the others flushed).

Kernel 6.1's /proc/net/ip_vs drops services after its first page when other network namespaces also
have IPVS services (see compare.check_procsource), so the whole-table /proc checks run here,
after every other test: ProcSource over the whole table (item 1), and item 6's missing
CAP_NET_ADMIN, where lvstop falls back to /proc and marks what it cannot see.
"""

from __future__ import annotations

import sys

import pytest

from lvstop import codec
from lvstop.model import IssueKind

from .compare import PROC_FIELDS, STATIC_MODES, assert_proc_marks_unseen, check_procsource, listing_of
from .lab import BACKUP, MASTER, MIXED, Lab
from .oracle import differences, snapshot_listing

pytestmark = pytest.mark.kernel

# drop CAP_NET_ADMIN for good: out of the bounding set, so not even root's exec gets it back
NO_NET_ADMIN = ["setpriv", "--bounding-set=-net_admin", "--inh-caps=-all", "--"]
EXIT_NO_PERMISSION = 4


@pytest.fixture(scope="module")
def alone(lab: Lab) -> Lab:
    for ns in (BACKUP, MIXED):
        lab.ipvsadm("-C", ns=ns)
    return lab


def test_procsource_reads_the_whole_table(alone: Lab) -> None:
    check_procsource(alone, MASTER, whole_table=True)


def test_without_cap_net_admin_lvstop_falls_back_to_proc(alone: Lab) -> None:
    lab = alone
    lvstop = [*NO_NET_ADMIN, sys.executable, "-m", "lvstop", "list"]
    # the capability really is gone: ipvsadm itself cannot read any more
    assert lab.in_ns(MASTER, [*NO_NET_ADMIN, "ipvsadm", "-Ln"], check=False).returncode != 0

    p = lab.in_ns(MASTER, [*lvstop, "--json"], check=False, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "CAP_NET_ADMIN" in p.stderr and "/proc" in p.stderr, f"the fallback must be announced: {p.stderr}"
    snap = codec.loads(p.stdout)
    assert snap.source == "proc"
    assert any(i.kind is IssueKind.UNAVAILABLE for i in snap.issues), "what /proc cannot show must be marked"
    assert_proc_marks_unseen(snap)
    # active/inactive counts move as connections expire: compared in the sandwiched ProcSource check
    expected = listing_of([lab.ipvsadm(*m, ns=MASTER) for m in STATIC_MODES.values()])
    diffs = differences(expected, snapshot_listing(snap), fields=PROC_FIELDS - {"active", "inactive"})
    assert not diffs, "the /proc fallback differs from ipvsadm:\n" + "\n".join(diffs)

    p = lab.in_ns(MASTER, [*lvstop, "--source", "netlink"], check=False, timeout=300)
    assert p.returncode == EXIT_NO_PERMISSION, (p.returncode, p.stderr)
    assert "CAP_NET_ADMIN" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
