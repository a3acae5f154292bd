"""`lvstop-exporter`: the poller, the Prometheus exposition, the JSON API and (when enabled) the write API."""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from lvstop import __version__, gcpolicy
from lvstop.conntable import ConnSummary, ConnTableReader
from lvstop.control import Control, WeightManagers, WeightTarget
from lvstop.errors import LvstopError, SourceError
from lvstop.exporter.audit import AuditLog
from lvstop.exporter.auth import Authenticator, RateLimiter, WebConfig, load_web_config, web_config_changes
from lvstop.exporter.core import CountingSource, Exporter, WatchingEventLog
from lvstop.exporter.http import App, Server, WriteSettings, is_loopback, parse_listen_address
from lvstop.exporter.metrics import DEST_LABELS, BackendHealth, ConnStats, Options, RuntimeMetrics
from lvstop.exporter.ramp import Ramps
from lvstop.managers import ManagedLookup, managed_to_dict
from lvstop.poller import Poller
from lvstop.sources import Source
from lvstop.sources.factory import KINDS, open_source

if TYPE_CHECKING:
    from lvstop.health.actor import HealthActor
    from lvstop.health.runner import HealthRunner
    from lvstop.health.state import Transition

log = logging.getLogger("lvstop.exporter")

USAGE = 2
KERNEL_TICK = 2.0  # the kernel refreshes counters and rates every 2 s: reading more often shows nothing new
FAILURE = 1
# glibc's mallopt() parameters (malloc.h).
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lvstop-exporter",
        description="Prometheus metrics, a JSON API and guarded weight edits for Linux IPVS.",
    )
    p.add_argument("--version", action="version", version=f"lvstop-exporter {__version__}")
    src = p.add_argument_group("source")
    src.add_argument("--source", choices=[k for k in KINDS if k != "remote"], default="auto")
    src.add_argument("--netns", help="network namespace: a name under /var/run/netns or /proc/PID/ns/net")
    src.add_argument("--proc-root", default="/proc", help="where /proc is (also scanned for keepalived)")
    src.add_argument("--replay", metavar="FILE", help="a recording made by `lvstop record` (--source replay)")
    src.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    src.add_argument(
        "--interval",
        type=float,
        help="poll every this many seconds; without it, IPVS is read when a scrape or API request asks, "
        f"at most once per {KERNEL_TICK:g} s (the kernel's estimator tick)",
    )
    web = p.add_argument_group("web")
    web.add_argument("--web.listen-address", dest="listen", default=":9736", help="reads (default :9736)")
    web.add_argument("--web.config.file", dest="web_config", help="exporter-toolkit web-config.yml (+ roles)")
    web.add_argument(
        "--web.max-requests", dest="max_requests", type=int, default=40, help="parallel scrapes (0: no limit)"
    )
    col = p.add_argument_group("cardinality")
    col.add_argument(
        "--collector.dest-labels",
        dest="dest_labels",
        default=",".join(DEST_LABELS),
        help="labels kept on per-dest metrics; values of dests sharing the kept labels are summed",
    )
    col.add_argument(
        "--no-collector.dests", dest="dest_metrics", action="store_false", help="no per-dest metrics"
    )
    col.add_argument(
        "--no-collector.conntable", dest="conntable", action="store_false", help="no connection-table metrics"
    )
    # Reading the table costs the kernel time quadratic in its size before 6.14: rarely, and briefly.
    col.add_argument(
        "--collector.conntable.interval",
        dest="conn_interval",
        type=float,
        default=60.0,
        help="seconds (default 60)",
    )
    col.add_argument(
        "--collector.conntable.budget",
        dest="conn_budget",
        type=float,
        default=1.0,
        help="seconds (default 1)",
    )
    wr = p.add_argument_group("writes")
    wr.add_argument("--write.enable", dest="write", action="store_true", help="serve the write API")
    wr.add_argument("--write.listen-address", dest="write_listen", default="127.0.0.1:9737")
    wr.add_argument(
        "--write.allowed-origin",
        dest="origins",
        action="append",
        default=[],
        help="a browser Origin allowed to write",
    )
    wr.add_argument(
        "--write.rate", dest="rate", type=float, default=1.0, help="write requests per second per client"
    )
    wr.add_argument("--write.burst", dest="burst", type=int, default=5)
    wr.add_argument(
        "--write.floor", dest="floor", type=int, default=0, help="minimum live weight of a service"
    )
    wr.add_argument(
        "--drain-state", default="/var/lib/lvstop/drains.json", help="where drains remember weights"
    )
    wr.add_argument("--audit-log", default="-", help="JSON lines, one per write attempt ('-': stderr)")
    hc = p.add_argument_group("health checks")
    hc.add_argument(
        "--health.config",
        dest="health_config",
        metavar="FILE",
        help="YAML health checks of the real servers (lvstop_ipvs_backend_health_up); the demo's: simulated",
    )
    hc.add_argument(
        "--health.act",
        dest="health_act",
        action="store_true",
        help="drain a dest whose checks say down, restore it when up (checks with `act:` decide for "
        "themselves), as actor `health`, through every guard of the write path",
    )
    p.add_argument(
        "--log.level", dest="log_level", default="info", choices=["debug", "info", "warning", "error"]
    )
    return p


def conn_stats(summary: ConnSummary, wall: float) -> ConnStats:
    return ConnStats(
        by_state={k: c.states for k, c in summary.by_service.items()},
        templates={k: c.templates for k, c in summary.by_service.items() if c.templates},
        total=summary.total,
        partial=summary.partial,
        read_seconds=summary.read_seconds,
        time=wall,
    )


def check_web(args: argparse.Namespace, web: WebConfig) -> None:
    """Refuse (ValueError) a web config that would expose writes; warn about writes without users."""
    write_addr = parse_listen_address(args.write_listen)
    if args.write and not is_loopback(write_addr[0]) and not (web.tls and web.auth):
        raise ValueError(
            f"refusing to serve writes on non-loopback {args.write_listen} without TLS and authentication "
            "(tls_server_config and basic_auth_users in --web.config.file)"
        )
    if args.write and web.from_file and not web.auth:
        raise ValueError(
            f"{args.web_config} names no basic_auth_users: refusing to serve writes to anyone who asks "
            "(add users, or leave out --web.config.file for writes on loopback without authentication)"
        )
    if args.write and not web.auth:
        log.warning("writes without authentication: any local user can edit weights (set basic_auth_users)")


def _control_target(args: argparse.Namespace, source: Source) -> WeightTarget | None:
    """What Control writes through: the demo itself, or a NetlinkSource of its own (never the poller's),
    refused once `auto` reads /proc for lack of CAP_NET_ADMIN."""
    from lvstop.sources.factory import AutoSource, AutoWrites
    from lvstop.sources.sim import SimSource

    if isinstance(source, SimSource):
        return source
    if isinstance(source, AutoSource) and source.read_only:
        return AutoWrites(source, None)  # refuses every edit, saying why
    if args.source in ("auto", "netlink"):
        from lvstop.sources.netlink import NetlinkSource

        try:
            target: WeightTarget = NetlinkSource(netns=args.netns, proc_root=args.proc_root)
        except SourceError as e:
            log.warning("no write path: %s", e)
            return None
        return AutoWrites(source, target) if isinstance(source, AutoSource) else target
    return None


@dataclass
class Running:
    """A started exporter; stop() undoes start()."""

    exporter: Exporter
    servers: list[Server]
    poller: Poller
    ramps: Ramps | None
    conn: ConnTableReader | None
    audit: AuditLog
    app: App
    args: argparse.Namespace
    threads: list[threading.Thread] = field(default_factory=list)
    health: HealthRunner | None = None
    actor: HealthActor | None = None

    def reload(self) -> bool:
        """SIGHUP: reopen the audit log (logrotate) and re-read --web.config.file, certificates included.
        A file that cannot be used keeps the previous config and the log says why. False on any failure."""
        ok = True
        try:
            self.audit.reopen()
            if self.audit.path is not None:
                log.info("audit log %s reopened", self.audit.path)
        except LvstopError as e:
            log.error("audit log not reopened, still writing the previous file: %s", e)
            ok = False
        path = self.args.web_config
        if not path:
            return ok
        old = self.app.web
        try:
            web = load_web_config(path)
            if (web.tls is None) != (old.tls is None):
                raise ValueError("TLS cannot be turned on or off by a reload; restart the exporter for that")
            check_web(self.args, web)
        except (LvstopError, ValueError) as e:
            log.error("%s not reloaded, keeping the previous config: %s", path, e)
            return False
        self.app.reconfigure(web)
        for s in self.servers:
            s.tls = web.tls
        log.info("%s reloaded: %s", path, "; ".join(web_config_changes(old, web)) or "no change")
        return ok

    def stop(self) -> None:
        stopping = [threading.Thread(target=s.shutdown) for s in self.servers]
        for t in stopping:
            t.start()
        for t in stopping:
            t.join()
        for s in self.servers:
            s.server_close()
        if self.actor is not None:
            self.actor.stop()
        if self.ramps is not None:
            self.ramps.stop()
        if self.conn is not None:
            self.conn.stop(timeout=5)
        self.poller.stop(timeout=5)
        if self.health is not None:
            self.health.stop()
        self.audit.close()


def start(args: argparse.Namespace, source: Source, *, audit_stream: TextIO = sys.stderr) -> Running:
    """Wire everything and start serving; raises LvstopError (or ValueError for bad flags)."""
    interval = KERNEL_TICK if args.interval is None else args.interval
    # Polled on demand unless told a period, or health checks need the dest list kept current.
    on_demand = args.interval is None and not args.health_config
    options = Options(
        dest_labels=tuple(x for x in args.dest_labels.split(",") if x),
        dest_metrics=args.dest_metrics,
        conntable_metrics=args.conntable,
        tick=interval,
    )
    web = load_web_config(args.web_config) if args.web_config else WebConfig()
    read_addr = parse_listen_address(args.listen)
    check_web(args, web)
    if args.health_act and not args.health_config:
        raise ValueError("--health.act needs --health.config (the checks that decide)")
    acting: list[HealthActor] = []  # made once Control is: the runner wakes it on every state change
    health = _health_runner(args, source, lambda t: acting[0].wake() if acting else None)
    events = WatchingEventLog()
    holder: list[Exporter] = []
    counting = CountingSource(source, on_failure=lambda: holder[0].changed() if holder else None)
    poller = Poller(counting, interval=interval, events=events, on_demand=on_demand)
    acts = health is not None and any(c.acts(args.health_act) for c in health.config.checks)
    target = _control_target(args, source) if args.write or acts or args.source == "demo" else None
    if (args.write or acts) and target is None:
        need = "--write.enable" if args.write else "acting on health"
        raise ValueError(f"{need} needs a source that can write (netlink or demo), not {args.source}")
    managers = WeightManagers(args.proc_root, ttl=max(5.0, interval))  # edits and pages share it
    control = (
        Control(
            target,
            args.drain_state,
            events,
            args.floor,
            latest=lambda: poller.latest,
            managers=managers,
        )
        if target is not None
        else None
    )
    conn_state: list[ConnStats | None] = [None]
    exporter = Exporter(
        poller,
        counting,
        events,
        options=options,
        control=control,
        conn=lambda: conn_state[0],
        managers=managers,
        runtime=RuntimeMetrics(),
        backends=(lambda: _backends(health)) if health is not None else lambda: None,
    )
    holder.append(exporter)
    if health is not None:
        exporter.dest_health = lambda: _dest_health(health)
    claims = ManagedLookup(args.netns, managers)  # the dashboard's own lookup, for `lvstop --connect`
    exporter.managed = lambda: managed_to_dict(*claims())
    reader = None
    if options.conntable_metrics:
        reader = ConnTableReader(
            counting,
            interval=args.conn_interval,
            budget_s=args.conn_budget,
            services=lambda: poller.latest.services if poller.latest is not None else None,
            detail=False,  # per-service counts are all the metrics show
        )

        def conn_read(summary: ConnSummary) -> None:
            conn_state[0] = conn_stats(summary, time.time())  # on the page rendered after the next poll

        reader.subscribe(conn_read)
    audit = AuditLog(audit_stream if args.audit_log == "-" else args.audit_log)
    app = App(
        exporter,
        web=web,
        auth=Authenticator(web),
        audit=audit,
        limiter=RateLimiter(args.rate, args.burst),
        writes=WriteSettings(args.write, tuple(args.origins)),
        max_requests=args.max_requests,
    )
    ramps = Ramps(control, app.ramp_step) if (control is not None and (args.write or acts)) else None
    app.ramps = ramps
    if acts and health is not None and control is not None:
        from lvstop.health.actor import HealthActor

        def audit_line(**fields: Any) -> None:
            audit.write(**fields)
            exporter.record_edit(fields["outcome"])

        acting.append(
            HealthActor(
                health.config,
                control,
                health.checks,
                flag=args.health_act,
                ramps=ramps,
                audit=audit_line,
                events=events,
            )
        )
        exporter.acting = acting[0].status
    servers = [Server(read_addr, app, writes=False, tls=web.tls)]
    if args.write:
        servers.append(Server(parse_listen_address(args.write_listen), app, writes=True, tls=web.tls))
    running = Running(exporter, servers, poller, ramps, reader, audit, app, args, health=health)
    if health is not None:
        health.start()
        poller.subscribe(health.update)
    if acting:
        running.actor = acting[0]
        acting[0].start()
        poller.subscribe(acting[0].submit)
    poller.start()
    if reader is not None:
        reader.start()
    for s in servers:
        t = threading.Thread(target=s.serve_forever, name=f"http-{s.server_address[1]}", daemon=True)
        t.start()
        running.threads.append(t)
    return running


def _health_runner(
    args: argparse.Namespace, source: Source, on_transition: Callable[[Transition], None]
) -> HealthRunner | None:
    if not args.health_config:
        return None
    from lvstop.health.config import HealthConfigError, load
    from lvstop.health.runner import HealthRunner, SimProber
    from lvstop.sources.sim import SimSource

    try:
        config = load(args.health_config)
    except HealthConfigError as e:
        raise ValueError(str(e)) from None  # a bad flag's exit status: 2
    start = SimProber().start if isinstance(source, SimSource) else None  # no probe leaves the demo
    return HealthRunner(config, start=start, netns=args.netns, on_transition=on_transition)


def _backends(health: HealthRunner) -> BackendHealth:
    # States, not rows: a row per dest per scrape cost 0.4-1.1 s at 100k dests (bench/results/render.txt).
    return BackendHealth(dict(health.view().states()), health.probe_counts())


def _dest_health(health: HealthRunner) -> dict[str, Any]:
    """GET /api/v1/health: every checked dest's health object, as `lvstop list --json` has it."""
    from lvstop.codec import dest_key_to_dict, service_key_to_dict
    from lvstop.health.state import health_to_dict

    return {
        "checks": True,
        "dests": [
            {"service": service_key_to_dict(s), "dest": dest_key_to_dict(d), "health": health_to_dict(h)}
            for (s, d), h in health.view().items()
        ],
    }


def tune_runtime() -> None:
    """Keep the HTTP threads answering while the poller and the renderer work on a big director.

    Short GIL slices: a request waits about a millisecond, not 5, each time it needs the interpreter.
    The collector follows lvstop.gcpolicy: each poll's snapshot is frozen out of its sight, so no
    collection walks a 100k-dest snapshot with the GIL held. And glibc's malloc is told to give memory
    back (see tune_malloc).
    """
    sys.setswitchinterval(0.001)
    gcpolicy.manage()
    tune_malloc()


def tune_malloc() -> bool:
    """Cap glibc's arenas at 2 and fix its mmap threshold at 128 KiB; False when libc is not glibc.

    Every thread that allocates (poller, renderer, connection-table reader, HTTP) gets an arena of its
    own by default, up to 8 per core, and memory freed in one is not reused by another. glibc also
    raises the mmap threshold after each big free, so later big buffers (pages, 100k-item lists) come
    from the heap and stay there. Peak RSS of the exporter at 2,000 x 50, same work in each run: 450 MB
    by default, 410 MB with 2 arenas, 385 MB with both settings. The price: fresh mappings fault their
    pages in, about 3 % more CPU for polls, renders and table reads at 500 x 10 (1 MiB cost nothing
    measurable but kept 10-15 MB more at 100k, within the noise of three runs).
    """
    try:
        glibc = bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):
        glibc = False
    if not glibc:
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_ARENA_MAX, 2)) and bool(mallopt(M_MMAP_THRESHOLD, 128 << 10))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="lvstop-exporter: %(levelname)s: %(message)s")
    try:
        source = open_source(
            args.source,
            netns=args.netns,
            proc_root=args.proc_root,
            replay=args.replay,
            seed=args.seed,
            warn=log.warning,
        )
    except (LvstopError, ValueError) as e:
        print(f"lvstop-exporter: {e}", file=sys.stderr)
        return USAGE if isinstance(e, ValueError) else FAILURE
    try:
        running = start(args, source)
    except ValueError as e:
        print(f"lvstop-exporter: {e}", file=sys.stderr)
        return USAGE
    except (LvstopError, OSError) as e:
        print(f"lvstop-exporter: {e}", file=sys.stderr)
        return FAILURE
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    signal.signal(signal.SIGHUP, lambda *_: running.reload())  # before "serving": a reload may follow it
    tune_runtime()  # only a process that serves is tuned (tests call main() in-process)
    for s in running.servers:
        log.info("serving %s on %s", "reads and writes" if s.writes else "reads", s.url)
    done.wait()
    running.stop()
    source.close()
    return 0
