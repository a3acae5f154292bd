"""Issue 14: `lvstop list --json` says which services keepalived or ldirectord manage (`managed_by`);
plain `lvstop list` stays ipvsadm's, byte for byte (tests/unit/test_listing.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from test_listing import sample_snapshot

from lvstop import cli
from lvstop.cli import Environment, main
from lvstop.listing import ListOptions, render
from lvstop.model import Snapshot
from lvstop.sources.sim import SimSource

KEEPALIVED = """\
virtual_server 203.0.113.10 80 {
    protocol TCP
    inhibit_on_failure
    real_server 192.0.2.11 8080 {
        weight 3
    }
}
virtual_server fwmark 1 {
    real_server 192.0.2.11 8080 {
    }
}
"""


def fake_proc(root: Path) -> Path:
    """A /proc with keepalived (pid 40, its config under its own root) and ldirectord (pid 41, whose
    config is missing)."""
    proc = root / "proc"
    (proc / "40/root/etc/keepalived").mkdir(parents=True)
    (proc / "40/comm").write_text("keepalived\n")
    (proc / "40/cmdline").write_bytes(b"keepalived\0--dont-fork\0")
    (proc / "40/root/etc/keepalived/keepalived.conf").write_text(KEEPALIVED)
    (proc / "41").mkdir()
    (proc / "41/comm").write_text("ldirectord\n")
    (proc / "41/cmdline").write_bytes(b"ldirectord\0start\0")
    return proc


def test_json_names_the_manager_of_each_managed_service(tmp_path: Path) -> None:
    snap = sample_snapshot()  # a netlink read: lvstop looks for managers on this host
    err = io.StringIO()
    owned = cli.managed(snap, None, Environment(stderr=err), str(fake_proc(tmp_path)))
    doc = json.loads(render(snap, ListOptions(json=True), managed=owned))
    by = {
        f"{s['key']['address']}:{s['key']['port']}/{s['key']['fwmark']}": s["managed_by"]
        for s in doc["services"]
    }
    assert by["203.0.113.10:80/0"] == [
        {
            "manager": "keepalived",
            "pid": 40,
            "block": "virtual_server 203.0.113.10 80",
            "where": "/etc/keepalived/keepalived.conf:1",
            "keeps_failed": True,
            "undo": "keepalived puts its configured weight back on a reload or restart, and sets a failing "
            "server to weight 0 and back when it recovers",
        }
    ]
    assert by[":0/1"][0]["block"] == "virtual_server fwmark 1"
    assert sum(v is not None for v in by.values()) == 2  # every other service: null, the key is there
    assert "ldirectord (pid 41) is running and its configuration could not be read" in err.getvalue()


def test_demo_json_has_the_key_null_and_looks_for_nobody(tmp_path: Path) -> None:
    out = io.StringIO()
    assert main(["list", "--demo", "--json"], Environment(stdout=out, stderr=io.StringIO())) == 0
    services = json.loads(out.getvalue())["services"]
    assert services and all(s["managed_by"] is None for s in services)
    demo = SimSource(seed=1).read()
    assert cli.managed(demo, None, Environment(), str(fake_proc(tmp_path))) == {}


def test_only_json_looks_managers_up(monkeypatch: pytest.MonkeyPatch, proc_root: str) -> None:
    """Plain ipvsadm-style text has no place for it, and `lvstop list` does not pay for the lookup."""
    asked: list[str] = []

    def looked_up(snap: Snapshot, *_: object) -> dict[object, object]:
        asked.append(snap.source)
        return {}

    monkeypatch.setattr(cli, "managed", looked_up)
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO())
    assert main(["list", "-n", "--source", "proc", "--proc-root", proc_root], env) == 0
    assert asked == [] and "managed" not in env.stdout.getvalue()  # type: ignore[attr-defined]
    assert main(["list", "--json", "--source", "proc", "--proc-root", proc_root], env) == 0
    assert asked == ["proc"]
    assert "managed_by" not in render(sample_snapshot(), ListOptions(json=True))  # recordings, the API
