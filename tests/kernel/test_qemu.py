"""The kernel tier under qemu: boot a stock Debian kernel with IPVS, run `pytest -m kernel` inside it,
and report every in-guest test here. A guest that does not boot or finish fails with its console.

Knobs (environment): LVSTOP_KERNEL_TIMEOUT (seconds, default 840), LVSTOP_KERNEL_PYTEST_ARGS (extra
in-guest pytest arguments, e.g. "-k churn"), LVSTOP_RECORD_FIXTURES=1 (copy the kernel's recorded
netlink replies and /proc files into tests/fixtures).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys

import pytest

from . import harness

pytestmark = pytest.mark.qemu

RESULTS = harness.CACHE_DIR / "results"


def _missing() -> list[str]:
    missing = []
    if shutil.which(harness.QEMU) is None:
        missing.append(f"{harness.QEMU} (apt-get install qemu-system-x86)")
    if harness.find_kernel() is None:
        missing.append("a Debian kernel with IPVS modules (apt-get install linux-image-amd64)")
    for tool, pkg in (("ipvsadm", "ipvsadm"), ("busybox", "busybox-static"), ("modprobe", "kmod")):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (apt-get install {pkg})")
    if not (harness.REPO / ".venv/bin/python").exists():
        missing.append(f"the project's virtualenv at {harness.REPO / '.venv'}")
    return missing


def test_kernel_tier_in_qemu() -> None:
    missing = _missing()
    if missing:
        message = "kernel tier cannot run, missing: " + "; ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message)  # CI must never pass without the kernel tier
        pytest.skip(message)
    kernel = harness.find_kernel()
    assert kernel is not None
    initrd = harness.build_initramfs(kernel)
    env = {k: v for k, v in os.environ.items() if k in ("LVSTOP_RECORD_FIXTURES", "CI")}
    extra = shlex.split(os.environ.get("LVSTOP_KERNEL_PYTEST_ARGS", ""))
    timeout = float(os.environ.get("LVSTOP_KERNEL_TIMEOUT", "840"))
    shutil.rmtree(RESULTS, ignore_errors=True)
    run = harness.run_guest(kernel, initrd, harness.guest_script(extra, env), RESULTS, timeout=timeout)
    print(
        f"\nkernel tier: kernel {run.kernel_release or kernel.version} under qemu (TCG), "
        f"{run.wall_seconds:.0f} s wall; results in {RESULTS}"
    )
    if run.returncode is None:
        why = f"timed out after {timeout:.0f} s" if run.timed_out else "stopped before the tests finished"
        pytest.fail(f"the qemu guest {why}; console log tail ({run.console_log}):\n{run.console_tail()}")
    junit = RESULTS / "junit.xml"
    if not junit.exists():
        pytest.fail(
            f"the in-guest pytest wrote no junit.xml (exit {run.returncode}); console tail:\n"
            f"{run.console_tail()}"
        )
    outcomes = harness.junit_outcomes(junit)
    for o in outcomes:
        print(f"  {o.outcome.upper():7} {o.seconds:6.1f}s  {o.test}")
    for line in harness.notes(RESULTS / "pytest.log"):
        print(f"  {line}")
    if os.environ.get("LVSTOP_RECORD_FIXTURES") == "1" and (RESULTS / "fixtures").is_dir():
        shutil.copytree(RESULTS / "fixtures", harness.REPO / "tests/fixtures", dirs_exist_ok=True)
        print(f"recorded fixtures copied into {harness.REPO / 'tests/fixtures'}", file=sys.stderr)
    bad = [o for o in outcomes if o.outcome != "passed"]
    # a broken session fixture fails every test with one message: show each distinct message once
    by_message: dict[str, list[str]] = {}
    for o in bad:
        by_message.setdefault(o.message, []).append(f"{o.outcome.upper()} {o.test}")
    report = "\n\n".join(
        "\n".join(tests[:5] + ([f"... and {len(tests) - 5} more"] if len(tests) > 5 else []))
        + "\n"
        + msg[:3000]
        for msg, tests in by_message.items()
    )
    assert outcomes, f"the in-guest pytest collected nothing (exit {run.returncode})"
    # inside the guest nothing may skip: a skip there would hide a check that never ran
    assert not bad, f"{len(bad)} of {len(outcomes)} kernel tests did not pass in the guest:\n\n{report}"
    assert run.returncode == 0, f"in-guest pytest exited {run.returncode}; see {RESULTS / 'pytest.log'}"
