"""Issue 13: the estimator kthreads of 6.2+ and their sysctls, on the real kernel.

On 6.1 there is no est_cpulist: lvstop reports none (absent, not a default). On 6.12 an empty est_cpulist
stops the namespace's estimator kthread while run_estimation still reads 1: the counters the kernel reports
stop moving under traffic, and lvstop says so (issue on the snapshot, empty cpulist in the exporter).
est_nice restarts the kthread at that nice value.
"""

from __future__ import annotations

import gzip
import subprocess
import time
from pathlib import Path

import pytest

from lvstop.exporter.metrics import Health, Inputs, render_inputs
from lvstop.model import Snapshot
from lvstop.sources.netlink import NetlinkSource
from lvstop.sources.procfs import ESTIMATOR_STOPPED

from .lab import MASTER, Lab

pytestmark = pytest.mark.kernel
VS = Path("/proc/sys/net/ipv4/vs")
VIP = ("203.0.113.10", 80)


def _read(ns: str = MASTER) -> Snapshot:
    source = NetlinkSource(netns=ns)
    try:
        return source.read()
    finally:
        source.close()


def _sysctl(lab: Lab, name: str, value: str | None = None) -> str:
    if value is not None:
        lab.in_ns(MASTER, ["sh", "-c", f"echo '{value}' > {VS / name}"])
    return lab.in_ns(MASTER, ["cat", str(VS / name)]).stdout.strip()


def _counters(lab: Lab) -> str:
    return lab.ipvsadm("-Ln", "--stats", "--exact", "-t", f"{VIP[0]}:{VIP[1]}")


def _traffic(lab: Lab) -> None:
    lab.burst([{"name": "est", "kind": "http", "host": VIP[0], "port": VIP[1], "count": 4, "src": None}])


def _page(snap: Snapshot) -> str:
    return gzip.decompress(render_inputs(Inputs(snap, Health("netlink", True, 0.0, 0.0))).gzip).decode()


def _has_kthreads(lab: Lab) -> bool:
    return lab.in_ns(MASTER, ["test", "-e", str(VS / "est_cpulist")], check=False).returncode == 0


def test_before_6_2_there_is_no_cpulist(lab: Lab) -> None:
    if _has_kthreads(lab):
        snap = _read()
        assert snap.est_cpulist == _sysctl(lab, "est_cpulist")  # as the kernel prints it, e.g. "0-1"
        assert f'lvstop_ipvs_estimator_cpulist_info{{cpulist="{snap.est_cpulist}"}} 1' in _page(snap)
        return
    snap = _read()
    assert snap.est_cpulist is None and "est_nice" not in snap.sysctls
    assert "lvstop_ipvs_estimator_cpulist_info" not in _page(snap)
    assert not [i for i in snap.issues if i.message == ESTIMATOR_STOPPED]


def test_empty_cpulist_freezes_counters_and_lvstop_says_so(lab: Lab) -> None:
    if not _has_kthreads(lab):
        assert _read().est_cpulist is None  # 6.1: the timer estimator, nothing to stop this way
        return
    original = _sysctl(lab, "est_cpulist")
    try:
        assert _sysctl(lab, "est_cpulist", "") == ""
        time.sleep(2.5)  # a refresh that was under way ends
        frozen = _counters(lab)
        _traffic(lab)
        time.sleep(4.5)  # two estimator periods
        assert _counters(lab) == frozen, "counters moved with est_cpulist empty"
        assert _sysctl(lab, "run_estimation") == "1"
        snap = _read()
        assert snap.est_cpulist == "" and snap.sysctls["run_estimation"] == 1
        assert [i.message for i in snap.issues if i.message == ESTIMATOR_STOPPED] == [ESTIMATOR_STOPPED]
        assert 'lvstop_ipvs_estimator_cpulist_info{cpulist=""} 1' in _page(snap)
    finally:
        _sysctl(lab, "est_cpulist", original)
    time.sleep(4.5)
    assert _counters(lab) != frozen, "counters did not catch up once a CPU was listed again"
    assert not [i for i in _read().issues if i.message == ESTIMATOR_STOPPED]
    print(f"[note] est_cpulist '' froze the counters under traffic; restored to {original!r}, they caught up")


def test_est_nice_is_read_and_applies_to_the_kthread(lab: Lab) -> None:
    if not _has_kthreads(lab):
        assert "est_nice" not in _read().sysctls
        return
    original = _sysctl(lab, "est_nice")
    try:
        _sysctl(lab, "est_nice", "5")
        assert _read().sysctls["est_nice"] == 5
        time.sleep(1)  # the kernel restarts the kthread with the new nice value
        ps = subprocess.run(["ps", "-eo", "ni,comm"], capture_output=True, text=True, check=True).stdout
        nices = {line.split()[0] for line in ps.splitlines() if line.split()[-1].startswith("ipvs-e:")}
        assert "5" in nices, ps
    finally:
        _sysctl(lab, "est_nice", original)
