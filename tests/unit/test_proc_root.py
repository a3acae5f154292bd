"""ProcSource given a --proc-root reads nothing outside it (the host's /boot describes another kernel)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from lvstop.sources.procfs import ProcSource, is_live_proc

SAMPLE = Path(__file__).resolve().parent.parent / "fixtures" / "proc" / "sample-6.1"
_OPENED: list[str] | None = None  # recording while a list


def _record(event: str, args: tuple[object, ...]) -> None:
    if _OPENED is not None and event in ("open", "os.listdir", "os.scandir") and args:
        path = args[0]
        if isinstance(path, str | bytes | os.PathLike):
            _OPENED.append(os.path.abspath(os.fsdecode(path)))


sys.addaudithook(_record)  # audit hooks cannot be removed: it records only while _OPENED is a list


def test_a_proc_root_is_all_that_is_read(tmp_path: Path) -> None:
    global _OPENED
    root = tmp_path / "proc"
    shutil.copytree(SAMPLE, root)
    (root / "net" / "ip_vs").read_text(encoding="ascii")  # imports the codec before recording starts
    _OPENED = []
    try:
        source = ProcSource(str(root))
        snap = source.read()
        list(source.conn_lines())
    finally:
        opened, _OPENED = _OPENED, None
    assert snap.services and opened
    outside = [p for p in opened if not p.startswith(str(root) + os.sep)]
    assert outside == []
    # CONFIG_HZ is not in the root: the persistence timeout is unknown, and the snapshot says so.
    assert any("persistence timeouts unknown" in i.message for i in snap.issues)


def test_the_running_kernels_proc_and_its_pids_are_live_a_copy_is_not(tmp_path: Path) -> None:
    assert is_live_proc("/proc") and is_live_proc("/proc/1") and is_live_proc("/proc/self")
    assert not is_live_proc(str(SAMPLE)) and not is_live_proc("/proc/sys") and not is_live_proc(str(tmp_path))
