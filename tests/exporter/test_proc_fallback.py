"""An exporter reading /proc (no CAP_NET_ADMIN) exports what /proc shows and nothing it cannot see."""

from __future__ import annotations

import re
from pathlib import Path

from fakes import FakeNetlink

from lvstop.errors import SourceError
from lvstop.model import IssueKind
from lvstop.sources.factory import open_source

from .support import start_exporter


def test_after_auto_falls_back_to_proc_unseen_fields_are_absent_and_the_source_is_proc(
    netlink: type[FakeNetlink], proc_root: str, tmp_path: Path
) -> None:
    netlink.fail_read = SourceError(IssueKind.NO_PERMISSION, "netlink needs CAP_NET_ADMIN")
    source = open_source("auto", proc_root=proc_root, warn=lambda _: None)
    h = start_exporter(tmp_path, write=False, source=source)
    try:
        h.poll()
        page = h.get("/metrics").body.decode()
        # The sample has thresholds and tunnel types /proc cannot show: no series, never a 0 or "ipip".
        assert "_threshold{" not in page
        tunnel = [x for x in page.splitlines() if x.startswith("lvstop_ipvs_backend_info{")]
        tunnel = [x for x in tunnel if 'forwarding="tunnel"' in x]
        assert len(tunnel) == 2 and all('tunnel_type=""' in x for x in tunnel), tunnel
        assert "lvstop_ipvs_sync_daemon" not in page  # not "0 running": /proc cannot see them
        assert re.search(r'^lvstop_build_info\{[^}]*source="proc"', page, re.M), page[:400]
        status = h.get("/api/v1/status").json()
        assert status["source"] == "proc"
        assert any("sync daemons" in w for w in status["warnings"])
        snap = h.get("/api/v1/snapshot").json()
        assert snap["source"] == "proc" and snap["daemons"] is None
        dest = snap["services"][0]["dests"][0]
        assert [dest[k] for k in ("u_threshold", "l_threshold", "tun_type", "tun_port", "tun_flags")] == [
            None
        ] * 5
    finally:
        h.running.stop()
