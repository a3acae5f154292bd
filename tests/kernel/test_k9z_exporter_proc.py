"""The exporter without CAP_NET_ADMIN (issue 12 item 1): it reads /proc, says so, and exports nothing
/proc cannot see: no threshold series, no tunnel type, no sync-daemon count, while the same exporter
with the capability exports all three. Runs after test_k9_single (the director alone: 6.1's /proc drops
services after its first page while other namespaces have some)."""

from __future__ import annotations

import json
import re
import sys

import pytest

from .lab import BACKUP, MASTER, MIXED, Lab
from .test_k9_single import NO_NET_ADMIN

pytestmark = pytest.mark.kernel

# Starts the exporter in-process on a free loopback port, waits for a poll, prints /metrics and status.
SCRIPT = """
import json, sys, time, urllib.request
from lvstop.exporter.main import build_parser, start
from lvstop.sources.factory import open_source
args = build_parser().parse_args(["--source", "auto", "--web.listen-address", "127.0.0.1:0",
    "--drain-state", sys.argv[1], "--no-collector.conntable"])
running = start(args, open_source("auto", warn=lambda m: print(m, file=sys.stderr)))
deadline = time.monotonic() + 60
while running.poller.latest is None and time.monotonic() < deadline:
    time.sleep(0.1)
url = running.servers[0].url
page = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
status = json.loads(urllib.request.urlopen(url + "/api/v1/status", timeout=30).read())
running.stop()
print(json.dumps({"page": page, "status": status}))
"""


@pytest.fixture(scope="module")
def alone(lab: Lab) -> Lab:
    for ns in (BACKUP, MIXED):
        lab.ipvsadm("-C", ns=ns)
    return lab


def _export(lab: Lab, tmp: str, *, net_admin: bool) -> tuple[str, dict[str, object]]:
    argv = [*([] if net_admin else NO_NET_ADMIN), sys.executable, "-c", SCRIPT, f"{tmp}/drains.json"]
    p = lab.in_ns(MASTER, argv, check=False, timeout=300)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    return out["page"], out["status"]


def _series(page: str, name: str) -> list[str]:
    return [line for line in page.splitlines() if line.startswith(name + "{") or line.startswith(name + " ")]


def test_without_cap_net_admin_the_exporter_exports_only_what_proc_shows(
    alone: Lab, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = str(tmp_path_factory.mktemp("k9z"))
    assert "gue" in alone.ipvsadm("-Ln", "--tun-info")  # the director has GUE and GRE dests
    page, status = _export(alone, tmp, net_admin=True)
    assert status["source"] == "netlink"
    assert re.search(r'^lvstop_build_info\{[^}]*source="netlink"', page, re.M)
    assert _series(page, "lvstop_ipvs_backend_upper_threshold"), "netlink shows thresholds"
    assert any('tunnel_type="gue"' in x for x in _series(page, "lvstop_ipvs_backend_info"))
    assert 'lvstop_ipvs_sync_daemons{state="master"} 1' in page

    page, status = _export(alone, tmp, net_admin=False)
    assert status["source"] == "proc" and re.search(r'^lvstop_build_info\{[^}]*source="proc"', page, re.M)
    assert not _series(page, "lvstop_ipvs_backend_upper_threshold")
    assert not _series(page, "lvstop_ipvs_backend_lower_threshold")
    tunnels = [x for x in _series(page, "lvstop_ipvs_backend_info") if 'forwarding="tunnel"' in x]
    assert tunnels and all('tunnel_type=""' in x for x in tunnels), tunnels
    assert not _series(page, "lvstop_ipvs_sync_daemons"), "a running master must not be exported as 0"
    assert not _series(page, "lvstop_ipvs_sync_daemon_info")
