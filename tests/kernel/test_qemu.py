"""The kernel tier under qemu: boot a stock Debian kernel with IPVS, run `pytest -m kernel` inside it,
and report every in-guest test here. A guest that does not boot or finish fails with its console.

It runs once per kernel series in SERIES (Debian 12's 6.1 and bookworm-backports' 6.12, where the estimator
runs in kthreads and two sysctls are new), each on the newest installed kernel of that series.

Knobs (environment): LVSTOP_KERNEL_SERIES (e.g. "6.12": only that one),
LVSTOP_KERNEL_TIMEOUT (seconds, default 1200), LVSTOP_KERNEL_PYTEST_ARGS (extra
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

GUEST_TIMEOUT = float(os.environ.get("LVSTOP_KERNEL_TIMEOUT", "1200"))  # the benchmark step takes minutes
# pytest-timeout's default (pyproject) would stop the guest before its own timeout says why: the
# initramfs build and the guest's shutdown get 300 s on top
pytestmark = [pytest.mark.qemu, pytest.mark.timeout(GUEST_TIMEOUT + 300)]

RESULTS = harness.CACHE_DIR / "results"
# .ci/run installs both: linux-image-amd64 (bookworm) and linux-image-6.12-amd64 (bookworm-backports)
SERIES = {"6.1": "linux-image-amd64", "6.12": "linux-image-6.12-amd64 from bookworm-backports"}


def _kernel(series: str) -> harness.Kernel | None:
    kernels = harness.tier_kernels(harness.find_kernels())
    return next((k for k in kernels if harness.series(k.version) == series), None)


def _missing(series: str) -> list[str]:
    missing = []
    if shutil.which(harness.QEMU) is None:
        missing.append(f"{harness.QEMU} (apt-get install qemu-system-x86)")
    if _kernel(series) is None:
        missing.append(f"a Debian {series} kernel with IPVS modules (apt-get install {SERIES[series]})")
    for tool, pkg in (("ipvsadm", "ipvsadm"), ("busybox", "busybox-static"), ("modprobe", "kmod")):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (apt-get install {pkg})")
    if not (harness.REPO / ".venv/bin/python").exists():
        missing.append(f"the project's virtualenv at {harness.REPO / '.venv'}")
    return missing


def _series() -> list[str]:
    only = os.environ.get("LVSTOP_KERNEL_SERIES")
    return [only] if only else list(SERIES)


@pytest.mark.parametrize("series", _series())
def test_kernel_tier_in_qemu(series: str) -> None:
    if series not in SERIES:
        pytest.fail(f"LVSTOP_KERNEL_SERIES={series}: the tier knows {', '.join(SERIES)}")
    missing = _missing(series)
    if missing:
        message = "kernel tier cannot run, missing: " + "; ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message)  # CI must never pass without the kernel tier
        pytest.skip(message)
    kernel = _kernel(series)
    assert kernel is not None
    results = RESULTS / series
    initrd = harness.build_initramfs(kernel)
    env = {k: v for k, v in os.environ.items() if k in ("LVSTOP_RECORD_FIXTURES", "CI")}
    extra = shlex.split(os.environ.get("LVSTOP_KERNEL_PYTEST_ARGS", ""))
    timeout = GUEST_TIMEOUT
    shutil.rmtree(results, ignore_errors=True)
    run = harness.run_guest(kernel, initrd, harness.guest_script(extra, env), results, timeout=timeout)
    print(
        f"\nkernel tier: kernel {run.kernel_release or kernel.version} under qemu (TCG), "
        f"{run.wall_seconds:.0f} s wall; results in {results}"
    )
    if run.returncode is None:
        why = f"timed out after {timeout:.0f} s" if run.timed_out else "stopped before the tests finished"
        pytest.fail(f"the qemu guest {why}; console log tail ({run.console_log}):\n{run.console_tail()}")
    junit = results / "junit.xml"
    if not junit.exists():
        pytest.fail(
            f"the in-guest pytest wrote no junit.xml (exit {run.returncode}); console tail:\n"
            f"{run.console_tail()}"
        )
    outcomes = harness.junit_outcomes(junit)
    for o in outcomes:
        print(f"  {o.outcome.upper():7} {o.seconds:6.1f}s  {o.test}")
    for line in harness.notes(results / "pytest.log"):
        print(f"  {line}")
    recorded = results / "fixtures" / "netlink"
    if os.environ.get("LVSTOP_RECORD_FIXTURES") == "1" and recorded.is_dir():
        # 6.1's replies are the unit tier's main fixtures; every other series gets a folder of its own
        target = harness.REPO / "tests/fixtures" / ("netlink" if series == "6.1" else f"netlink-{series}")
        shutil.copytree(recorded, target, dirs_exist_ok=True)
        print(f"recorded fixtures copied into {target}", file=sys.stderr)
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
    assert run.returncode == 0, f"in-guest pytest exited {run.returncode}; see {results / 'pytest.log'}"
