"""Issue 14: keepalived from Debian (health checker only, no VRRP) manages one service in the master
director's namespace; lvstop's edits of that service warn, naming keepalived's block and how it will undo
the edit, and edits of any other service (or of another namespace's IPVS) do not."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lvstop.control import Control, detect_weight_managers
from lvstop.events import DRAIN_CLOSED
from lvstop.exporter.core import CountingSource, Exporter, WatchingEventLog
from lvstop.model import AF_INET, DestKey, ServiceKey
from lvstop.poller import Poller
from lvstop.sources.netlink import NetlinkSource

from .lab import MASTER, MIXED, RS4, SERVERS, Lab

pytestmark = pytest.mark.kernel

VIP, PORT = "203.0.113.40", 8090
SERVICE = ServiceKey.tcp(VIP, PORT)
RS1, RS2 = RS4[SERVERS[0]], RS4[SERVERS[1]]
UP = {f"{RS1}:{PORT}": 3, f"{RS2}:{PORT}": 2}  # both servers up at their configured weights
CONF = f"""! lvstop kernel tier: checker only
global_defs {{
    router_id lvstop-lab
}}

virtual_server {VIP} {PORT} {{
    delay_loop 1
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server {RS1} {PORT} {{
        weight 3
        TCP_CHECK {{
            connect_timeout 3
            retry 2
            delay_before_retry 1
        }}
    }}
    real_server {RS2} {PORT} {{
        weight 2
        inhibit_on_failure
        TCP_CHECK {{
            connect_timeout 3
            retry 2
            delay_before_retry 1
        }}
    }}
}}
"""


_LISTENERS: dict[str, subprocess.Popen[bytes]] = {}  # real server namespace -> its listener on PORT


def _listen(ns: str, addr: str) -> subprocess.Popen[bytes]:
    argv = [
        "ip",
        "netns",
        "exec",
        ns,
        "timeout",
        "600",
        "python3",
        "-m",
        "http.server",
        str(PORT),
        "--bind",
        addr,
    ]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_listening(lab: Lab, ns: str, addr: str) -> None:
    """Until the real server accepts on PORT: keepalived adds its servers as up and would remove one whose
    first check met a listener still starting (python's start-up takes seconds under TCG)."""
    deadline = time.monotonic() + 120
    while not lab.in_ns(ns, ["ss", "-Hltn", f"src {addr}:{PORT}"], check=False).stdout.strip():
        assert _LISTENERS[ns].poll() is None, f"the listener in {ns} exited"
        assert time.monotonic() < deadline, f"nothing listens on {addr}:{PORT} in {ns}"
        time.sleep(0.5)


def _weights(lab: Lab) -> dict[str, int]:
    """{address:port: weight} of the managed service as `ipvsadm -Ln` lists it ({} while it is missing)."""
    out = lab.in_ns(MASTER, ["ipvsadm", "-Ln", "-t", f"{VIP}:{PORT}"], check=False).stdout
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("->")]
    return {r[1]: int(r[3]) for r in rows if r[1][0].isdigit()}


@pytest.fixture(scope="module")
def keepalived(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    if shutil.which("keepalived") is None:
        pytest.fail("keepalived is not installed (apt-get install keepalived): the kernel tier needs it")
    d = tmp_path_factory.mktemp("keepalived")
    conf = d / "keepalived.conf"
    conf.write_text(CONF)
    _LISTENERS.update({SERVERS[0]: _listen(SERVERS[0], RS1), SERVERS[1]: _listen(SERVERS[1], RS2)})
    _wait_listening(lab, SERVERS[0], RS1)
    _wait_listening(lab, SERVERS[1], RS2)
    argv = [
        "ip",
        "netns",
        "exec",
        MASTER,
        "keepalived",
        "--check",
        "--dont-fork",
        "--log-console",
        "-f",
        str(conf),
        "-p",
        str(d / "k.pid"),
        "-c",
        str(d / "c.pid"),
    ]
    with open(d / "log", "wb") as log:
        ka = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while _weights(lab) != UP:
            assert ka.poll() is None, f"keepalived exited: {(d / 'log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"keepalived never set up {SERVICE}: {_weights(lab)}"
            time.sleep(0.5)
        pid = int((d / "k.pid").read_text())
        yield pid, conf
    finally:
        ka.send_signal(signal.SIGTERM)
        try:
            ka.wait(timeout=30)
        except subprocess.TimeoutExpired:
            ka.kill()
            ka.wait()
        for s in _LISTENERS.values():
            s.terminate()
            s.wait(timeout=30)
        _LISTENERS.clear()
        lab.in_ns(MASTER, ["ipvsadm", "-D", "-t", f"{VIP}:{PORT}"], check=False)  # if keepalived left it


def _warnings(ns: str, skey: ServiceKey, dkey: DestKey, tmp_path: Path) -> tuple[str, ...]:
    source = NetlinkSource(netns=ns)
    try:
        ctl = Control(source, tmp_path / f"drains-{ns}.json")
        return ctl.set_weight(skey, dkey, 1, dry_run=True, actor="kernel-tier").warnings
    finally:
        source.close()


def test_only_the_managed_service_warns(keepalived: tuple[int, Path], tmp_path: Path) -> None:
    pid, conf = keepalived
    assert ("keepalived", pid) in detect_weight_managers()
    (warning,) = [
        w for w in _warnings(MASTER, SERVICE, DestKey(AF_INET, RS1, PORT), tmp_path) if "keepalived" in w
    ]
    assert warning.startswith(
        f"keepalived (pid {pid}) manages {SERVICE} (virtual_server {VIP} {PORT}, {conf}:6)"
    )
    assert "weight 3 back on a reload or restart" in warning
    assert "sets a failing server to weight 0" in warning  # inhibit_on_failure on one of its servers
    other = _warnings(MASTER, ServiceKey.tcp("203.0.113.10", 80), DestKey(AF_INET, RS1, 8080), tmp_path)
    assert not [w for w in other if "keepalived" in w], other
    # the mixed director is another network namespace: keepalived there manages nothing of it
    mixed = _warnings(MIXED, ServiceKey.tcp("2001:db8:113::13", 8080), DestKey(AF_INET, RS2, 8080), tmp_path)
    assert not [w for w in mixed if "keepalived" in w], mixed
    assert os.path.exists(conf)


def test_list_json_names_the_manager_of_that_service_only(lab: Lab, keepalived: tuple[int, Path]) -> None:
    """`lvstop list --json` in the master's namespace: managed_by on keepalived's service, null elsewhere."""
    pid, conf = keepalived
    p = lab.in_ns(MASTER, [sys.executable, "-m", "lvstop", "list", "--json"], check=False, timeout=300)
    assert p.returncode == 0, p.stderr
    by = {(s["key"]["address"], s["key"]["port"]): s["managed_by"] for s in json.loads(p.stdout)["services"]}
    ((manager),) = by.pop((VIP, PORT))
    assert (manager["manager"], manager["pid"], manager["block"], manager["where"]) == (
        "keepalived",
        pid,
        f"virtual_server {VIP} {PORT}",
        f"{conf}:6",
    )
    assert manager["keeps_failed"] is True  # inhibit_on_failure on rs2
    assert by and all(v is None for v in by.values()), by


def _wait(what: str, cond: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _declared_down(log: Path, addr: str) -> int:
    """How often keepalived's log says a check of `addr` failed for good ("... failed after N retries")."""
    return sum(f"[{addr}]" in line and "failed after" in line for line in log.read_text().splitlines())


def test_keepalived_undoing_a_drain_is_seen_whatever_the_path(
    lab: Lab, keepalived: tuple[int, Path], tmp_path: Path
) -> None:
    """rs1 (no inhibit_on_failure): keepalived removes it when its check fails and adds it back at weight 3;
    rs2 (inhibit_on_failure): weight 0 on failure and 2 again. Both undo an lvstop drain: a drain_closed
    event, one count each in the external-change metric, no drain record left; only weights changed."""
    _, conf = keepalived
    log = conf.with_name("log")
    saved = lab.ipvsadm("-S", "-n")
    events = WatchingEventLog()
    source = NetlinkSource(netns=MASTER)
    poller = Poller(source, interval=1.0, events=events)
    control = Control(source, tmp_path / "drains.json", events, latest=lambda: poller.latest)
    exporter = Exporter(poller, CountingSource(source, lambda: None), events, control=control)
    poller.start()
    try:
        for dest_addr, server in ((RS1, SERVERS[0]), (RS2, SERVERS[1])):
            dkey = DestKey(AF_INET, dest_addr, PORT)
            _wait("keepalived to have both servers up", lambda: _weights(lab) == UP)  # else the guard refuses
            res = control.drain(SERVICE, dkey, actor="kernel-tier", reason="issue 14")
            assert res.outcome == "applied" and (SERVICE, dkey) in control.drains()
            seen = _declared_down(log, dest_addr)
            listener = _LISTENERS.pop(server)
            listener.terminate()
            listener.wait(timeout=30)

            def gone(d: str = dest_addr) -> bool:
                return f"{d}:{PORT}" not in _weights(lab)

            def closed_and_counted(k: DestKey = dkey) -> bool:
                # reconcile saves the record's removal before it appends the event: wait for all three
                closed = any(e.kind == DRAIN_CLOSED and e.dest == k for e in events.recent())
                gone = (SERVICE, k) not in control.drains()
                return closed and gone and events.external.get((SERVICE, k)) == 1

            if dest_addr == RS1:  # keepalived's default undo: the failing server is removed ...
                _wait(f"keepalived to remove {dkey}", gone)
            else:
                # inhibit_on_failure sets weight 0, which lvstop's drain already set: nothing to see in IPVS,
                # so keepalived's own log says when it has declared the server down
                def declared(n: int = seen) -> bool:
                    return _declared_down(log, RS2) > n

                _wait(f"keepalived to declare {dkey} down", declared)
            _LISTENERS[server] = _listen(server, dest_addr)  # ... and comes back at its configured weight
            _wait(f"the drain of {dkey} to be closed and counted", closed_and_counted, seconds=120)
            closed = [e for e in events.recent() if e.kind == DRAIN_CLOSED and e.dest == dkey]
            assert len(closed) == 1 and "undone outside lvstop" in closed[0].message
        page = gzip.decompress(exporter.metrics_page().gzip).decode()
        undone = [
            x for x in page.splitlines() if x.startswith("lvstop_ipvs_backend_external_weight_changes_total{")
        ]
        assert len(undone) == 2 and all(x.endswith(" 1") for x in undone), undone
    finally:
        poller.stop()
        source.close()
    assert _weights(lab) == UP
    assert lab.ipvsadm("-S", "-n") == saved  # keepalived put back exactly what it had
