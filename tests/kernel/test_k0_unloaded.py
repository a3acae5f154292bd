"""Item 6, first fault: ip_vs not loaded. lvstop says so clearly and loads nothing.

Runs before anything loads ip_vs (conftest orders it first). The trap it guards against: ip_vs carries
the module alias net-pf-16-proto-16-family-IPVS, so merely asking generic netlink for the "IPVS"
family makes the kernel run modprobe and load it.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from lvstop.cli import Environment, main
from lvstop.errors import SourceError
from lvstop.model import IssueKind
from lvstop.sources.netlink import NetlinkSource
from lvstop.sources.procfs import ProcSource

from .recording import Tap

pytestmark = pytest.mark.kernel

LOADED = Path("/sys/module/ip_vs")
EXIT_NO_IPVS = 3  # lvstop's documented exit status for "ip_vs not loaded"


def _lvstop(*args: str) -> tuple[int, str]:
    """(exit status, stderr) of `lvstop ARGS`, in this process (cheap under TCG)."""
    err = io.StringIO()
    return main(list(args), Environment(stdout=io.StringIO(), stderr=err)), err.getvalue()


def _lvstop_process(*args: str) -> tuple[int, str]:
    """The same through the installed console script, as an operator runs it."""
    p = subprocess.run(
        [str(Path(sys.executable).with_name("lvstop")), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return p.returncode, p.stderr


def test_ip_vs_not_loaded(ipvs_never_loaded: None, results_dir: Path | None) -> None:
    problems: list[str] = []

    with pytest.raises(SourceError) as exc:
        ProcSource().read()
    assert exc.value.kind is IssueKind.NO_IPVS and "ip_vs" in str(exc.value)

    # NetlinkSource lists the generic netlink families, and IPVS is not among them
    tap = Tap()
    with pytest.raises(SourceError) as exc:
        NetlinkSource(socket_factory=tap.factory)
    assert exc.value.kind is IssueKind.NO_IPVS, exc.value
    assert b"IPVS\0" not in tap.reply(0) and b"nlctrl\0" in tap.reply(0)
    assert not LOADED.exists(), "NetlinkSource loaded ip_vs"
    if results_dir is not None:  # for the unit tier's errors/ fixtures (test_kz_rerecord.py)
        errors = results_dir / "fixtures" / "netlink" / "errors"
        errors.mkdir(parents=True, exist_ok=True)
        (errors / "ctrl_families_noipvs.bin").write_bytes(tap.reply(0))

    # each way in; after each, ip_vs must still be absent
    for run, args in (
        (_lvstop_process, ("list",)),
        (_lvstop, ("list", "--source", "proc")),
        (_lvstop, ("list", "--source", "netlink")),
        (_lvstop, ("list", "-c")),
        (_lvstop, ("list", "--stats", "--exact")),
    ):
        status, err = run(*args)
        err = err.strip()
        if status != EXIT_NO_IPVS:
            problems.append(f"lvstop {' '.join(args)}: exit {status}, wanted {EXIT_NO_IPVS}: {err}")
        if "Traceback" in err or len(err.splitlines()) != 1 or "ip_vs" not in err:
            problems.append(f"lvstop {' '.join(args)}: wanted one clear line naming ip_vs, got {err!r}")
        if LOADED.exists():
            problems.append(f"lvstop {' '.join(args)} loaded ip_vs (the genl family lookup autoloads it)")
            break
    assert not problems, "\n".join(problems)
