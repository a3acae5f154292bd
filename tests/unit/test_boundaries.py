"""The headless core never imports Textual (Harlequin's contract), checked in a clean interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CORE = [
    "lvstop.model",
    "lvstop.errors",
    "lvstop.codec",
    "lvstop.events",
    "lvstop.estimator",
    "lvstop.poller",
    "lvstop.conntable",
    "lvstop.control",
    "lvstop.listing",
    "lvstop.sources.netlink",
    "lvstop.sources.procfs",
    "lvstop.sources.sim",
    "lvstop.sources.replay",
    "lvstop.sources.remote",
    "lvstop.exporter",
]


@pytest.mark.parametrize("module", CORE)
def test_core_module_does_not_import_textual(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'textual'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"{module} pulled in {out.stdout.strip()}"


def test_lvstop_list_does_not_import_textual() -> None:
    code = "import sys, lvstop.cli; print(any(m.startswith('textual') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


PROC_SAMPLE = str(Path(__file__).parent.parent / "fixtures" / "proc" / "sample-6.1")


def _modules_after(argv: list[str]) -> tuple[str, set[str]]:
    """What `lvstop ARGV` printed and which modules it had loaded by its end, in a clean interpreter."""
    code = (
        "import io, json, sys\n"
        "from lvstop.cli import Environment, main\n"
        "out = io.StringIO()\n"
        f"main({argv!r}, Environment(stdout=out, stderr=io.StringIO()))\n"
        "print(json.dumps([out.getvalue(), sorted(sys.modules)]))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    text, modules = json.loads(run.stdout)
    return text, set(modules)


def _loaded(modules: set[str], *prefixes: str) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in prefixes or m in prefixes)


def test_list_connections_loads_no_netlink_code() -> None:
    """`lvstop list -c` (auto source) reads /proc only: no netlink module, no pyroute2, no Textual."""
    text, modules = _modules_after(["list", "-c", "--proc-root", PROC_SAMPLE])
    assert text.startswith("IPVS connection entries\n") and text.count("\n") > 10
    assert (
        _loaded(
            modules,
            "pyroute2",
            "textual",
            "lvstop.sources.netlink",
            "lvstop.sources.wire",
            "lvstop.sources.genl",
        )
        == []
    )


def test_list_over_netlink_loads_no_pyroute2() -> None:
    """The netlink path of `lvstop list` (family lookup included) imports neither pyroute2 nor Textual,
    whatever this host's kernel then answers (no IPVS family, no permission, or a listing)."""
    _text, modules = _modules_after(["list", "--source", "netlink", "--proc-root", PROC_SAMPLE])
    assert "lvstop.sources.netlink" in modules  # the path under test was taken
    assert _loaded(modules, "pyroute2", "textual") == []
    # start-up cost (issue 9 S2): the netns thread's helpers come with --netns only
    assert _loaded(modules, "concurrent", "logging", "queue") == []


def test_list_loads_no_recording_code() -> None:
    """`lvstop list` of a live source does not import the recordings' reader (json, codec)."""
    text, modules = _modules_after(["list", "-n", "--source", "proc", "--proc-root", PROC_SAMPLE])
    assert text.startswith("IP Virtual Server version")
    assert _loaded(modules, "lvstop.sources.replay", "lvstop.codec") == []
