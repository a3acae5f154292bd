"""Fixtures shared by every test folder: a fake NetlinkSource in place of the real one, a /proc root."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from fakes import FakeNetlink
from hypothesis import HealthCheck, settings

# Properties, not timings: how loaded the (shared) machine is must not fail a property test.
settings.register_profile("lvstop", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("lvstop")

SAMPLE = Path(__file__).resolve().parent / "fixtures" / "listing" / "sample-6.1"


@pytest.fixture
def netlink(monkeypatch: pytest.MonkeyPatch) -> type[FakeNetlink]:
    """lvstop.sources.netlink.NetlinkSource is a fresh FakeNetlink subclass (set fail_* on it)."""
    cls = type("NetlinkSource", (FakeNetlink,), {})
    module = types.ModuleType("lvstop.sources.netlink")
    module.NetlinkSource = cls  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lvstop.sources.netlink", module)
    return cls


@pytest.fixture
def proc_root(tmp_path: Path) -> str:
    """A /proc with the 6.1 sample's ip_vs and ip_vs_stats."""
    net = tmp_path / "net"
    net.mkdir()
    for name in ("ip_vs", "ip_vs_stats"):
        (net / name).write_text((SAMPLE / f"proc-{name}.txt").read_text().partition("\n")[2])
    return str(tmp_path)
