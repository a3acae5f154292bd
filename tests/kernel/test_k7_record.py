"""Item 7: record this kernel's netlink replies and /proc files for the unit tier, and prove lvstop
decodes the recorded bytes to what it reads live.

The recorder (nlrecord.py) shares no code with lvstop.sources, so lvstop decoding its bytes to what
lvstop reads live proves the decoder, not a replay of itself. Every run records into a scratch
directory (the harness's results share inside qemu, brought back to the host). The committed
fixtures change only on request: LVSTOP_RECORD_FIXTURES=1 makes test_qemu.py copy the recording into
tests/fixtures (or, run directly on a director, writes them there); test_kz_rerecord.py then also
re-records the netlink README's main/, mixed/ and errors/ folders.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lvstop.listing import ListOptions
from lvstop.listing import render as listing
from lvstop.sources import wire
from lvstop.sources.netlink import NetlinkSource

from .compare import sandwich
from .lab import BACKUP, DIRECTORS, HERE, MASTER, MIXED, Lab
from .recording import capture

pytestmark = pytest.mark.kernel
T = TypeVar("T")

REPO_FIXTURES = HERE.parent / "fixtures"
# tests/fixtures/netlink/<folder>: same layout as the netlink README's main/ and mixed/, plus the
# connection tables (proc-ip_vs_conn*.txt, ipvsadm-Lnc.txt)
FOLDERS = {MASTER: "lab-master", BACKUP: "lab-backup", MIXED: "lab-mixed"}


@pytest.fixture
def target(results_dir: Path | None, tmp_path: Path) -> Path:
    if results_dir is not None:
        return results_dir / "fixtures"
    if os.environ.get("LVSTOP_RECORD_FIXTURES") == "1":
        return REPO_FIXTURES
    return tmp_path / "fixtures"


def _record(lab: Lab, ns: str, out: Path) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    index: dict[str, Any] = json.loads(lab.python(ns, str(HERE / "nlrecord.py"), str(out)).stdout)
    capture(lab, ns, out, conns=True)
    return index


@pytest.mark.parametrize("ns", DIRECTORS)
def test_recorded_replies_decode_like_the_live_read(lab: Lab, target: Path, ns: str) -> None:
    rec = target / "netlink" / FOLDERS[ns]
    source = NetlinkSource(netns=ns)
    try:
        # a moment when no connection comes or goes, so the recording and the live read see one table
        # (rates still decay every 2 s: they are compared live against ipvsadm in test_k1_fields)
        _, (index, live), _ = sandwich(
            lab,
            ns,
            [("-Ln", "--stats", "--exact"), ("-Ln", "--persistent-conn")],
            lambda: (_record(lab, ns, rec), source.read()),
        )
    finally:
        source.close()
    family = int(index["family_id"])
    services = wire.decode_services((rec / "services.bin").read_bytes(), family)
    assert [_no_rates(s) for s in services] == [_no_rates(replace(s, dests=())) for s in live.services]
    assert [e["service"] for e in index["services"]] == [str(s.key) for s in live.services]
    for entry, svc in zip(index["services"], live.services, strict=True):
        decoded = wire.decode_dests((rec / entry["dests"]).read_bytes(), family, svc.key.family)
        assert list(map(_no_rates, decoded)) == list(map(_no_rates, svc.dests)), entry["service"]
    recheck = wire.decode_services((rec / "services-recheck.bin").read_bytes(), family)
    assert [s.key for s in recheck] == [s.key for s in live.services]
    assert wire.decode_daemons((rec / "daemons.bin").read_bytes(), family) == (
        ["unseen"] if live.daemons is None else list(live.daemons)
    )
    assert wire.decode_config((rec / "config.bin").read_bytes(), family) == live.timeouts
    assert wire.decode_info((rec / "info.bin").read_bytes(), family) == (live.version, live.conn_tab_size)
    # the listing captured beside the replies is the one the recorded bytes decode to
    assert listing(live, ListOptions()) == (rec / "ipvsadm-Ln.txt").read_text()


def _no_rates(x: T) -> T:
    return replace(x, rates=None)  # type: ignore[type-var]
