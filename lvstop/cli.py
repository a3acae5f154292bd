"""The `lvstop` command: the live TUI by default, `lvstop list` (ipvsadm -L compatible), `lvstop record`.

Everything the process touches (streams, sleep, clock) comes in through `Environment`, so tests run
`main(argv, env)` with their own streams, as httpie does. Errors end as one line on stderr and an
`ExitStatus`; nothing here imports Textual unless the TUI is launched.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import enum
import ipaddress
import itertools
import math
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn, TextIO

from lvstop import __version__
from lvstop.errors import LvstopError, ParseError, SourceError, UsageError
from lvstop.listing import ListOptions, conn_lines, iter_lines, option_conflict, render
from lvstop.model import (
    AF_INET,
    AF_INET6,
    ConnEntry,
    IssueKind,
    Protocol,
    ServiceKey,
    Snapshot,
    normalize_address,
)
from lvstop.sources import Source
from lvstop.sources.factory import KINDS, open_source

if TYPE_CHECKING:
    from lvstop.codec import ManagedMap
    from lvstop.health.config import HealthConfig


class ExitStatus(enum.IntEnum):
    OK = 0
    ERROR = 1  # anything else lvstop could not do (a source failed, no such service, ...)
    USAGE = 2  # bad command line
    NO_IPVS = 3  # the kernel has no IPVS (ip_vs not loaded)
    NO_PERMISSION = 4  # netlink needs CAP_NET_ADMIN, or a file was not readable
    BAD_FILE = 5  # a recording or /proc file that is missing, unreadable or malformed
    INTERRUPTED = 130  # Ctrl-C


EPILOG = """\
sources: auto (default: netlink, or /proc without CAP_NET_ADMIN), netlink, proc, demo (a simulated
director), replay (--replay FILE, made by `lvstop record`), remote (--connect URL of an lvstop exporter).

exit status: 0 ok, 1 error, 2 bad usage, 3 ip_vs not loaded, 4 permission denied (netlink needs
CAP_NET_ADMIN), 5 bad or unreadable file, 130 interrupted.
"""

LIST_EPILOG = (
    """\
Prints what ipvsadm -L prints with the same flags, byte for byte: ports by their names in the
services database (/etc/services) as ipvsadm does, or numbers with -n. Addresses are always numeric
(lvstop makes no DNS lookups; ipvsadm without -n does). -L is accepted out of habit.
Beyond ipvsadm: --all shows connections, counters and rates in one wide table, --json the whole
snapshot as lvstop's JSON.

--rate shows the kernel's rates (netlink, recordings, remote exporters). The demo director has no
kernel rates: lvstop then reads twice, --interval seconds apart (default 2 s; rounded up to whole
2 s estimator ticks, since counters only move once a tick), and shows the average over that time.
/proc has no per-service counters or rates: those columns print "-".
"""
    + "\n"
    + EPILOG
)


@dataclass
class Environment:
    """The outside world as `main` sees it; tests pass their own."""

    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    clock: Callable[[], float] = time.time  # wall clock: drives the demo director

    def warn(self, message: str) -> None:
        self.stderr.write(f"lvstop: warning: {_one_line(message)}\n")


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


class _HelpShown(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse, but errors raise (one line, no usage dump) and --help/--version return."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            raise UsageError(message.strip())
        raise _HelpShown(status)


# --- argument types -----------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text!r}")
    return int(text)


def _fwmark(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"invalid fwmark value {text!r} (1 to 4294967295)")
    return int(text)


def _snapshot_index(text: str) -> int:
    # "last" rather than -1 alone: with -6 defined, argparse takes "-1" for an option.
    if text == "last":
        return -1
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a snapshot number or 'last', not {text!r}") from None


def _service(protocol: Protocol) -> Callable[[str], ServiceKey]:
    """ipvsadm's service-address syntax: ADDR[:PORT], [IPv6ADDR]:PORT or a bare IPv6 address."""

    def parse(text: str) -> ServiceKey:
        host, port = text, "0"
        if text.startswith("["):
            close = text.find("]")
            if close < 0 or text[close + 1 : close + 2] != ":":
                raise argparse.ArgumentTypeError(f"expected [IPv6-address]:port, got {text!r}")
            host, port = text[1:close], text[close + 2 :]
        elif text.count(":") == 1:
            host, port = text.split(":")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not an IP address[:port] (lvstop does not resolve host names)"
            ) from None
        family = AF_INET6 if address.version == 6 else AF_INET
        return ServiceKey(family, protocol, normalize_address(family, host), _port(port, protocol, text))

    return parse


def _port(text: str, protocol: Protocol, whole: str) -> int:
    if text.isdigit():
        if int(text) <= 0xFFFF:
            return int(text)
        raise argparse.ArgumentTypeError(f"port out of range in {whole!r}")
    try:
        return socket.getservbyname(text, protocol.name.lower())
    except OSError:
        raise argparse.ArgumentTypeError(f"unknown port or service name {text!r} in {whole!r}") from None


# --- the parser ---------------------------------------------------------------------------------


def _add_source_options(p: argparse.ArgumentParser, *, sub: bool) -> None:
    # Given again after a subcommand: SUPPRESS keeps a value given before it (`lvstop --demo list`).
    d = argparse.SUPPRESS if sub else None
    g = p.add_argument_group("source")
    g.add_argument("--source", choices=KINDS, default=d, help="where to read from (default: auto)")
    g.add_argument(
        "--demo",
        action="store_true",
        default=argparse.SUPPRESS if sub else False,
        help="the simulated demo director (same as --source demo)",
    )
    g.add_argument("--replay", metavar="FILE", default=d, help="a recording made by `lvstop record`")
    g.add_argument(
        "--connect",
        metavar="URL",
        action="append",
        default=d,
        help="an lvstop exporter to read from (repeatable in the TUI)",
    )
    g.add_argument(
        "--netns",
        metavar="NAME|PATH",
        default=d,
        help="network namespace: a name under /var/run/netns or /proc/PID/ns/net (netlink)",
    )
    g.add_argument(
        "--proc-root",
        metavar="DIR",
        default=argparse.SUPPRESS if sub else "/proc",
        help="where proc is mounted (default /proc; /proc/PID for another namespace)",
    )
    g.add_argument("--seed", type=int, default=argparse.SUPPRESS if sub else 1, help=argparse.SUPPRESS)


def build_parser() -> _Parser:
    parser = _Parser(
        prog="lvstop",
        description="Live view of Linux IPVS (LVS): which services are hot, which real servers take the "
        "traffic, and safe draining. Without a command, starts the full-screen view.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lvstop {__version__}")
    parser.add_argument(
        "--interval",
        type=_positive_float,
        default=2.0,
        metavar="S",
        help="seconds between reads (default 2, the kernel's estimator tick)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    parser.add_argument(
        "--drain-state",
        metavar="FILE",
        help="where drains remember the weights to restore (default /var/lib/lvstop/drains.json)",
    )
    parser.add_argument(
        "--health.config",
        dest="health_config",
        metavar="FILE",
        help="health checks of the real servers, shown in the TUI (the demo checks its own, simulated)",
    )
    _add_source_options(parser, sub=False)
    parser.set_defaults(run=_run_tui)
    commands = parser.add_subparsers(title="commands", metavar="{list,record,health}", parser_class=_Parser)

    lst = commands.add_parser(
        "list",
        help="print the table as ipvsadm -L -n does",
        epilog=LIST_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lst.set_defaults(run=_run_list)
    habit = lst.add_argument_group("as ipvsadm")
    habit.add_argument(
        "-L", "-l", "--list", dest="_list", action="store_true", help="list (what `list` does anyway)"
    )
    habit.add_argument("-n", "--numeric", action="store_true", help="port numbers, not service names")
    habit.add_argument("--sort", action="store_true", help="sorted output (the default)")
    fmt = lst.add_argument_group("formats (as ipvsadm)")
    fmt.add_argument("-c", "--connection", action="store_true", help="the connection table")
    fmt.add_argument("--stats", action="store_true", help="cumulative counters")
    fmt.add_argument("--rate", action="store_true", help="rates per second")
    fmt.add_argument("-X", "--exact", action="store_true", help="exact numbers, no K/M/G rounding")
    fmt.add_argument("--thresholds", action="store_true", help="upper/lower connection thresholds")
    fmt.add_argument("--persistent-conn", action="store_true", help="persistent connection counts")
    fmt.add_argument("--tun-info", action="store_true", help="tunnel type, port and checksum flags")
    fmt.add_argument("--timeout", action="store_true", help="tcp, tcpfin and udp timeouts")
    fmt.add_argument("--daemon", action="store_true", help="connection sync daemons")
    fmt.add_argument("--nosort", action="store_true", help="kernel order instead of ipvsadm's")
    one = lst.add_argument_group("one service only (as ipvsadm)")
    sel = one.add_mutually_exclusive_group()
    sel.add_argument("-t", "--tcp-service", metavar="ADDR:PORT", type=_service(Protocol.TCP))
    sel.add_argument("-u", "--udp-service", metavar="ADDR:PORT", type=_service(Protocol.UDP))
    sel.add_argument("--sctp-service", metavar="ADDR:PORT", type=_service(Protocol.SCTP))
    sel.add_argument("-f", "--fwmark-service", metavar="MARK", type=_fwmark)
    one.add_argument("-6", "--ipv6", action="store_true", help="with -f: the IPv6 fwmark service")
    more = lst.add_argument_group("lvstop's own")
    more.add_argument("--all", action="store_true", help="connections, counters and rates in one wide table")
    more.add_argument("--json", action="store_true", help="the snapshot as JSON (lvstop's schema)")
    more.add_argument(
        "--health.config",
        dest="health_config",
        metavar="FILE",
        default=argparse.SUPPRESS,  # keeps one given before `list`
        help="with --json: one round of these health checks, a `health` object in each dest",
    )
    more.add_argument(
        "--at",
        type=_snapshot_index,
        metavar="N|last",
        help="with --replay: snapshot N of the recording (0 the first, the default; 'last' the last)",
    )
    more.add_argument(
        "--interval",
        type=_positive_float,
        default=argparse.SUPPRESS,
        metavar="S",
        help="--rate without kernel rates: measure over S seconds (whole 2 s ticks, default 2)",
    )
    _add_source_options(lst, sub=True)

    rec = commands.add_parser(
        "record",
        help="record snapshots to a file for --replay",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rec.set_defaults(run=_run_record)
    rec.add_argument("file", metavar="FILE", help="where to write (gzip-compressed JSON lines)")
    rec.add_argument(
        "--interval",
        type=_positive_float,
        default=argparse.SUPPRESS,
        metavar="S",
        help="seconds between snapshots (default 2)",
    )
    rec.add_argument(
        "--count", type=_positive_int, metavar="N", help="stop after N snapshots (default: Ctrl-C)"
    )
    rec.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    _add_source_options(rec, sub=True)

    hc = commands.add_parser(
        "health",
        help="run the health checks of a config against the director's dests",
        description="Probes the dests that the checks of --health.config match. With --once: one round, "
        "then one line per dest and check (address:port, check, up/down, latency, reason). Without: "
        "one line per state change until Ctrl-C. The demo director's results are simulated.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hc.set_defaults(run=_run_health)
    hc.add_argument(
        "--health.config", dest="health_config", metavar="FILE", required=True, help="YAML checks"
    )
    hc.add_argument("--once", action="store_true", help="one round, one line per dest and check, then exit")
    hc.add_argument(
        "--health.act",
        dest="health_act",
        action="store_true",
        help="drain a dest whose checks say down and restore it when up (checks with `act:` decide for "
        "themselves), through the guarded write path, as actor `health`",
    )
    hc.add_argument(
        "--audit-log",
        metavar="FILE",
        default="-",
        help="with acting: one JSON line per write attempt (default '-': stderr)",
    )
    hc.add_argument("--count", type=_positive_int, metavar="N", help="without --once: stop after N polls")
    hc.add_argument(
        "--interval",
        type=_positive_float,
        default=argparse.SUPPRESS,
        metavar="S",
        help="seconds between polls",
    )
    _add_source_options(hc, sub=True)
    return parser


def parse_args(argv: Sequence[str] | None, env: Environment) -> argparse.Namespace:
    """Parses and resolves `source` to one kind; raises UsageError or _HelpShown."""
    parser = build_parser()
    with contextlib.redirect_stdout(env.stdout), contextlib.redirect_stderr(env.stderr):
        args = parser.parse_args(_glue_negative_values(sys.argv[1:] if argv is None else argv))
    args.source = _source_kind(args)
    _check_source_options(args)
    return args


_VALUED = ("--interval", "--count", "--at", "--seed")


def _glue_negative_values(argv: Sequence[str]) -> list[str]:
    """`--interval -1` as `--interval=-1`: argparse takes "-1" for an option where `list` has -6, and
    would say "expected one argument" instead of what is wrong with the value."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in _VALUED and re.fullmatch(r"-[0-9.]+", arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def _check_source_options(args: argparse.Namespace) -> None:
    """Options that the chosen source would silently ignore."""
    if args.netns is not None and args.source in ("demo", "replay", "remote"):
        raise UsageError(f"--netns is for the netlink source; the {args.source} source has no namespace")


def _source_kind(args: argparse.Namespace) -> str:
    implied = [k for k, on in (("demo", args.demo), ("replay", args.replay), ("remote", args.connect)) if on]
    kinds = dict.fromkeys(([args.source] if args.source else []) + implied)
    if len(kinds) > 1:
        raise UsageError(f"choose one source, not {' and '.join(kinds)}")
    kind = next(iter(kinds), "auto")
    if kind == "replay" and not args.replay:
        raise UsageError("--source replay needs --replay FILE")
    if kind == "remote" and not args.connect:
        raise UsageError("--source remote needs --connect URL")
    return kind


def _open(args: argparse.Namespace, env: Environment, *, conns_only: bool = False) -> Source:
    if args.connect and len(args.connect) > 1 and args.run is not _run_tui:
        raise UsageError("this command reads one director: give a single --connect URL")
    try:
        return open_source(
            args.source,
            netns=args.netns,
            proc_root=args.proc_root,
            replay=args.replay,
            connect=args.connect[0] if args.connect else None,
            seed=args.seed,
            warn=env.warn,
            clock=env.clock,
            conns_only=conns_only,
        )
    except ValueError as e:  # the factory's word for a combination it cannot serve
        raise UsageError(str(e)) from None


# --- commands -----------------------------------------------------------------------------------


def _run_tui(args: argparse.Namespace, env: Environment) -> int:
    from lvstop.tui.app import run  # lazily: `lvstop list` must never import Textual

    status = run(args)
    return ExitStatus.OK if status is None else int(status)


def _list_options(args: argparse.Namespace) -> ListOptions:
    service: ServiceKey | None = args.tcp_service or args.udp_service or args.sctp_service
    if args.ipv6 and args.fwmark_service is None:
        raise UsageError("-6 goes with -f/--fwmark-service only (IPv6 addresses speak for themselves)")
    if args.fwmark_service is not None:
        service = ServiceKey.mark(args.fwmark_service, AF_INET6 if args.ipv6 else AF_INET)
    opts = ListOptions(
        stats=args.stats,
        rate=args.rate,
        exact=args.exact,
        thresholds=args.thresholds,
        persistent_conn=args.persistent_conn,
        tun_info=args.tun_info,
        connection=args.connection,
        timeout=args.timeout,
        daemon=args.daemon,
        service=service,
        nosort=args.nosort,
        wide=args.all,
        json=args.json,
        numeric=args.numeric,
    )
    problem = option_conflict(opts)
    if problem:
        raise UsageError(problem)
    return opts


def _run_list(args: argparse.Namespace, env: Environment) -> int:
    opts = _list_options(args)
    if args.at is not None and args.source != "replay":
        raise UsageError("--at picks a snapshot of a recording: it needs --replay FILE")
    health: HealthConfig | None = None
    if args.health_config is not None:
        if not opts.json:
            raise UsageError("--health.config goes with --json (or try `lvstop health --once`)")
        from lvstop.health.command import load_config  # lazily: only health checks need it

        health = load_config(args.health_config)
    source = _open(args, env, conns_only=opts.connection)
    try:
        if opts.connection:
            _write_lines(env, conn_lines(_conn_entries(source), opts))
            return ExitStatus.OK
        if args.at is not None:
            _seek(source, args.at)
        measure = _shows_rates(opts) and args.source == "demo"
        snap = _measured(source, args, env) if measure else source.read()
        opts = dataclasses.replace(opts, instant_rates=measure)
        for issue in snap.issues:
            env.warn(issue.message)
        if _shows_rates(opts) and not measure and _lacks_rates(snap):
            env.warn(f"the {snap.source} source gave no rates for some entries: shown as -")
        if opts.json:
            text = render(snap, opts, managed=managed(snap, args.netns, env))
            if health is not None:
                from lvstop.health.command import list_json

                text = list_json(text, snap, health, args.netns, env)
            env.stdout.write(text)
        else:
            _write_lines(env, iter_lines(snap, opts))
        if _damaged(source, env):
            return ExitStatus.BAD_FILE
    finally:
        source.close()
    return ExitStatus.OK


def managed(snap: Snapshot, netns: str | None, env: Environment, proc_root: str = "/proc") -> ManagedMap:
    """Who manages each service (`lvstop list --json`): keepalived or ldirectord running on this host for
    the IPVS read. Nobody, without looking, for the demo, recordings and remote directors."""
    if snap.source not in ("netlink", "proc"):
        return {}
    from lvstop.control import detect_weight_managers
    from lvstop.managers import by_service, claims

    owned, unread = by_service(claims(detect_weight_managers(proc_root), proc_root, netns))
    for line in unread:
        env.warn(f"{line}: which services it manages is not known")
    return owned


def _damaged(source: Source, env: Environment) -> bool:
    """A recording with bad or missing lines: say where (what could be read was printed)."""
    if source.name != "replay":
        return False  # and the recordings' modules (json, codec) stay unimported
    from lvstop.sources.replay import ReplaySource

    damage = source.check() if isinstance(source, ReplaySource) else []
    for d in damage:
        env.warn(d)
    return bool(damage)


def _seek(source: Source, at: int) -> None:
    from lvstop.sources.replay import ReplaySource

    assert isinstance(source, ReplaySource)  # the factory's replay kind
    try:
        source.seek(at if at >= 0 else len(source) + at)
    except IndexError as e:
        raise UsageError(str(e)) from None


def _shows_rates(opts: ListOptions) -> bool:
    return opts.wide or (opts.rate and not opts.stats)


def _lacks_rates(snap: Snapshot) -> bool:
    return any(s.counters is not None and s.rates is None for s in snap.services)


def _measured(source: Source, args: argparse.Namespace, env: Environment) -> Snapshot:
    """Two reads a whole number of estimator ticks apart; the poller turns the counters' deltas into
    per-second averages. Counters only move once per tick (2 s), as in the kernel: reads k ticks apart
    see exactly k refreshes (k + 1, rarely, when the second read lands just past a refresh)."""
    from lvstop.estimator import TICK
    from lvstop.poller import Poller

    span = TICK * max(1, math.ceil(args.interval / TICK - 1e-9))
    env.warn(f"the {source.name} source has no kernel rates: measuring over {span:g} s")
    poller = Poller(source, interval=span, clock=env.monotonic)
    poller.poll_once()
    env.sleep(span)
    snap: Snapshot = poller.poll_once()
    return snap


def _conn_entries(source: Source) -> Iterator[ConnEntry]:
    from lvstop.sources.procfs import conn_layout, parse_conn_line

    lines = source.conn_lines(sync=False)
    header = next(lines, None)
    if header is None:
        raise ParseError("empty connection table (no header line)", source="ip_vs_conn", line=1)
    sync, _ = conn_layout(header)
    for lineno, line in enumerate(lines, start=2):
        yield parse_conn_line(line, lineno, sync)


def _write_lines(env: Environment, lines: Iterator[str]) -> None:
    write = env.stdout.write
    while batch := list(itertools.islice(lines, 4096)):  # one write per batch: 100k writes cost 30 ms
        write("\n".join(batch) + "\n")


def _run_record(args: argparse.Namespace, env: Environment) -> int:
    from lvstop.poller import Poller
    from lvstop.sources.replay import Recorder

    if args.health_config is not None:  # given before `record`: it would check nothing
        raise UsageError("--health.config goes with the dashboard, `list --json` and `health`, not `record`")
    interval: float = args.interval
    source = _open(args, env)
    written = 0
    try:
        poller = Poller(source, interval=interval, clock=env.monotonic)
        try:
            recorder = Recorder(args.file, overwrite=args.force)
        except FileExistsError:
            raise UsageError(f"{args.file} exists: give --force to overwrite it") from None
        try:
            while args.count is None or written < args.count:
                started = env.monotonic()
                try:
                    snap = poller.poll_once()
                except SourceError as e:
                    if written == 0:
                        raise
                    env.warn(f"read failed, still recording: {e}")
                else:
                    recorder.write(snap)
                    written += 1
                if args.count is None or written < args.count:
                    env.sleep(max(0.0, interval - (env.monotonic() - started)))
        except KeyboardInterrupt:
            pass  # the usual way to end an open-ended recording
        finally:
            recorder.close()
    finally:
        source.close()
    env.stderr.write(f"lvstop: recorded {written} snapshot{'s' if written != 1 else ''} to {args.file}\n")
    return ExitStatus.OK


def _run_health(args: argparse.Namespace, env: Environment) -> int:
    from lvstop.health import command  # lazily: only `lvstop health` pays for the checks

    config = command.load_config(args.health_config)
    return command.run(args, env, config, _open(args, env))


# --- entry point --------------------------------------------------------------------------------

_STATUS_BY_KIND = {
    IssueKind.NO_IPVS: ExitStatus.NO_IPVS,
    IssueKind.NO_PERMISSION: ExitStatus.NO_PERMISSION,
    IssueKind.MALFORMED: ExitStatus.BAD_FILE,
}


def _status(exc: BaseException, args: argparse.Namespace | None) -> ExitStatus:
    if isinstance(exc, SourceError):
        if args is not None and args.source == "replay" and exc.kind is IssueKind.IO:
            return ExitStatus.BAD_FILE
        return _STATUS_BY_KIND.get(exc.kind, ExitStatus.ERROR)
    if isinstance(exc, ParseError):
        return ExitStatus.BAD_FILE
    if isinstance(exc, PermissionError):
        return ExitStatus.NO_PERMISSION
    if isinstance(exc, OSError):
        return ExitStatus.BAD_FILE if exc.filename is not None else ExitStatus.ERROR
    return ExitStatus.ERROR


def main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    """The `lvstop` console script. Returns the exit status (see ExitStatus)."""
    env = env or Environment()
    args: argparse.Namespace | None = None
    try:
        args = parse_args(argv, env)
        status: int = args.run(args, env)
        return status
    except _HelpShown as e:
        return e.status
    except UsageError as e:
        env.stderr.write(f"lvstop: error: {_one_line(e)} (see lvstop --help)\n")
        return ExitStatus.USAGE
    except KeyboardInterrupt:
        env.stderr.write("lvstop: interrupted\n")
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:
        # `lvstop list | head`: the reader has what it wanted. Quiet and 0, as ipvsadm (whom SIGPIPE
        # ends before a word); keep the interpreter from complaining at exit.
        if env.stdout is sys.__stdout__:
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.__stdout__.fileno())
        return ExitStatus.OK
    except (LvstopError, OSError) as e:
        env.stderr.write(f"lvstop: {_describe(e)}\n")
        return _status(e, args)
    except Exception as e:
        if args is not None and args.debug:
            raise
        env.stderr.write(
            f"lvstop: internal error: {type(e).__name__}: {_one_line(e)} (--debug shows where)\n"
        )
        return ExitStatus.ERROR


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return _one_line(exc)
