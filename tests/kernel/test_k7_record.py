"""Item 7: record this kernel's netlink replies and /proc files for the unit tier, and prove lvstop
decodes the recorded bytes to what it reads live.

Every run records into a scratch directory (the harness's results share inside qemu, brought back to
the host). The committed fixtures change only on request: LVSTOP_RECORD_FIXTURES=1 makes test_qemu.py
copy the recording into tests/fixtures (or, run directly on a director, writes them there).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest

from lvstop.sources import wire
from lvstop.sources.netlink import NetlinkSource

from .compare import sandwich
from .lab import DIRECTORS, HERE, Lab
from .oracle import service_name

pytestmark = pytest.mark.kernel
T = TypeVar("T")

REPO_FIXTURES = HERE.parent / "fixtures"
NETLINK_DIR = "netlink/lab-6.1"  # tests/fixtures/<this>/<director>/*.bin + index.json
PROC_DIR = "proc/lab-6.1"  # tests/fixtures/<this>/<director>/{net/*, sys/net/ipv4/vs/*, ipvsadm-*.txt}
PROC_FILES = ("ip_vs", "ip_vs_stats", "ip_vs_conn", "ip_vs_conn_sync")
ORACLE = {
    "ipvsadm-Ln.txt": ("-Ln",),
    "ipvsadm-Ln-stats-exact.txt": ("-Ln", "--stats", "--exact"),
    "ipvsadm-Ln-rate-exact.txt": ("-Ln", "--rate", "--exact"),
    "ipvsadm-Lnc.txt": ("-Lnc",),
    "ipvsadm-Ln-thresholds.txt": ("-Ln", "--thresholds"),
    "ipvsadm-Ln-tun-info.txt": ("-Ln", "--tun-info"),
    "ipvsadm-Ln-persistent-conn.txt": ("-Ln", "--persistent-conn"),
    "ipvsadm-daemon.txt": ("-L", "--daemon"),
    "ipvsadm-timeout.txt": ("-L", "--timeout"),
}


@pytest.fixture
def target(results_dir: Path | None, tmp_path: Path) -> Path:
    if results_dir is not None:
        return results_dir / "fixtures"
    if os.environ.get("LVSTOP_RECORD_FIXTURES") == "1":
        return REPO_FIXTURES
    return tmp_path / "fixtures"


def _record(lab: Lab, ns: str, target: Path) -> dict[str, object]:
    out = target / NETLINK_DIR / ns
    shutil.rmtree(out, ignore_errors=True)
    p = lab.python(ns, str(HERE / "nlrecord.py"), str(out))
    index: dict[str, object] = json.loads(p.stdout)
    proc = target / PROC_DIR / ns
    shutil.rmtree(proc, ignore_errors=True)
    (proc / "net").mkdir(parents=True)
    for name in PROC_FILES:
        shutil.copyfile(f"{lab.proc_root(ns)}/net/{name}", proc / "net" / name)
    # sysctls are per namespace and only visible from inside it
    sysctls = lab.in_ns(ns, ["sh", "-c", "cd /proc/sys/net/ipv4/vs && grep -r . ."]).stdout
    vs = proc / "sys/net/ipv4/vs"
    vs.mkdir(parents=True)
    for line in sysctls.splitlines():
        name, _, value = line.removeprefix("./").partition(":")
        (vs / name).write_text(value + "\n")
    for fname, mode in ORACLE.items():
        (proc / fname).write_text(lab.ipvsadm(*mode, ns=ns))
    return index


@pytest.mark.parametrize("ns", DIRECTORS)
def test_recorded_replies_decode_like_the_live_read(lab: Lab, target: Path, ns: str) -> None:
    source = NetlinkSource(netns=ns)
    try:
        # a moment when no connection comes or goes, so the recording and the live read see one table
        # (rates still decay every 2 s: they are compared live against ipvsadm in test_k1_fields)
        _, (index, live), _ = sandwich(
            lab,
            ns,
            [("-Ln", "--stats", "--exact"), ("-Ln", "--persistent-conn")],
            lambda: (_record(lab, ns, target), source.read()),
        )
    finally:
        source.close()
    rec = target / NETLINK_DIR / ns
    family = int(index["family_id"])  # type: ignore[call-overload]
    services = wire.decode_services((rec / "services.bin").read_bytes(), family)
    assert [s.key for s in services] == [s.key for s in live.services]
    assert [_no_rates(s) for s in services] == [_no_rates(replace(s, dests=())) for s in live.services]
    dests: dict[str, str] = index["dests"]  # type: ignore[assignment]
    by_name = {
        service_name(s.key.protocol.name, s.key.family, s.key.address, s.key.port, s.key.fwmark): s
        for s in live.services
    }
    assert len(dests) == len(live.services)
    for fname, svc in dests.items():
        decoded = wire.decode_dests((rec / f"{fname}.bin").read_bytes(), family, by_name[svc].key.family)
        assert list(map(_no_rates, decoded)) == list(map(_no_rates, by_name[svc].dests)), svc
    assert wire.decode_daemons((rec / "daemons.bin").read_bytes(), family) == list(live.daemons)
    assert wire.decode_config((rec / "config.bin").read_bytes(), family) == live.timeouts
    assert wire.decode_info((rec / "info.bin").read_bytes(), family) == (live.version, live.conn_tab_size)
    print(f"{ns}: recorded {len(dests) + 4} netlink replies into {rec}", file=sys.stderr)


def _no_rates(x: T) -> T:
    return replace(x, rates=None)  # type: ignore[type-var]
