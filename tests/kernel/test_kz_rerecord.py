"""Opt-in (LVSTOP_RECORD_FIXTURES=1, deselected otherwise): re-record tests/fixtures/netlink/main,
mixed and errors on the kernel under test, rebuilding the scenario each folder's own captures
describe (see recording.scenario). Runs last: it reconfigures the lab's directors.

    LVSTOP_RECORD_FIXTURES=1 .venv/bin/python -m pytest -m qemu tests/kernel -s

then review `git diff --stat tests/fixtures` and run the unit tier on the new bytes.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from lvstop.errors import LvstopError
from lvstop.sources.netlink import NetlinkSource

from .lab import BACKUP, CLIENT, MASTER, MIXED, PROGS, SERVERS, Lab, sh
from .recording import (
    FIXTURES,
    MISSING_SERVICE,
    NOT_A_DEST,
    SET_DEST,
    SET_DEST_SERVICE,
    Scenario,
    Tap,
    capture,
    daemon_args,
    record_read,
    scenario,
)

pytestmark = [pytest.mark.kernel, pytest.mark.rerecord]
HERE = Path(__file__).resolve().parent
V4, V6 = ("198.51.100.2", "198.51.100.3"), ("2001:db8:c1::2", "2001:db8:c1::3")
# traffic enough for every case the unit tier's coverage test asks of main/: counters on the :80 and
# :81 services, persistence templates, rates still up when the estimator is stopped
MAIN_TRAFFIC = [
    *(("http", "203.0.113.10", p, 4, V4) for p in (80, 81, 82, 83, 443)),
    ("http", "203.0.113.11", 8080, 3, V4[:1]),
    ("http", "203.0.113.13", 8080, 3, V4[:1]),
    ("http", "203.0.113.12", 80, 3, V4[:1]),
    ("http", "2001:db8::10", 80, 4, V6),
    ("http", "2001:db8::10", 443, 3, V6),
    ("http", "2001:db8::12", 80, 3, V6[:1]),
    ("udp", "203.0.113.10", 53, 3, V4[:1]),
    ("udp", "203.0.113.10", 5060, 2, V4[:1]),
]
HOLD = [("203.0.113.10", 3), ("2001:db8::10", 2)]  # held-open connections (ActiveConn) to port 80


def _apply(lab: Lab, ns: str, sc: Scenario) -> None:
    for state in ("master", "backup"):
        lab.in_ns(ns, ["ipvsadm", "--stop-daemon", state], check=False)
    lab.ipvsadm("-C", ns=ns)
    lab.in_ns(ns, ["ipvsadm", "-R"], input=sc.rules)
    lab.ipvsadm("--set", *map(str, sc.timeouts), ns=ns)
    for d in sc.daemons:
        lab.ipvsadm(*daemon_args(d), ns=ns)
    now = dict(
        line.removeprefix("net.ipv4.vs.").split(" = ", 1)
        for line in lab.in_ns(ns, ["sysctl", "net.ipv4.vs"]).stdout.splitlines()
    )
    for name, value in sc.sysctls.items():
        if name != "run_estimation" and value.split() != now.get(name, "").split():
            lab.in_ns(ns, ["sysctl", "-qw", f"net.ipv4.vs.{name}={value}"])


def _main_network() -> None:
    """The addresses main/'s rules use beyond the lab's own (IPv6 VIPs and real servers)."""
    sh(
        MASTER,
        "ip addr add 2001:db8::10/128 dev vip0 nodad\n"
        "ip addr add 2001:db8::12/128 dev vip0 nodad\n"
        "ip addr add 2001:db8:1::1/64 dev br-rs nodad\n"
        "tc filter add dev cli0 ingress protocol ipv6 flower dst_ip 2001:db8::12 action skbedit mark 2",
    )
    for i, ns in enumerate(SERVERS, 1):
        sh(ns, f"ip addr add 2001:db8:1::1{i}/64 dev eth0 nodad")


def _errors(lab: Lab, out: Path) -> None:
    """errors/: the replies to requests that fail, against the main scenario."""
    out.mkdir(parents=True, exist_ok=True)
    tap = Tap()
    source = NetlinkSource(netns=MASTER, socket_factory=tap.factory)
    try:
        assert source.get_dest(MISSING_SERVICE, SET_DEST) is None
        (out / "dests_missing.bin").write_bytes(tap.reply(-1))
        cur = source.get_dest(SET_DEST_SERVICE, SET_DEST)
        assert cur is not None
        source.set_dest(SET_DEST_SERVICE, cur)
        (out / "set_dest_ack.request.bin").write_bytes(tap.exchanges[-1][0])
        (out / "set_dest_ack.bin").write_bytes(tap.reply(-1))
        with pytest.raises(LvstopError):
            source.set_dest(SET_DEST_SERVICE, dataclasses.replace(cur, address=NOT_A_DEST))
        (out / "set_dest_enoent.request.bin").write_bytes(tap.exchanges[-1][0])
        (out / "set_dest_enoent.bin").write_bytes(tap.reply(-1))
    finally:
        source.close()
    script = str(HERE / "recording.py")
    lab.python(MASTER, script, "esrch", str(out))
    # GET_INFO as nobody, without any capability: EPERM
    scratch = Path(tempfile.mkdtemp())
    scratch.chmod(0o777)
    nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ]
    lab.in_ns(MASTER, [*nobody, "--", sys.executable, script, "eperm", str(scratch)])
    (out / "info_eperm.bin").write_bytes((scratch / "info_eperm.bin").read_bytes())


def test_rerecord_netlink_fixtures(lab: Lab, results_dir: Path | None) -> None:
    out = (results_dir / "fixtures" if results_dir else FIXTURES.parent) / "netlink"
    main, mixed = scenario(FIXTURES / "main"), scenario(FIXTURES / "mixed")
    for ns in (BACKUP, MIXED):  # alone with its services: /proc/net/ip_vs then prints them all
        lab.ipvsadm("-C", ns=ns)
    _main_network()
    _apply(lab, MASTER, main)
    holders = [
        subprocess.Popen(
            ["ip", "netns", "exec", CLIENT, sys.executable, str(PROGS), "hold", host, "80", str(n), "900"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for host, n in HOLD
    ]
    try:
        for h in holders:
            assert h.stdout is not None and h.stdout.readline().startswith("holding"), "could not hold"
        lab.burst(
            [
                {"name": f"{h}:{p}", "kind": k, "host": h, "port": p, "count": n, "src": s}
                for k, h, p, n, srcs in MAIN_TRAFFIC
                for s in srcs
            ]
        )
        # counters refresh every 2 s; then stop the estimator so nothing moves while we record
        time.sleep(3)
        lab.in_ns(MASTER, ["sysctl", "-qw", "net.ipv4.vs.run_estimation=0"])
        snap = record_read(MASTER, out / "main", lambda o: capture(lab, MASTER, o))
        _errors(lab, out / "errors")
    finally:
        lab.in_ns(MASTER, ["sysctl", "-qw", "net.ipv4.vs.run_estimation=1"])
        for h in holders:
            h.terminate()
            h.wait(timeout=30)
    assert any(d.active_conns for s in snap.services for d in s.dests), "no held connection recorded"
    assert any(s.rates and s.rates.inbps for s in snap.services), "rates were already at rest"

    _apply(lab, MIXED, mixed)
    record_read(MIXED, out / "mixed", lambda o: capture(lab, MIXED, o))
    noipvs = out / "errors" / "ctrl_families_noipvs.bin"
    assert noipvs.exists() or not os.environ.get("LVSTOP_KERNEL_GUEST"), (
        "test_k0 records it before ip_vs loads"
    )
    print(f"[note] re-recorded {out}/main, mixed and errors")
