"""The headless core never imports Textual (Harlequin's contract), checked in a clean interpreter."""

from __future__ import annotations

import subprocess
import sys

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
