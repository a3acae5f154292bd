"""`lvstop-exporter` as a program: exit statuses, one-line errors, a clean stop on SIGTERM."""

from __future__ import annotations

import contextlib
import json
import platform
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import FakeNetlink

from lvstop import gcpolicy
from lvstop.control import Control
from lvstop.errors import ControlError, SourceError
from lvstop.exporter.main import FAILURE, USAGE, _control_target, build_parser, main, tune_malloc
from lvstop.model import AF_INET, DestKey, IssueKind, ServiceKey
from lvstop.sources.factory import READ_ONLY_MESSAGE, open_source


@pytest.mark.parametrize(
    "argv,status,needle",
    [
        (["--write.enable", "--write.listen-address", "0.0.0.0:0"], USAGE, "without TLS and authentication"),
        (["--collector.dest-labels", "local_address,hostname"], USAGE, "unknown dest label(s) hostname"),
        (["--web.listen-address", "nowhere"], USAGE, "is not host:port"),
        (["--source", "replay"], USAGE, "needs a recording"),
        (["--source", "proc", "--write.enable"], USAGE, "needs a source that can write"),
        (["--web.config.file", "/nonexistent/web.yml"], FAILURE, "cannot read"),
        (["--web.config.file", "EMPTY", "--write.enable"], USAGE, "names no basic_auth_users"),
    ],
)
def test_bad_setups_are_one_line_and_an_exit_status(
    argv: list[str], status: int, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty.yml").write_text("")
    argv = [str(tmp_path / "empty.yml") if a == "EMPTY" else a for a in argv]
    base = ["--drain-state", str(tmp_path / "d.json"), "--web.listen-address", "127.0.0.1:0"]
    source = [] if "--source" in argv else ["--source", "demo"]
    assert main([*source, *base, *argv]) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert err and needle in err[-1] and "Traceback" not in "\n".join(err)


def test_a_bad_setup_leaves_the_process_untuned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before, managed = sys.getswitchinterval(), gcpolicy.PACER.managed
    sys.setswitchinterval(0.004)  # not the tuned 0.001, whatever ran before
    gcpolicy.PACER.managed = False
    try:
        argv = ["--source", "demo", "--drain-state", str(tmp_path / "d.json"), "--web.listen-address", "x"]
        assert main(argv) == USAGE
        assert sys.getswitchinterval() == pytest.approx(0.004) and not gcpolicy.PACER.managed
    finally:
        sys.setswitchinterval(before)
        gcpolicy.PACER.managed = managed


@contextlib.contextmanager
def exporter_process(tmp_path: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`lvstop-exporter --source demo` as a process: (the process, its first line on stderr); a test
    that does not stop it has it killed."""
    code = "import sys; from lvstop.exporter.main import main; sys.exit(main())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--source", "demo", "--web.listen-address", "127.0.0.1:0",
         "--drain-state", str(tmp_path / "d.json"), *extra],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        yield proc, proc.stderr.readline()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_runs_until_sigterm_and_stops_cleanly(tmp_path: Path) -> None:
    with exporter_process(tmp_path) as (proc, line):
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


def test_sighup_reopens_the_audit_log_instead_of_killing_the_exporter(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    with exporter_process(tmp_path, "--audit-log", str(audit)) as (proc, line):
        assert "serving reads" in line and proc.stderr is not None
        audit.rename(tmp_path / "audit.jsonl.1")
        proc.send_signal(signal.SIGHUP)
        line = proc.stderr.readline()
        assert f"audit log {audit} reopened" in line and audit.exists()
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def test_after_auto_falls_back_to_proc_the_write_api_refuses_with_503(
    netlink: type[FakeNetlink], proc_root: str, tmp_path: Path
) -> None:
    args = build_parser().parse_args(["--source", "auto", "--proc-root", proc_root, "--write.enable"])
    source = open_source("auto", proc_root=proc_root, warn=lambda _: None)
    target = _control_target(args, source)
    assert target is not None
    control = Control(target, tmp_path / "drains.json")
    skey, dkey = ServiceKey.tcp("192.0.2.1", 80), DestKey(AF_INET, "198.51.100.1", 80)
    assert control.set_weight(skey, dkey, 3, dry_run=True, actor="t").outcome == "dry_run"
    netlink.fail_read = SourceError(IssueKind.NO_PERMISSION, "netlink needs CAP_NET_ADMIN")
    source.read()
    with pytest.raises(ControlError) as e:
        control.set_weight(skey, dkey, 5, actor="t")
    assert e.value.status == 503 and str(e.value) == READ_ONLY_MESSAGE


def test_malloc_is_tuned_on_glibc_and_left_alone_elsewhere() -> None:
    assert tune_malloc() is (platform.libc_ver()[0] == "glibc")


PROC_SAMPLE = str(Path(__file__).parent.parent / "fixtures" / "proc" / "sample-6.1")


def test_an_exporter_without_web_config_loads_neither_yaml_nor_bcrypt(tmp_path: Path) -> None:
    """Start-up imports only what the command uses (issue 9): PyYAML reads --web.config.file and bcrypt
    checks its users; without one, a running exporter that served a page has loaded neither."""
    code = (
        "import json, sys\n"
        "from lvstop.exporter.main import build_parser, start\n"
        "from lvstop.sources.factory import open_source\n"
        f"args = build_parser().parse_args(['--source', 'proc', '--proc-root', {PROC_SAMPLE!r},\n"
        f"    '--web.listen-address', '127.0.0.1:0', '--drain-state', {str(tmp_path / 'd.json')!r}])\n"
        "running = start(args, open_source('proc', proc_root=args.proc_root, warn=print))\n"
        "page = running.exporter.metrics_page()\n"
        "running.stop()\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('yaml', 'bcrypt'))\n"
        "print(json.dumps([page.size, loaded]))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    size, loaded = json.loads(run.stdout.splitlines()[-1])
    assert size > 1000 and loaded == []
