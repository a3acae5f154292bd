"""Flags an on-call engineer got wrong, and what lvstop says about them (issue 11 item 17)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import one_error_line, run

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "argv",
    [("--interval", "-1", "list", "--demo"), ("list", "--demo", "--interval", "-1")],
    ids=["before", "after"],
)
def test_a_negative_interval_is_named_as_such(argv: tuple[str, ...]) -> None:
    r = run(*argv)
    assert r.status == 2 and "must be a positive number of seconds, not '-1'" in one_error_line(r)


@pytest.mark.parametrize("source", [("--demo",), ("--connect", "http://127.0.0.1:1/")])
def test_netns_with_a_source_that_has_none_is_refused(source: tuple[str, ...]) -> None:
    r = run(*source, "--netns", "foo", "list")
    assert r.status == 2 and "--netns is for the netlink source" in one_error_line(r)


def test_a_missing_proc_root_is_named() -> None:
    r = run("list", "--proc-root", "/nonexistent")
    assert r.status == 2 and "--proc-root /nonexistent: no such directory" in one_error_line(r)


def test_proc_without_ip_vs_exits_3_in_the_tui_as_in_list(tmp_path: Path) -> None:
    listed = run("list", "--source", "proc", "--proc-root", str(tmp_path))
    assert listed.status == 3
    # The TUI must not start (it would wait for keys until the timeout): same status, same words.
    tui = subprocess.run(
        [sys.executable, "-m", "lvstop", "--source", "proc", "--proc-root", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert tui.returncode == 3 and "ip_vs is not loaded" in tui.stderr


def test_a_busy_port_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import socket

    from lvstop.exporter.main import main as exporter

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = ["--source", "demo", "--web.listen-address", f"127.0.0.1:{port}"]
        status = exporter([*argv, "--drain-state", str(tmp_path / "d.json")])
    err = capsys.readouterr().err
    assert status == 1 and f"cannot listen on 127.0.0.1:{port}: Address already in use" in err
