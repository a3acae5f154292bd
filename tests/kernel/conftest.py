"""Kernel tier fixtures: the lab (built once per session) and the rules that decide where tests run.

Tests marked `kernel` need root and a kernel with IPVS. Inside the qemu guest (LVSTOP_KERNEL_GUEST=1)
anything missing is a failure; elsewhere (a laptop, CI's host) they skip with the reason, and
test_qemu.py runs them in the guest instead. On a real director as root they run directly.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .lab import Lab, build_lab, ipvs_available, traffic_plan

IN_GUEST = os.environ.get("LVSTOP_KERNEL_GUEST") == "1"
RECORD = os.environ.get("LVSTOP_RECORD_FIXTURES") == "1"
# Tests that need ip_vs *not* loaded take this fixture; they must run before anything loads it.
UNLOADED_FIXTURE = "ipvs_never_loaded"


def _why_not_here() -> str | None:
    if IN_GUEST:
        return None
    if os.geteuid() != 0:
        return "kernel tier needs root (run it as root on a director, or via tests/kernel/test_qemu.py)"
    why = ipvs_available()
    if why:
        return f"{why}: the kernel tier runs under qemu instead (tests/kernel/test_qemu.py)"
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "rerecord: re-records tests/fixtures/netlink (runs only with LVSTOP_RECORD_FIXTURES=1)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not RECORD:  # opt-in, and not a skip: it is not part of the tier's verdict
        dropped = [i for i in items if i.get_closest_marker("rerecord")]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = [i for i in items if not i.get_closest_marker("rerecord")]
    reason = _why_not_here()
    for item in items:
        if reason and item.get_closest_marker("kernel"):
            item.add_marker(pytest.mark.skip(reason=reason))
    # stable sort: the "ip_vs not loaded" checks first, before the lab fixture modprobes it
    items.sort(key=lambda i: UNLOADED_FIXTURE not in getattr(i, "fixturenames", ()))


@pytest.fixture(scope="session")
def ipvs_never_loaded() -> None:
    """Guarantees ip_vs is not loaded; on a director where it is, the check cannot be made there."""
    if Path("/sys/module/ip_vs").exists():
        if IN_GUEST:
            pytest.fail("ip_vs was loaded before the 'not loaded' checks ran: test ordering is broken")
        pytest.skip(
            "ip_vs is loaded on this machine; its absence can only be checked in a fresh kernel (qemu)"
        )


@pytest.fixture(scope="session")
def results_dir() -> Path | None:
    """The harness's writable share inside the guest (None when run directly on a director)."""
    r = os.environ.get("LVSTOP_RESULTS")
    return Path(r) if r else None


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    tunnels = IN_GUEST or os.environ.get("LVSTOP_LAB_TUNNELS") == "1"
    lab = build_lab(tunnels=tunnels)
    try:
        lab.traffic = lab.burst(traffic_plan(tunnels=tunnels, sctp=lab.sctp))
        # counters are refreshed by the kernel's estimator every 2 s: wait for one refresh past the traffic
        time.sleep(4.5)
        yield lab
    finally:
        lab.close()
