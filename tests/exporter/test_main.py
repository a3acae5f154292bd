"""`lvstop-exporter` as a program: exit statuses, one-line errors, a clean stop on SIGTERM."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lvstop.exporter.main import FAILURE, USAGE, main


@pytest.mark.parametrize(
    "argv,status,needle",
    [
        (["--write.enable", "--write.listen-address", "0.0.0.0:0"], USAGE, "without TLS and authentication"),
        (["--collector.dest-labels", "local_address,hostname"], USAGE, "unknown dest label(s) hostname"),
        (["--web.listen-address", "nowhere"], USAGE, "is not host:port"),
        (["--source", "replay"], USAGE, "needs a recording"),
        (["--source", "proc", "--write.enable"], USAGE, "needs a source that can write"),
        (["--web.config.file", "/nonexistent/web.yml"], FAILURE, "cannot read"),
    ],
)
def test_bad_setups_are_one_line_and_an_exit_status(
    argv: list[str], status: int, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--drain-state", str(tmp_path / "d.json"), "--web.listen-address", "127.0.0.1:0"]
    source = [] if "--source" in argv else ["--source", "demo"]
    assert main([*source, *base, *argv]) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert err and needle in err[-1] and "Traceback" not in "\n".join(err)


def test_runs_until_sigterm_and_stops_cleanly(tmp_path: Path) -> None:
    code = "import sys; from lvstop.exporter.main import main; sys.exit(main())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--source", "demo", "--web.listen-address", "127.0.0.1:0",
         "--drain-state", str(tmp_path / "d.json")],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        m = re.search(r"serving reads on (http://\S+)", line)
        assert m, line
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(m.group(1) + "/-/ready", timeout=5) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
