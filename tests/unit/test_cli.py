"""`lvstop` end to end with an injected environment (httpie style), and the source factory.

Two kinds of runs: against the real demo director (`--source demo`, every list mode), and against a
fixed source holding the kernel lab's 6.1 sample, where the output must equal ipvsadm's capture.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import re
import socket
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeNetlink
from test_listing import SAMPLE, captured, sample_snapshot

from lvstop import cli
from lvstop.cli import Environment, ExitStatus, main
from lvstop.codec import SCHEMA_VERSION
from lvstop.errors import ControlError, SourceError
from lvstop.model import AF_INET, AF_INET6, DestKey, IssueKind, ServiceKey, Snapshot
from lvstop.sources import factory


@dataclasses.dataclass
class Result:
    status: int
    out: str
    err: str
    slept: list[float]


class FakeClock:
    """Wall and monotonic clock in one; sleeping advances it (the demo director follows it)."""

    def __init__(self, start: float = 1_700_000_001.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def run(*argv: str, stdout: io.StringIO | None = None, clock: FakeClock | None = None) -> Result:
    clock = clock or FakeClock()
    env = Environment(
        stdin=io.StringIO(),
        stdout=stdout or io.StringIO(),
        stderr=io.StringIO(),
        sleep=clock.sleep,
        monotonic=clock,
        clock=clock,
    )
    status = main(list(argv), env)
    assert isinstance(env.stdout, io.StringIO) and isinstance(env.stderr, io.StringIO)
    return Result(status, env.stdout.getvalue(), env.stderr.getvalue(), clock.slept)


def one_error_line(r: Result) -> str:
    lines = r.err.splitlines()
    assert len(lines) == 1, r.err
    assert "Traceback" not in r.err
    return lines[0]


# --- a fixed source: the 6.1 sample -------------------------------------------------------------


class FixedSource:
    name = "netlink"

    def __init__(self, snap: Snapshot, conn_text: str = "") -> None:
        self.snap = snap
        self.conn_text = conn_text
        self.reads = 0
        self.closed = False

    def read(self) -> Snapshot:
        self.reads += 1
        return self.snap

    def conn_lines(self, sync: bool = False) -> Iterator[str]:
        return iter(self.conn_text.splitlines(keepends=True))

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def sample(monkeypatch: pytest.MonkeyPatch) -> FixedSource:
    source = FixedSource(sample_snapshot(), (SAMPLE / "proc-ip_vs_conn.txt").read_text().partition("\n")[2])
    opened: list[dict[str, Any]] = []

    def fake_open(kind: str, **kw: Any) -> FixedSource:
        opened.append({"kind": kind, **kw})
        return source

    monkeypatch.setattr(cli, "open_source", fake_open)
    source.opened = opened  # type: ignore[attr-defined]
    return source


@pytest.mark.parametrize(
    ("argv", "capture"),
    [
        (["-Ln"], "ipvsadm-Ln.txt"),
        (["-n", "--stats", "--exact"], "ipvsadm-stats.txt"),
        (["-Ln", "--stats", "-X"], "ipvsadm-stats.txt"),
        (["--timeout"], "ipvsadm-timeout.txt"),
        (["-L", "--daemon"], "ipvsadm-daemon.txt"),
    ],
)
def test_list_prints_what_ipvsadm_printed(sample: FixedSource, argv: list[str], capture: str) -> None:
    r = run("list", *argv)
    assert (r.status, r.err) == (ExitStatus.OK, "")
    assert r.out == captured(capture)
    assert sample.reads == 1 and sample.closed


def test_list_one_service_and_source_options_reach_the_factory(sample: FixedSource) -> None:
    r = run("--netns", "blue", "list", "-n", "-t", "203.0.113.10:https", "--proc-root", "/host/proc")
    assert r.status == ExitStatus.OK
    assert r.out.splitlines()[2] == "TCP  203.0.113.10:443 wlc persistent 120 mask 255.255.255.0"
    [opened] = sample.opened  # type: ignore[attr-defined]
    assert {k: v for k, v in opened.items() if k not in ("warn", "clock")} == {
        "kind": "auto",
        "netns": "blue",
        "proc_root": "/host/proc",
        "replay": None,
        "connect": None,
        "seed": 1,
        "conns_only": False,
    }


def test_list_fwmark_ipv6_selector(sample: FixedSource) -> None:
    v6 = dataclasses.replace(sample.snap.services[-1], key=ServiceKey.mark(1, AF_INET6))
    sample.snap = dataclasses.replace(sample.snap, services=(v6,))
    r = run("list", "-f", "1", "-6")
    assert r.status == ExitStatus.OK
    assert r.out.splitlines()[2] == "FWM  1 IPv6 wlc"
    r = run("list", "-f", "1")
    assert r.status == ExitStatus.ERROR
    assert one_error_line(r) == "lvstop: no such service: FWM 1"


def test_list_connections_streams_the_proc_table(sample: FixedSource) -> None:
    r = run("list", "-Lnc")
    theirs = captured("ipvsadm-Lnc.txt").splitlines()
    ours = r.out.splitlines()
    assert r.status == ExitStatus.OK and ours[:2] == theirs[:2] and len(ours) == len(theirs)
    assert sample.reads == 0  # the connection table needs no snapshot


def test_list_connections_with_persistence_engine_columns(sample: FixedSource) -> None:
    sample.conn_text = (
        "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"
        "UDP C6336402 13C4 CB00710A 13C4 C000020B 13C4 UDP             179 sip 3f2a@203.0.113.10\n"
    )
    r = run("list", "-nc", "--persistent-conn")
    assert r.status == ExitStatus.OK
    assert r.out.splitlines()[1:] == [
        "pro expire state       source             virtual            destination        "
        "pe name          pe_data",
        "UDP 02:59  UDP         198.51.100.2:5060  203.0.113.10:5060  192.0.2.11:5060  sip                "
        "3f2a@203.0.113.10",
    ]


def test_list_corrupt_connection_table_names_the_line(sample: FixedSource) -> None:
    sample.conn_text += "TCP garbage\n"
    bad_line = len(sample.conn_text.splitlines())  # the header is line 1, as in the file
    r = run("list", "-c")
    assert r.status == ExitStatus.BAD_FILE
    assert one_error_line(r) == f"lvstop: /proc/net/ip_vs_conn:{bad_line}: expected 9 or 11 fields, got 2"


def test_list_ipv6_service_selector(sample: FixedSource) -> None:
    r = run("list", "-t", "[2001:db8::1]:80")
    assert r.status == ExitStatus.ERROR
    assert one_error_line(r) == "lvstop: no such service: TCP [2001:db8::1]:80"


def test_list_rate_uses_kernel_rates_with_one_read(sample: FixedSource) -> None:
    r = run("list", "-n", "--rate")
    assert r.status == ExitStatus.OK and r.err == "" and sample.reads == 1
    assert "TCP  203.0.113.10:443                    1        4        4      297      360" in r.out


def test_issues_and_missing_rates_are_warned_on_stderr(sample: FixedSource) -> None:
    from lvstop.model import Issue

    svc = dataclasses.replace(sample.snap.services[0], rates=None)
    sample.snap = dataclasses.replace(
        sample.snap, services=(svc,), issues=(Issue(IssueKind.INCONSISTENT, "service vanished\nmid-dump"),)
    )
    r = run("list", "--rate")
    assert r.status == ExitStatus.OK
    assert r.err.splitlines() == [
        "lvstop: warning: service vanished mid-dump",
        "lvstop: warning: the netlink source gave no rates for some entries: shown as -",
    ]
    assert r.out.splitlines()[3].split()[2:] == ["-"] * 5


def test_broken_pipe_is_quiet(sample: FixedSource) -> None:
    class Closed(io.StringIO):
        def write(self, s: str) -> int:
            raise BrokenPipeError

    r = run("list", stdout=Closed())
    assert (r.status, r.err) == (ExitStatus.OK, "")


# A services database of our own: the host's /etc/services is not the test's to rely on.
SERVICES_DB = {
    (80, "tcp"): "http",
    (443, "tcp"): "https",
    (53, "udp"): "domain",
    (8080, "tcp"): "http-alt",
    (81, "tcp"): "a-service-name-longer-than-ipvsadm-shows",
}


@pytest.fixture
def services_db(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from lvstop import listing

    def getservbyport(port: int, proto: str) -> str:
        try:
            return SERVICES_DB[(port, proto)]
        except KeyError:
            raise OSError("port/proto not found") from None

    monkeypatch.setattr(socket, "getservbyport", getservbyport)  # the module lvstop.listing calls
    listing.port_name.cache_clear()
    yield
    listing.port_name.cache_clear()


def test_list_without_n_names_ports_as_ipvsadm_does(sample: FixedSource, services_db: None) -> None:
    """Issue 11 item 15: `ipvsadm -L` prints `:https`, `:domain`, in its 33/28-column widths."""
    lines = run("list").out.splitlines()
    assert "TCP  203.0.113.10:http rr" in lines
    assert "TCP  203.0.113.10:https wlc persistent 120 mask 255.255.255.0" in lines
    assert "UDP  203.0.113.10:domain rr" in lines
    assert "TCP  203.0.113.10:a-service-name- wrr" in lines  # ipvsadm cuts the name at 33
    assert "TCP  203.0.113.10:82 sh" in lines  # no name in the database: the number
    assert "FWM  1 wlc" in lines
    dests = [line for line in lines if line.startswith("  -> ")]
    assert "  -> 192.0.2.11:http-alt          Masq    1      1          4         " in dests
    assert "  -> 192.0.2.11:5353              Masq    1      0          4         " in dests  # udp 5353
    stats = run("list", "--stats", "--exact").out.splitlines()
    numbers = "".join(f"{n:>9}" for n in (15, 80, 74, 5288, 6224))
    assert stats[3] == f"{'TCP  203.0.113.10:http':<33}{numbers}"
    assert stats[4].startswith(f"{'  -> 192.0.2.11:http-alt':<33} ")
    # -n: numbers, byte for byte what ipvsadm -Ln printed
    assert run("list", "-n").out == captured("ipvsadm-Ln.txt")


def test_list_connections_without_n_name_ports(sample: FixedSource, services_db: None) -> None:
    named = run("list", "-c").out.splitlines()
    numeric = run("list", "-cn").out.splitlines()
    assert len(named) == len(numeric) > 3
    assert any(":https " in line for line in named) and not any(":https" in line for line in numeric)
    line = next(line for line in numeric if "203.0.113.10:443 " in line)
    # "203.0.113.10:443" fills 16 of the 18 columns, "203.0.113.10:https" all of them
    expected = line.replace("203.0.113.10:443   ", "203.0.113.10:https ").replace(":8080", ":http-alt")
    assert named[numeric.index(line)] == expected


def test_list_piped_into_head_exits_0_quietly(tmp_path: Path) -> None:
    """`lvstop list | head -1`: the reader leaves with most of the listing unwritten."""
    net = tmp_path / "net"
    net.mkdir()
    lines = ["IP Virtual Server version 1.2.1 (size=4096)", "Prot LocalAddress:Port Scheduler Flags"]
    lines.append("  -> RemoteAddress:Port Forward Weight ActiveConn InActConn")
    for s in range(200):
        lines.append(f"TCP  CB0071{s:02X}:0050 wlc")
        lines += [f"  -> C00002{d:02X}:1F90      Masq    1      0          0" for d in range(50)]
    (net / "ip_vs").write_text("\n".join(lines) + "\n")  # 10,000 dests: ~700 kB listed, > a pipe
    argv = [sys.executable, "-m", "lvstop", "list", "-n", "--source", "proc", "--proc-root", str(tmp_path)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # as head does after its line
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0
    assert first.startswith("IP Virtual Server version 1.2.1")
    assert all(line.startswith("lvstop: warning: ") for line in err.splitlines()), err  # no traceback


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        (IssueKind.NO_IPVS, ExitStatus.NO_IPVS),
        (IssueKind.NO_PERMISSION, ExitStatus.NO_PERMISSION),
        (IssueKind.MALFORMED, ExitStatus.BAD_FILE),
        (IssueKind.INCONSISTENT, ExitStatus.ERROR),
    ],
)
def test_source_errors_map_to_exit_statuses(
    monkeypatch: pytest.MonkeyPatch, kind: IssueKind, status: int
) -> None:
    def refuse(kind_: str, **kw: Any) -> FixedSource:
        raise SourceError(kind, "the kernel said no")

    monkeypatch.setattr(cli, "open_source", refuse)
    r = run("list")
    assert r.status == status
    assert one_error_line(r) == "lvstop: the kernel said no"


def test_internal_errors_are_one_line_unless_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(kind: str, **kw: Any) -> FixedSource:
        raise KeyError("bug")

    monkeypatch.setattr(cli, "open_source", broken)
    r = run("list")
    assert r.status == ExitStatus.ERROR
    assert one_error_line(r).startswith("lvstop: internal error: KeyError")
    with pytest.raises(KeyError):
        run("--debug", "list")


def test_proc_source_lists_what_proc_can_show() -> None:
    root = Path(__file__).resolve().parent.parent / "fixtures" / "proc" / "sample-6.1"
    r = run("list", "-n", "--source", "proc", "--proc-root", str(root))
    assert r.status == ExitStatus.OK
    # Nothing outside --proc-root is read: not the host's /boot either, so CONFIG_HZ is unknown here.
    unseen, no_hz = r.err.splitlines()
    assert "/proc gives no per-service or per-dest counters" in unseen and "CONFIG_HZ" in no_hz
    ours, theirs = r.out.splitlines(), captured("ipvsadm-Ln.txt").splitlines()
    # /proc has no scheduler flags; its persistence timeout is in jiffies, and HZ is unknown
    differ = {i for i, line in enumerate(theirs) if ":83 " in line or ":443 " in line}
    assert [x for i, x in enumerate(ours) if i not in differ] == [
        x for i, x in enumerate(theirs) if i not in differ
    ]
    assert ours[min(differ)] == "TCP  203.0.113.10:83 mh"


# --- the command line itself --------------------------------------------------------------------


def test_help_lists_exit_statuses() -> None:
    r = run("--help")
    assert r.status == ExitStatus.OK and r.err == ""
    assert "exit status: 0 ok, 1 error, 2 bad usage, 3 ip_vs not loaded" in r.out
    r = run("list", "--help")
    assert r.status == ExitStatus.OK and "--persistent-conn" in r.out and "byte for byte" in r.out


def test_version() -> None:
    r = run("--version")
    assert r.status == ExitStatus.OK and re.fullmatch(r"lvstop \d+\.\d+\.\d+\n", r.out)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list", "--bogus"], "unrecognized arguments: --bogus"),
        (["list", "-t", "director.example:80"], "does not resolve host names"),
        (["list", "-t", "203.0.113.1:70000"], "port out of range"),
        (["list", "-t", "[2001:db8::1]80"], "expected [IPv6-address]:port"),
        (["list", "-u", "203.0.113.1:nosuchservice"], "unknown port or service name"),
        (["list", "-f", "0"], "invalid fwmark value '0'"),
        (["list", "-f", "4294967296"], "invalid fwmark value"),
        (["list", "-6"], "-6 goes with -f"),
        (["list", "-t", "203.0.113.1:80", "-u", "203.0.113.1:53"], "not allowed with argument"),
        (["list", "-c", "--stats"], "options conflict"),
        (["list", "--timeout", "--daemon"], "conflicts with"),
        (["list", "-c", "-f", "1"], "conflicts with"),
        (["list", "--all", "--rate"], "--all is a table of its own"),
        (["list", "--json", "-c"], "--json prints the whole snapshot"),
        (["list", "--source", "floppy"], "invalid choice: 'floppy'"),
        (["list", "--demo", "--replay", "x.gz"], "choose one source, not demo and replay"),
        (["list", "--source", "remote"], "--source remote needs --connect URL"),
        (["list", "--source", "replay"], "--source replay needs --replay FILE"),
        (["list", "--connect", "http://a", "--connect", "http://b"], "single --connect"),
        (["list", "--source", "proc", "--netns", "blue"], "not --netns"),
        (["list", "--interval", "0"], "must be a positive number"),
        (["list", "--demo", "--at", "1"], "--at picks a snapshot of a recording"),
        (["record"], "the following arguments are required: FILE"),
        (["record", "x.gz", "--count", "-1"], "argument --count"),
        (["--interval", "soon"], "not a number: 'soon'"),
    ],
)
def test_bad_command_lines_get_one_line_and_status_2(argv: list[str], message: str) -> None:
    r = run(*argv)
    assert r.status == ExitStatus.USAGE
    line = one_error_line(r)
    assert line.startswith("lvstop: error: ") and message in line, line
    assert r.out == ""


def test_no_command_starts_the_tui_with_resolved_source(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    app = types.ModuleType("lvstop.tui.app")

    def fake_run(args: Any) -> int:
        seen.append(args)
        return 0

    app.run = fake_run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lvstop.tui.app", app)
    r = run("--demo", "--interval", "0.5")
    assert r.status == ExitStatus.OK
    assert (seen[0].source, seen[0].interval, seen[0].connect) == ("demo", 0.5, None)
    r = run("--connect", "http://a:9100", "--connect", "http://b:9100")
    assert r.status == ExitStatus.OK
    assert (seen[1].source, seen[1].connect) == ("remote", ["http://a:9100", "http://b:9100"])


def test_the_tui_reports_a_bad_source_combination_as_usage() -> None:
    r = run("--source", "proc", "--netns", "blue")  # the real TUI entry point: refused before any screen
    assert r.status == ExitStatus.USAGE
    assert "not --netns" in one_error_line(r)


def test_python_dash_m_and_list_do_not_import_textual() -> None:
    code = (
        "import sys, runpy; sys.argv = ['lvstop', 'list', '--bogus'];\n"
        "try: runpy.run_module('lvstop', run_name='__main__')\n"
        "except SystemExit as e: print(e.code, any(m.startswith('textual') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "False"]
    assert out.stderr.startswith("lvstop: error: unrecognized arguments: --bogus")


# --- the demo director, every mode --------------------------------------------------------------


TITLES = {
    (): "Prot LocalAddress:Port Scheduler Flags",
    ("--stats",): "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes",
    (
        "--rate",
        "--interval",
        "0.05",
    ): "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS",
    ("--thresholds",): "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn ",
    ("--persistent-conn",): "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn ",
    ("--tun-info",): "Prot LocalAddress:Port Scheduler Flags",
    ("--all", "--interval", "0.05"): "Prot LocalAddress:Port            Sched   Weight ActiveConn",
    ("--nosort", "-X"): "Prot LocalAddress:Port Scheduler Flags",
}

SERVICE_LINE = re.compile(r"^(TCP |UDP |SCTP|FWM ) ")
DEST_LINE = re.compile(r"^  -> (\S+:\d+|\[[0-9a-f:]+\]:\d+) ")


@pytest.mark.parametrize("flags", list(TITLES), ids=lambda f: " ".join(f) or "default")
def test_demo_every_table_mode(flags: tuple[str, ...]) -> None:
    r = run("list", "-n", "--source", "demo", *flags)
    assert r.status == ExitStatus.OK, r.err
    lines = r.out.splitlines()
    assert re.fullmatch(r"IP Virtual Server version \d+\.\d+\.\d+ \(size=\d+\)", lines[0])
    assert lines[1].startswith(TITLES[flags])
    body = lines[3:]
    assert any(SERVICE_LINE.match(line) for line in body)
    assert all(SERVICE_LINE.match(line) or DEST_LINE.match(line) for line in body), body
    if "--rate" in flags or "--all" in flags:
        # the demo has no kernel rates: measured over whole estimator ticks, never "-"
        assert r.slept == [2.0]
        assert one_error_line(r) == "lvstop: warning: the demo source has no kernel rates: measuring over 2 s"
        assert not any(" - " in line or line.endswith(" -") for line in body)
    else:
        assert r.slept == [] and r.err == ""


def test_demo_rate_is_the_average_over_whole_ticks() -> None:
    from lvstop.sources.sim import SimSource

    clock = FakeClock()
    sim = SimSource(seed=1, clock=clock)
    before = sim.read().services[0]
    clock.now += 4.0
    after = sim.read().services[0]
    c0, c1 = before.counters, after.counters
    assert c0 is not None and c1 is not None and c1.conns > c0.conns
    r = run("list", "--demo", "--rate", "--interval", "3", "-X", "-t", str(before.key).split()[1])
    assert r.slept == [4.0]  # 3 s rounded up to two 2 s ticks
    cps, inpps, *_, outbps = (int(x) for x in r.out.splitlines()[2].split()[2:])
    assert cps == int((c1.conns - c0.conns) / 4 + 0.5)
    assert inpps == int((c1.inpkts - c0.inpkts) / 4 + 0.5)
    assert outbps == int((c1.outbytes - c0.outbytes) / 4 + 0.5)


def test_demo_connections_timeouts_daemons() -> None:
    r = run("list", "--source", "demo", "-c")
    assert r.status == ExitStatus.OK, r.err
    lines = r.out.splitlines()
    assert lines[:2] == [
        "IPVS connection entries",
        "pro expire state       source             virtual            destination",
    ]
    assert len(lines) > 2 and all(re.match(r"(TCP|UDP|SCTP|IP ) \d\d:\d\d  ", line) for line in lines[2:])
    r = run("list", "--source", "demo", "--timeout")
    assert r.status == ExitStatus.OK and re.fullmatch(r"Timeout \(tcp tcpfin udp\): \d+ \d+ \d+\n", r.out)
    r = run("list", "--source", "demo", "--daemon")
    assert r.status == ExitStatus.OK
    assert all(
        re.fullmatch(r"(master|backup) sync daemon \(mcast=\S+, syncid=\d+.*\)", x)
        for x in r.out.splitlines()
    )


def test_demo_json_parses_with_schema_version() -> None:
    r = run("list", "--demo", "--json")
    assert r.status == ExitStatus.OK, r.err
    doc = json.loads(r.out)
    assert doc["schema"] == SCHEMA_VERSION == 1 and doc["source"] == "demo" and len(doc["services"]) > 1
    key = doc["services"][0]["key"]
    flag = {"tcp": "-t", "udp": "-u", "sctp": "--sctp-service"}.get(key["protocol"], "-f")
    where = (
        str(key["fwmark"])
        if flag == "-f"
        else (
            f"[{key['address']}]:{key['port']}"
            if key["family"] == "inet6"
            else f"{key['address']}:{key['port']}"
        )
    )
    r = run(
        "list",
        "--demo",
        "--json",
        flag,
        where,
        *(["-6"] if flag == "-f" and key["family"] == "inet6" else []),
    )
    assert r.status == ExitStatus.OK, r.err
    assert [s["key"] for s in json.loads(r.out)["services"]] == [key]


# --- record and replay --------------------------------------------------------------------------


def test_record_then_list_the_recording(tmp_path: Path) -> None:
    path = tmp_path / "demo.jsonl.gz"
    r = run("record", str(path), "--source", "demo", "--count", "3")
    assert r.status == ExitStatus.OK, r.err
    assert r.err == f"lvstop: recorded 3 snapshots to {path}\n"
    assert r.slept == [2.0, 2.0]
    with gzip.open(path, "rt") as f:
        assert len(f.read().splitlines()) == 3
    r = run("list", "--replay", str(path), "--stats")
    assert r.status == ExitStatus.OK, r.err
    assert r.out.splitlines()[1].startswith("Prot LocalAddress:Port               Conns")
    # the first recorded poll has no rates yet (lvstop's estimator needs two reads), the last one has
    r = run("list", "--replay", str(path), "--rate")
    assert r.status == ExitStatus.OK and r.slept == []
    assert (
        one_error_line(r) == "lvstop: warning: the replay source gave no rates for some entries: shown as -"
    )
    assert r.out.splitlines()[3].split()[2:] == ["-"] * 5
    r = run("list", "--replay", str(path), "--rate", "--at", "last")
    assert (r.status, r.err, r.slept) == (ExitStatus.OK, "", [])
    assert all(x.isdigit() for x in r.out.splitlines()[3].split()[2:])
    r = run("list", "--replay", str(path), "--at", "3")
    assert r.status == ExitStatus.USAGE and "outside the recording (0..2)" in one_error_line(r)
    assert run("list", "--replay", str(path), "--at=-3").out == run("list", "--replay", str(path)).out


def test_record_into_a_missing_directory(tmp_path: Path) -> None:
    r = run("record", str(tmp_path / "no" / "such" / "dir.gz"), "--demo", "--count", "1")
    assert r.status == ExitStatus.BAD_FILE
    assert "no/such/dir.gz" in one_error_line(r)


def test_replay_missing_file(tmp_path: Path) -> None:
    r = run("list", "--replay", str(tmp_path / "absent.gz"))
    assert r.status == ExitStatus.BAD_FILE
    assert "absent.gz" in one_error_line(r)


@pytest.mark.parametrize(
    "content",
    [
        b"this is not gzip at all\n",
        gzip.compress(b'{"schema_version": 1, "truncated\n'),
        gzip.compress(b"[1, 2]\n"),
    ],
    ids=["not-gzip", "bad-json", "not-a-snapshot"],
)
def test_replay_corrupt_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "corrupt.gz"
    path.write_bytes(content)
    r = run("list", "--replay", str(path))
    assert r.status == ExitStatus.BAD_FILE, r.err
    assert one_error_line(r).startswith("lvstop: ")


# --- the factory --------------------------------------------------------------------------------


def test_auto_is_netlink_while_netlink_works(netlink: type[FakeNetlink], proc_root: str) -> None:
    warnings: list[str] = []
    src = factory.open_source(proc_root=proc_root, warn=warnings.append)
    assert src.read().source == "netlink" and src.name == "netlink" and warnings == []


def test_auto_falls_back_to_proc_without_cap_net_admin(netlink: type[FakeNetlink], proc_root: str) -> None:
    netlink.fail_read = SourceError(IssueKind.NO_PERMISSION, "netlink needs CAP_NET_ADMIN")
    warnings: list[str] = []
    src = factory.open_source(proc_root=proc_root, warn=warnings.append)
    snap = src.read()
    assert snap.source == "proc" and src.name == "proc" and len(snap.services) == 9
    assert warnings == [f"netlink: netlink needs CAP_NET_ADMIN; reading {proc_root}/net/ip_vs instead"]
    assert isinstance(src, factory.AutoSource) and type(src.active).__name__ == "ProcSource"
    src.read()
    assert len(warnings) == 1  # once


WEB = ServiceKey.tcp("192.0.2.1", 80)
DK = DestKey(AF_INET, "198.51.100.1", 80)


def test_writes_go_through_netlink_until_auto_falls_back_to_proc(
    netlink: type[FakeNetlink], proc_root: str
) -> None:
    src = factory.open_source(proc_root=proc_root, warn=lambda _: None)
    target = factory.write_target(src)  # built at startup, before the first read
    assert target is not None and target.get_dest(WEB, DK) is not None
    netlink.fail_read = SourceError(IssueKind.NO_PERMISSION, "netlink needs CAP_NET_ADMIN")
    src.read()
    for call in (lambda: target.get_dest(WEB, DK), target.read):
        with pytest.raises(ControlError) as e:
            call()
        assert e.value.status == 503 and str(e.value) == factory.READ_ONLY_MESSAGE
    assert "lacks CAP_NET_ADMIN" in factory.READ_ONLY_MESSAGE


def test_no_writes_when_netlink_refuses_at_open(netlink: type[FakeNetlink], proc_root: str) -> None:
    netlink.fail_init = SourceError(IssueKind.NO_PERMISSION, "denied at open")
    src = factory.open_source(proc_root=proc_root, warn=lambda _: None)
    target = factory.write_target(src)
    assert target is not None
    with pytest.raises(ControlError, match="read-only: lvstop reads /proc") as e:
        target.get_dest(WEB, DK)
    assert e.value.status == 503


def test_read_only_kinds_have_no_write_target(proc_root: str) -> None:
    assert factory.write_target(factory.open_source("proc", proc_root=proc_root, warn=pytest.fail)) is None
    demo = factory.open_source("demo", warn=pytest.fail)
    target: object = factory.write_target(demo)
    assert target is demo


def test_auto_falls_back_when_netlink_refuses_at_open(netlink: type[FakeNetlink], proc_root: str) -> None:
    netlink.fail_init = SourceError(IssueKind.NO_PERMISSION, "denied at open")
    warnings: list[str] = []
    src = factory.open_source(proc_root=proc_root, warn=warnings.append)
    assert src.read().source == "proc" and warnings == [
        f"netlink: denied at open; reading {proc_root}/net/ip_vs instead"
    ]


@pytest.mark.parametrize("kind", ["auto", "netlink"])
def test_without_ip_vs_netlink_is_never_opened(netlink: type[FakeNetlink], tmp_path: Path, kind: str) -> None:
    # Looking up the IPVS genetlink family would make the kernel load ip_vs: do not even ask.
    netlink.fail_init = AssertionError("NetlinkSource must not be opened without ip_vs")  # type: ignore[assignment]
    with pytest.raises(SourceError, match=r"ip_vs is not loaded.*modprobe ip_vs") as e:
        factory.open_source(kind, proc_root=str(tmp_path), warn=pytest.fail)
    assert e.value.kind is IssueKind.NO_IPVS


def test_ip_vs_gone_between_reads_is_not_a_fallback(netlink: type[FakeNetlink], proc_root: str) -> None:
    netlink.fail_read = SourceError(IssueKind.NO_IPVS, "ip_vs is not loaded: no IPVS netlink family")
    src = factory.open_source(proc_root=proc_root, warn=pytest.fail)
    with pytest.raises(SourceError, match="no IPVS netlink family") as e:
        src.read()
    assert e.value.kind is IssueKind.NO_IPVS and src.name == "netlink"


OUR_NETNS = "/proc/self/ns/net"  # a real network namespace file; the fake netlink does the rest


def test_auto_in_another_namespace_never_falls_back(netlink: type[FakeNetlink], proc_root: str) -> None:
    netlink.fail_read = SourceError(IssueKind.NO_PERMISSION, "denied")
    src = factory.open_source(netns=OUR_NETNS, proc_root=proc_root, warn=pytest.fail)
    with pytest.raises(SourceError, match="denied"):
        src.read()
    netlink.fail_init = SourceError(IssueKind.NO_PERMISSION, "denied at open")
    with pytest.raises(SourceError, match="denied at open"):
        factory.open_source(netns=OUR_NETNS, proc_root=proc_root, warn=pytest.fail)


def test_other_netlink_errors_propagate(netlink: type[FakeNetlink], proc_root: str) -> None:
    netlink.fail_read = SourceError(IssueKind.MALFORMED, "short reply")
    src = factory.open_source(proc_root=proc_root, warn=pytest.fail)
    with pytest.raises(SourceError, match="short reply"):
        src.read()


def test_factory_kinds_and_mistakes(proc_root: str) -> None:
    assert type(factory.open_source("proc", proc_root=proc_root, warn=pytest.fail)).__name__ == "ProcSource"
    assert factory.open_source("demo", warn=pytest.fail).name == "demo"
    cases: tuple[tuple[str, dict[str, Any]], ...] = (
        ("floppy", {}),
        ("replay", {}),
        ("remote", {}),
        ("proc", {"netns": "blue"}),
    )
    for kind, kw in cases:
        with pytest.raises(ValueError):
            factory.open_source(kind, warn=pytest.fail, **kw)


def test_factory_imports_only_what_it_opens() -> None:
    code = (
        "import sys; from lvstop.sources.factory import open_source\n"
        "open_source('demo', warn=print)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('pyroute2', 'lvstop.sources.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = eval(out.stdout)
    assert "lvstop.sources.sim" in loaded
    assert not [
        m for m in loaded if m.startswith("pyroute2") or m.endswith((".netlink", ".replay", ".remote"))
    ]


@pytest.mark.parametrize(
    ("netns", "text"),
    [
        ("/etc/hostname", "is not a namespace file"),
        ("/proc/self/ns/uts", "is a uts namespace, not a network namespace"),
        (
            "lvstop-test-no-such-namespace",
            "no network namespace /var/run/netns/lvstop-test-no-such-namespace",
        ),
    ],
)
def test_netns_that_is_not_one_is_a_bad_file_with_its_cause(netns: str, text: str) -> None:
    r = run("list", "-n", "--source", "netlink", "--netns", netns)
    assert r.status == ExitStatus.BAD_FILE and text in one_error_line(r)
