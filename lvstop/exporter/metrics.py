"""Collectors and the exposition renderer.

One collector per area (node_exporter's layout), descriptors built once at import. Each collector
yields families whose rows carry pre-rendered label text: a dest's labels are formatted once per
render and reused by its ~18 families, which keeps a 100k-dest render near 1 us per sample
(client_python's generate_latest costs ~9 us per sample). The text streams into a gzip compressor in
chunks, so a huge exposition is held in memory only compressed, and rows that are used by one family
only (the per-dest info metric) are generated while they are written, not built first.
"""

from __future__ import annotations

import io
import platform
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np

from lvstop import __version__
from lvstop.control import DrainRecord
from lvstop.model import (
    AF_INET6,
    TUN_F_CSUM,
    TUN_F_REMCSUM,
    Array,
    DestKey,
    FwdMethod,
    IssueKind,
    Service,
    ServiceKey,
    Snapshot,
    Table,
    TunType,
    address_text,
)

# node_exporter's ipvs labels plus `family`, which keeps IPv4 and IPv6 fwmark services with the same
# mark apart. Sorted by name, as client_python emits them.
SERVICE_LABELS = ("family", "local_address", "local_mark", "local_port", "proto")
DEST_LABELS = (*SERVICE_LABELS, "remote_address", "remote_port")
ERROR_KINDS = (*(k.value for k in IssueKind), "internal")
EDIT_OUTCOMES = ("applied", "unchanged", "dry_run", "rejected", "failed")
WEIGHT_MANAGERS = ("keepalived", "ldirectord")
CHUNK_LINES = 1024  # lines per chunk handed to the compressor


@dataclass(frozen=True, slots=True)
class Spec:
    """A metric descriptor: exposition name (counters end in _total, info metrics in _info), type, help."""

    name: str
    type: str  # counter | gauge
    help: str
    cached: bool = True  # a value read by the poller: HELP says it is cached per tick


@dataclass(frozen=True, slots=True)
class Columns:
    """Rows as two parallel columns, the cheap form for 100k dests; a None value means no sample."""

    labels: Sequence[str]
    values: Sequence[int | float | None]


Row = tuple[str, int | float | None]  # label text (without braces), value (None: no sample)


@dataclass(slots=True)
class Family:
    spec: Spec
    rows: Sequence[Row] | Columns | DestRows | Iterator[Row]  # an iterator is consumed once, while rendering


@dataclass(frozen=True, slots=True)
class Options:
    """Cardinality control and the tick the HELP text quotes."""

    dest_labels: tuple[str, ...] = DEST_LABELS  # labels kept on backend metrics; dropped ones are summed
    dest_metrics: bool = True
    conntable_metrics: bool = True
    tick: float = 2.0

    def __post_init__(self) -> None:
        unknown = set(self.dest_labels) - set(DEST_LABELS)
        if unknown:
            raise ValueError(
                f"unknown dest label(s) {', '.join(sorted(unknown))}; known: {', '.join(DEST_LABELS)}"
            )


@dataclass(frozen=True, slots=True)
class Health:
    source: str
    poll_success: bool
    last_success: float | None  # wall time of the last good poll
    poll_duration: float | None
    errors: Mapping[str, int] = field(default_factory=dict)  # by kind (ERROR_KINDS)
    scrape_duration: float | None = None  # the previous /metrics request
    render_duration: float | None = None  # the previous render
    version: str = __version__
    python_version: str = field(default_factory=platform.python_version)


@dataclass(frozen=True, slots=True)
class ConnStats:
    """Connection-table aggregates as the exporter exposes them (built from a ConnSummary)."""

    by_state: Mapping[ServiceKey, Mapping[str, int]]
    templates: Mapping[ServiceKey, int]
    total: int
    partial: bool
    read_seconds: float
    time: float  # wall time of the read


@dataclass(frozen=True, slots=True)
class ControlView:
    drains: Mapping[tuple[ServiceKey, DestKey], DrainRecord] = field(default_factory=dict)
    edits: Mapping[str, int] = field(default_factory=dict)  # by outcome (EDIT_OUTCOMES)
    external: Mapping[tuple[ServiceKey, DestKey], int] = field(default_factory=dict)
    managers: tuple[tuple[str, int], ...] = ()
    drain_state_ok: bool | None = None  # None: no write path, so no drain state


@dataclass(frozen=True, slots=True)
class BackendHealth:
    """Health checks (lvstop.health) as the exporter shows them."""

    states: Mapping[tuple[ServiceKey, DestKey], str]  # checked dests: "up", "down" or "unknown"
    probes: Mapping[str, tuple[int, int, float]]  # by check type: probes, failed probes, seconds spent


@dataclass(frozen=True, slots=True)
class Inputs:
    snapshot: Snapshot | None
    health: Health
    control: ControlView = ControlView()
    conn: ConnStats | None = None
    options: Options = Options()
    runtime: Callable[[], str] | None = None  # the process's own families, appended (RuntimeMetrics)
    backends: BackendHealth | None = None  # None: no --health.config


# --- labels ---


def esc(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")
    return value


def labels(**kv: object) -> str:
    return ",".join(f'{k}="{esc(str(v))}"' for k, v in kv.items())


def service_label_values(k: ServiceKey) -> dict[str, str]:
    return {
        "family": "inet6" if k.family == AF_INET6 else "inet",
        "local_address": k.address,
        "local_mark": str(k.fwmark) if k.fwmark else "",
        "local_port": str(k.port),
        "proto": k.protocol.label,
    }


def service_labels(k: ServiceKey) -> str:
    return labels(**service_label_values(k))


def dest_labels(skey: ServiceKey, d: DestKey, keep: tuple[str, ...] = DEST_LABELS) -> str:
    values = {**service_label_values(skey), "remote_address": d.address, "remote_port": str(d.port)}
    return ",".join(f'{n}="{values[n]}"' for n in keep)


# --- descriptors ---


def _counter(name: str, help: str) -> Spec:
    return Spec(name, "counter", help)


def _gauge(name: str, help: str, cached: bool = True) -> Spec:
    return Spec(name, "gauge", help, cached)


_COUNTER_FIELDS = (
    ("conns", "connections_total", "Connections scheduled"),
    ("inpkts", "incoming_packets_total", "Incoming packets"),
    ("outpkts", "outgoing_packets_total", "Outgoing packets"),
    ("inbytes", "incoming_bytes_total", "Incoming bytes"),
    ("outbytes", "outgoing_bytes_total", "Outgoing bytes"),
)
_RATE_FIELDS = (
    ("cps", "connections_per_second", "connections per second"),
    ("inpps", "incoming_packets_per_second", "incoming packets per second"),
    ("outpps", "outgoing_packets_per_second", "outgoing packets per second"),
    ("inbps", "incoming_bytes_per_second", "incoming bytes per second"),
    ("outbps", "outgoing_bytes_per_second", "outgoing bytes per second"),
)


def _counter_specs(prefix: str, what: str) -> tuple[tuple[str, Spec], ...]:
    return tuple((f, _counter(f"{prefix}_{n}", f"{h} {what}.")) for f, n, h in _COUNTER_FIELDS)


def _rate_specs(prefix: str, what: str) -> tuple[tuple[str, Spec], ...]:
    return tuple(
        (f, _gauge(f"{prefix}_{n}", f"The kernel's 2 s EWMA estimate of {h} {what}."))
        for f, n, h in _RATE_FIELDS
    )


DIRECTOR_COUNTERS = _counter_specs("lvstop_ipvs", "through the director (ip_vs_stats)")
DIRECTOR_RATES = _rate_specs("lvstop_ipvs", "through the director")
IPVS_INFO = _gauge("lvstop_ipvs_info", "IPVS version of the kernel; value is 1.")
CONN_TAB_SIZE = _gauge(
    "lvstop_ipvs_connection_table_size", "Size of the IPVS connection hash table (buckets)."
)
SYNC_DAEMON_INFO = _gauge(
    "lvstop_ipvs_sync_daemon_info",
    "A running connection sync daemon with its state, syncid and interface; value is 1.",
)
SYNC_DAEMONS = _gauge(
    "lvstop_ipvs_sync_daemons", "Running connection sync daemons by state (master, backup)."
)
TIMEOUTS = _gauge(
    "lvstop_ipvs_timeout_seconds", "IPVS connection timeouts (ipvsadm --set) by kind: tcp, tcpfin, udp."
)
SYSCTLS = _gauge("lvstop_ipvs_sysctl", "Value of the net.ipv4.vs.* sysctl named by the label.")
EST_CPULIST = _gauge(
    "lvstop_ipvs_estimator_cpulist_info",
    "net.ipv4.vs.est_cpulist (6.2+): CPUs the rate estimator kthreads may use, in the cpulist label "
    "(empty: estimation stopped, counters and rates frozen); value is 1.",
)
SERVICES = _gauge("lvstop_ipvs_services", "Virtual services on the director.")
SNAPSHOT_TIME = _gauge(
    "lvstop_snapshot_timestamp_seconds",
    "Wall time of the poll the IPVS values on this page come from.",
    False,
)

SERVICE_COUNTERS = _counter_specs("lvstop_ipvs_service", "for the virtual service")
SERVICE_RATES = _rate_specs("lvstop_ipvs_service", "for the virtual service")
SERVICE_INFO = _gauge(
    "lvstop_ipvs_service_info",
    "Virtual service settings: scheduler, flags, persistence timeout (s), netmask/prefix, persistence "
    "engine; value is 1.",
)
SERVICE_BACKENDS = _gauge("lvstop_ipvs_service_backends", "Real servers (dests) of the virtual service.")
SERVICE_WEIGHT = _gauge(
    "lvstop_ipvs_service_weight",
    "Sum of the weights of the service's real servers; 0 means new traffic is dropped.",
)
SERVICE_ACTIVE = _gauge(
    "lvstop_ipvs_service_connections_active", "Active connections summed over the service's real servers."
)
SERVICE_INACTIVE = _gauge(
    "lvstop_ipvs_service_connections_inactive", "Inactive connections summed over the service's real servers."
)

DEST_COUNTERS = _counter_specs("lvstop_ipvs_backend", "for the real server")
DEST_RATES = _rate_specs("lvstop_ipvs_backend", "for the real server")
DEST_GAUGES = (
    (
        _gauge("lvstop_ipvs_backend_connections_active", "Active connections of the real server."),
        "active",
    ),
    (
        _gauge("lvstop_ipvs_backend_connections_inactive", "Inactive connections of the real server."),
        "inactive",
    ),
    (
        _gauge(
            "lvstop_ipvs_backend_connections_persistent", "Persistence templates pointing at the real server."
        ),
        "persist",
    ),
    (
        _gauge("lvstop_ipvs_backend_weight", "Weight of the real server; 0 means quiesced (drained)."),
        "weight",
    ),
    (
        _gauge(
            "lvstop_ipvs_backend_upper_threshold", "Upper connection threshold of the real server (0: none)."
        ),
        "u_threshold",
    ),
    (
        _gauge(
            "lvstop_ipvs_backend_lower_threshold", "Lower connection threshold of the real server (0: none)."
        ),
        "l_threshold",
    ),
)
DEST_INFO = _gauge(
    "lvstop_ipvs_backend_info",
    "Real server settings: forwarding method and tunnel type/port/flags; value is 1 (the number of real "
    "servers when dest labels are dropped).",
)
DRAIN_START = _gauge(
    "lvstop_ipvs_backend_drain_start_timestamp_seconds",
    "When lvstop drained the real server (present only while it is drained by lvstop).",
    False,
)
DRAIN_PREVIOUS = _gauge(
    "lvstop_ipvs_backend_drain_previous_weight",
    "The weight a restore puts back (present only while the real server is drained by lvstop).",
    False,
)
DRAIN_STATE_OK = _gauge(
    "lvstop_drain_state_ok",
    "1 when the drain state file can be read, 0 when it cannot (the exporter is then not ready; the file "
    "is kept for the operator).",
    False,
)
EXTERNAL_CHANGES = _counter(
    "lvstop_ipvs_backend_external_weight_changes_total",
    "Weight changes lvstop saw but did not make (keepalived, ldirectord, ipvsadm) since the exporter "
    "started.",
)

CONN_ENTRIES = _gauge(
    "lvstop_ipvs_conntable_entries",
    "Connection-table entries of the service by state (persistence templates excluded).",
)
CONN_TEMPLATES = _gauge(
    "lvstop_ipvs_conntable_templates", "Persistence templates of the service in the connection table."
)
CONN_TOTAL = _gauge(
    "lvstop_ipvs_conntable_read_entries", "Entries read from the connection table in the last read."
)
CONN_PARTIAL = _gauge(
    "lvstop_ipvs_conntable_partial", "1 when the last connection-table read was cut short by its time budget."
)
CONN_SECONDS = _gauge(
    "lvstop_ipvs_conntable_read_duration_seconds", "Duration of the last connection-table read."
)
CONN_TIME = _gauge(
    "lvstop_ipvs_conntable_read_timestamp_seconds", "Wall time of the last connection-table read.", False
)

BUILD_INFO = _gauge(
    "lvstop_build_info",
    "lvstop version, Python version and the source IPVS state is read from; value is 1.",
    False,
)
POLL_SUCCESS = _gauge(
    "lvstop_poll_success", "1 when the last poll of IPVS succeeded, 0 when it failed.", False
)
LAST_SUCCESS = _gauge(
    "lvstop_last_successful_poll_timestamp_seconds", "Wall time of the last successful poll.", False
)
POLL_DURATION = _gauge("lvstop_poll_duration_seconds", "Duration of the last poll.", False)
POLL_ERRORS = Spec(
    "lvstop_poll_errors_total",
    "counter",
    "Polls that failed or read partially, by kind: no_ipvs, no_permission, inconsistent, malformed, "
    "unavailable, io, internal.",
    False,
)
SCRAPE_DURATION = _gauge(
    "lvstop_scrape_duration_seconds",
    "Seconds the previous /metrics request took to get its page ready: a poll when the scrape found the last"
    " one a tick old, and the render of a page not yet made (sending it is not counted).",
    False,
)
RENDER_DURATION = _gauge(
    "lvstop_exposition_render_duration_seconds", "Duration of the previous rendering of this page.", False
)
WEIGHT_EDITS = Spec(
    "lvstop_weight_edits_total",
    "counter",
    "Weight edits asked through the write API by outcome: applied, unchanged, dry_run, rejected, failed.",
    False,
)
MANAGERS = _gauge(
    "lvstop_weight_managers",
    "Running processes that manage IPVS weights themselves (keepalived, ldirectord) and may undo "
    "lvstop's edits.",
    False,
)

BACKEND_HEALTH_UP = _gauge(
    "lvstop_ipvs_backend_health_up",
    "1 when the real server's health checks say up, 0 when down (fall failures in a row); absent while "
    "unknown and for real servers no check matches.",
    False,
)
HEALTH_PROBES = Spec("lvstop_health_probes_total", "counter", "Health probes run, by check type.", False)
HEALTH_PROBE_FAILURES = Spec(
    "lvstop_health_probe_failures_total", "counter", "Health probes that failed, by check type.", False
)
HEALTH_PROBE_SECONDS = Spec(
    "lvstop_health_probe_duration_seconds_total",
    "counter",
    "Time health probes took, summed, by check type (divide by lvstop_health_probes_total for the mean).",
    False,
)


# --- collectors ---


def _counter_rows(items: Iterable[tuple[str, Any]], field: str) -> list[tuple[str, int | float]]:
    return [(lab, getattr(obj, field)) for lab, obj in items if obj is not None]


class DirectorCollector:
    """Director-wide totals, version, sync daemons, timeouts and sysctls."""

    def collect(self, inp: Inputs) -> Iterator[Family]:
        s = inp.snapshot
        if s is None:
            return
        yield Family(SNAPSHOT_TIME, [("", s.wall_time)])
        yield Family(SERVICES, [("", len(s.services))])
        if s.version is not None:
            yield Family(IPVS_INFO, [(labels(version=s.version), 1)])
        if s.conn_tab_size is not None:
            yield Family(CONN_TAB_SIZE, [("", s.conn_tab_size)])
        if s.totals is not None:
            for f, spec in DIRECTOR_COUNTERS:
                yield Family(spec, [("", getattr(s.totals, f))])
        if s.total_rates is not None:
            for f, spec in DIRECTOR_RATES:
                yield Family(spec, [("", getattr(s.total_rates, f))])
        if s.daemons is not None:  # None: the source cannot see them, so no series rather than a 0
            states = {"master": 0, "backup": 0}
            info = []
            for d in s.daemons:
                state = d.state.name.lower()
                states[state] += 1
                info.append((labels(interface=d.mcast_ifn, state=state, syncid=d.syncid), 1))
            yield Family(SYNC_DAEMONS, [(labels(state=k), v) for k, v in states.items()])
            if info:
                yield Family(SYNC_DAEMON_INFO, info)
        if s.timeouts is not None:
            t = s.timeouts
            yield Family(
                TIMEOUTS,
                [(labels(kind="tcp"), t.tcp), (labels(kind="tcpfin"), t.tcpfin), (labels(kind="udp"), t.udp)],
            )
        if s.sysctls:
            yield Family(SYSCTLS, [(labels(name=k), v) for k, v in sorted(s.sysctls.items())])
        if s.est_cpulist is not None:
            yield Family(EST_CPULIST, [(labels(cpulist=s.est_cpulist), 1)])


def service_flags(svc: Service) -> str:
    names = ["persistent"] if svc.persistent else []
    if svc.one_packet:
        names.append("ops")
    return ",".join((*names, *svc.sched_flags()))


class ServiceCollector:
    """Per virtual service: counters, kernel rates, settings, and sums over its real servers (from the
    dest columns: no dest row is built)."""

    def collect(self, inp: Inputs) -> Iterator[Family]:
        s = inp.snapshot
        if s is None:
            return
        table = s.table
        items = [(service_labels(svc.key), svc) for svc in table.services]
        with_counters = [(lab, svc.counters) for lab, svc in items]
        for f, spec in SERVICE_COUNTERS:
            yield Family(spec, _counter_rows(with_counters, f))
        with_rates = [(lab, svc.rates) for lab, svc in items]
        for f, spec in SERVICE_RATES:
            yield Family(spec, _counter_rows(with_rates, f))
        yield Family(
            SERVICE_INFO,
            [
                (
                    lab
                    + ","
                    + labels(
                        flags=service_flags(svc),
                        netmask=svc.prefix_len,
                        pe_name=svc.pe_name,
                        persistence_timeout=svc.timeout if svc.persistent else 0,
                        scheduler=svc.scheduler,
                    ),
                    1,
                )
                for lab, svc in items
            ],
        )
        # A service whose dests could not be read has no trustworthy sums: leave them out.
        whole = [i for i, (_, svc) in enumerate(items) if svc.error is None]
        d = table.dests
        starts = table.starts
        yield Family(SERVICE_BACKENDS, _sums_of(items, whole, np.diff(starts)))
        yield Family(SERVICE_WEIGHT, _sums_of(items, whole, _segment_sums(d.weight, starts)))
        yield Family(SERVICE_ACTIVE, _sums_of(items, whole, _segment_sums(d.active, starts)))
        yield Family(SERVICE_INACTIVE, _sums_of(items, whole, _segment_sums(d.inactive, starts)))


def _segment_sums(column: Array, starts: Array) -> Array:
    """Sums of column[starts[i]:starts[i + 1]] for each i (an empty segment sums to 0)."""
    total = np.concatenate(([0], np.cumsum(column, dtype=np.int64)))
    return total[starts[1:]] - total[starts[:-1]]


def _sums_of(items: Sequence[tuple[str, Service]], rows: list[int], sums: Array) -> list[Row]:
    values = sums.tolist()
    return [(items[i][0], values[i]) for i in rows]


class DestCollector:
    """Per real server, or summed over dropped labels (node_exporter's --collector.ipvs.backend-labels).

    Rendered from the snapshot's dest columns, values a chunk at a time; no dest row is built. With the
    default labels a line's label text is composed as it is written from strings the dests share (their
    service's labels, address and port texts): 100k dests never have 100k label texts at once."""

    def collect(self, inp: Inputs) -> Iterator[Family]:
        s = inp.snapshot
        if s is None or not inp.options.dest_metrics:
            return
        table = s.table
        d = table.dests
        columns: list[tuple[Spec, Array, Array | None]] = []  # spec, values, which have a sample (None: all)
        for values, present, specs in (
            (d.counters, d.has_counters, DEST_COUNTERS),
            (d.rates, d.has_rates, DEST_RATES),
        ):
            every = bool(present.all())
            columns += [
                (spec, values[:, j], None if every else present) for j, (_f, spec) in enumerate(specs)
            ]
        for spec, name in DEST_GAUGES:
            col = getattr(d, name)
            columns.append((spec, col, None if col.min(initial=0) >= 0 else col >= 0))  # -1: no sample
        keep = inp.options.dest_labels
        if keep == DEST_LABELS:  # a dest's labels are its key: one series per dest
            yield from _per_dest(table, columns)
        else:
            yield from _grouped(table, keep, columns)


@dataclass(frozen=True, slots=True)
class DestRows:
    """One sample per dest, with the default labels; `present` False (or a value None): no sample.

    Object columns of shared strings: a line's label text is made only while its chunk is written."""

    service: Array  # the dest's service labels
    address: Array  # remote_address text
    port: Array  # remote_port text
    values: Array
    present: Array | None = None
    info: Array | None = None  # the info metric's settings labels, after the dest's

    def texts(self, name: str) -> Iterator[str]:
        """The sample lines, CHUNK_LINES dests at a time."""
        for i in range(0, len(self.values), CHUNK_LINES):
            j = i + CHUNK_LINES
            values = self.values[i:j].tolist()
            if self.present is not None:
                values = [v if ok else None for v, ok in zip(values, self.present[i:j].tolist(), strict=True)]
            parts = zip(self.service[i:j], self.address[i:j], self.port[i:j], values, strict=True)
            if self.info is None:
                yield "".join(
                    [
                        f'{name}{{{s},remote_address="{a}",remote_port="{p}"}} {v}\n'
                        for s, a, p, v in parts
                        if v is not None
                    ]
                )
            else:
                yield "".join(
                    [
                        f'{name}{{{s},remote_address="{a}",remote_port="{p}",{x}}} {v}\n'
                        for (s, a, p, v), x in zip(parts, self.info[i:j], strict=True)
                        if v is not None
                    ]
                )


def _per_dest(table: Table, columns: list[tuple[Spec, Array, Array | None]]) -> Iterator[Family]:
    d = table.dests
    service = np.array([service_labels(s.key) for s in table.services], dtype=object)[d.service]
    address = np.empty(len(d), dtype=object)
    info = np.empty(len(d), dtype=object)
    cache: dict[tuple[int, int, int, int], str] = {}
    for i in range(0, len(d), CHUNK_LINES):  # chunked: the lists of Python objects stay small
        j = i + CHUNK_LINES
        address[i:j] = [
            address_text(f, raw) for f, raw in zip(d.family[i:j].tolist(), d.addr[i:j].tolist(), strict=True)
        ]
        info[i:j] = [
            cache.get(k) or cache.setdefault(k, dest_info_labels(*k))
            for k in zip(
                d.fwd[i:j].tolist(),
                d.tun_type[i:j].tolist(),
                d.tun_port[i:j].tolist(),
                d.tun_flags[i:j].tolist(),
                strict=True,
            )
        ]
    ports, which = np.unique(d.port, return_inverse=True)
    port = np.array([str(p) for p in ports.tolist()], dtype=object)[which]
    for spec, values, present in columns:
        yield Family(spec, DestRows(service, address, port, values, present))
    yield Family(DEST_INFO, DestRows(service, address, port, np.broadcast_to(1, len(d)), info=info))


def _grouped(
    table: Table, keep: tuple[str, ...], columns: list[tuple[Spec, Array, Array | None]]
) -> Iterator[Family]:
    """Rows of the kept labels; dests sharing them are summed (None when none of them has a sample)."""
    d = table.dests
    labs = _dest_label_column(table, keep)
    # Label sets are unique unless the labels dropped made them equal: only duplicates pay for the groups.
    single = len(set(labs)) == len(labs)
    groups: dict[str, list[int]] = {}
    if not single:
        for i, lab in enumerate(labs):
            groups.setdefault(lab, []).append(i)
    for spec, col, present in columns:
        values: list[int | None] = col.tolist()
        if present is not None:
            values = [v if ok else None for v, ok in zip(values, present.tolist(), strict=True)]
        if single:
            yield Family(spec, Columns(labs, values))
            continue
        sums: list[int | float | None] = []
        for idx in groups.values():
            vals = [v for v in (values[i] for i in idx) if v is not None]
            sums.append(sum(vals) if vals else None)
        yield Family(spec, Columns(list(groups), sums))
    cache: dict[tuple[int, int, int, int], str] = {}
    info: dict[str, int] = {}
    for lab, *k in zip(
        labs, d.fwd.tolist(), d.tun_type.tolist(), d.tun_port.tolist(), d.tun_flags.tolist(), strict=True
    ):
        key = tuple(k)
        extra = cache.get(key) or cache.setdefault(key, dest_info_labels(*k))
        text = f"{lab},{extra}" if lab else extra
        info[text] = info.get(text, 0) + 1
    yield Family(DEST_INFO, list(info.items()))


def _dest_label_column(table: Table, keep: tuple[str, ...]) -> list[str]:
    """Each dest's label text (the kept labels, in `keep` order)."""
    d = table.dests
    values = [service_label_values(s.key) for s in table.services]
    out = []
    for i, f, raw, p in zip(
        d.service.tolist(), d.family.tolist(), d.addr.tolist(), d.port.tolist(), strict=True
    ):
        v = {**values[i], "remote_address": address_text(f, raw), "remote_port": str(p)}
        out.append(",".join(f'{n}="{v[n]}"' for n in keep))
    return out


def dest_info_labels(fwd: int, tun_type: int, tun_port: int, tun_flags: int) -> str:
    """Tunnel labels are empty for other methods, and where the source cannot see them (/proc: -1)."""
    tunnel = fwd == FwdMethod.TUNNEL
    flags = [n for bit, n in ((TUN_F_CSUM, "csum"), (TUN_F_REMCSUM, "remcsum")) if max(tun_flags, 0) & bit]
    return labels(
        forwarding=FwdMethod(fwd).label.lower(),
        tunnel_flags=",".join(flags) if tunnel else "",
        tunnel_port=tun_port if tunnel and tun_port > 0 else "",
        tunnel_type=TunType(tun_type).name.lower() if tunnel and tun_type >= 0 else "",
    )


class ControlCollector:
    """Drains, weight edits, weight changes made outside lvstop, and the processes that make them."""

    def collect(self, inp: Inputs) -> Iterator[Family]:
        c = inp.control
        yield Family(WEIGHT_EDITS, [(labels(outcome=o), c.edits.get(o, 0)) for o in EDIT_OUTCOMES])
        counts = {m: 0 for m in WEIGHT_MANAGERS}
        for name, _pid in c.managers:
            counts[name] = counts.get(name, 0) + 1
        yield Family(MANAGERS, [(labels(name=n), v) for n, v in counts.items()])
        if c.drain_state_ok is not None:
            yield Family(DRAIN_STATE_OK, [("", int(c.drain_state_ok))])
        drains = sorted(c.drains.items())
        yield Family(DRAIN_START, [(dest_labels(s, d), r.since) for (s, d), r in drains])
        yield Family(DRAIN_PREVIOUS, [(dest_labels(s, d), r.previous) for (s, d), r in drains])
        if c.external:
            yield Family(
                EXTERNAL_CHANGES, [(dest_labels(s, d), n) for (s, d), n in sorted(c.external.items())]
            )


class ConnTableCollector:
    """Connection-table aggregates, read off the poll tick with a time budget."""

    def collect(self, inp: Inputs) -> Iterator[Family]:
        c = inp.conn
        if c is None or not inp.options.conntable_metrics:
            return
        yield Family(
            CONN_ENTRIES,
            [
                (f"{service_labels(k)},{labels(state=st)}", n)
                for k, states in sorted(c.by_state.items())
                for st, n in sorted(states.items())
            ],
        )
        yield Family(CONN_TEMPLATES, [(service_labels(k), n) for k, n in sorted(c.templates.items())])
        yield Family(CONN_TOTAL, [("", c.total)])
        yield Family(CONN_PARTIAL, [("", int(c.partial))])
        yield Family(CONN_SECONDS, [("", c.read_seconds)])
        yield Family(CONN_TIME, [("", c.time)])


class HealthCollector:
    """The exporter's own health: build, poll success and duration, errors by kind, scrape duration."""

    def collect(self, inp: Inputs) -> Iterator[Family]:
        h = inp.health
        yield Family(
            BUILD_INFO,
            [(labels(python_version=h.python_version, source=h.source, version=h.version), 1)],
        )
        yield Family(POLL_SUCCESS, [("", int(h.poll_success))])
        if h.last_success is not None:
            yield Family(LAST_SUCCESS, [("", h.last_success)])
        if h.poll_duration is not None:
            yield Family(POLL_DURATION, [("", h.poll_duration)])
        yield Family(POLL_ERRORS, [(labels(kind=k), h.errors.get(k, 0)) for k in ERROR_KINDS])
        if h.scrape_duration is not None:
            yield Family(SCRAPE_DURATION, [("", h.scrape_duration)])
        if h.render_duration is not None:
            yield Family(RENDER_DURATION, [("", h.render_duration)])


class BackendHealthCollector:
    """Health checks: a checked dest's state (1 up, 0 down; absent while unknown, and for dests no check
    matches), and what the probes cost, by check type."""

    def collect(self, inp: Inputs) -> Iterator[Family]:
        b = inp.backends
        if b is None:
            return
        if inp.options.dest_metrics:
            keep = inp.options.dest_labels
            bases: dict[ServiceKey, str] = {}  # each service's labels formatted once, as for DestCollector
            up: dict[str, int] = {}  # dests sharing the kept labels: down when any of them is
            for (s, d), state in b.states.items():  # in the checks' order: the snapshot's
                if state == "unknown":
                    continue
                if keep == DEST_LABELS:
                    base = bases.get(s) or bases.setdefault(s, service_labels(s))
                    key = f'{base},remote_address="{d.address}",remote_port="{d.port}"'
                else:
                    key = dest_labels(s, d, keep)
                up[key] = min(up.get(key, 1), int(state == "up"))
            yield Family(BACKEND_HEALTH_UP, list(up.items()))
        probes = sorted(b.probes.items())
        yield Family(HEALTH_PROBES, [(labels(check=c), n) for c, (n, _, _) in probes])
        yield Family(HEALTH_PROBE_FAILURES, [(labels(check=c), f) for c, (_, f, _) in probes])
        yield Family(HEALTH_PROBE_SECONDS, [(labels(check=c), t) for c, (_, _, t) in probes])


COLLECTORS = (
    HealthCollector(),
    DirectorCollector(),
    ServiceCollector(),
    DestCollector(),
    ControlCollector(),
    ConnTableCollector(),
    BackendHealthCollector(),
)


def collect(inp: Inputs) -> Iterator[Family]:
    for c in COLLECTORS:
        yield from c.collect(inp)


# --- exposition ---


@dataclass(frozen=True, slots=True)
class Body:
    """A rendered page: always gzip; the identity bytes too unless they were too big to keep."""

    gzip: bytes
    size: int  # length of the identity bytes
    identity: bytes | None

    def identity_chunks(self, chunk: int = 1 << 16) -> Iterator[bytes]:
        if self.identity is not None:
            yield self.identity
            return
        d = zlib.decompressobj(wbits=31)
        for i in range(0, len(self.gzip), chunk):
            out = d.decompress(self.gzip[i : i + chunk])
            if out:
                yield out
        tail = d.flush()
        if tail:
            yield tail


class BodyWriter:
    """Collects text into gzip (level 1: the text is very repetitive); a page of at most keep_limit bytes
    also keeps its identity bytes, inflated from the gzip once it is complete.

    Only the compressed page is held while writing: a page too big to keep is never buffered plain
    (before its end its size is unknown). Into a BytesIO buffer, whose getvalue() hands its buffer over.
    """

    def __init__(self, keep_limit: int = 32 << 20) -> None:
        self._z = zlib.compressobj(1, zlib.DEFLATED, 31)
        self._gzip = io.BytesIO()
        self._limit = keep_limit
        self.size = 0

    def write(self, text: str) -> None:
        b = text.encode()
        self.size += len(b)
        self._gzip.write(self._z.compress(b))

    def finish(self) -> Body:
        self._gzip.write(self._z.flush())
        page = self._gzip.getvalue()
        return Body(page, self.size, zlib.decompress(page, wbits=31) if self.size <= self._limit else None)


def help_text(spec: Spec, tick: float) -> str:
    text = spec.help + (f" Cached: refreshed once per {tick:g} s poll tick." if spec.cached else "")
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _batches(rows: Iterable[Row]) -> Iterator[list[Row]]:
    it = iter(rows)
    while batch := list(islice(it, CHUNK_LINES)):
        yield batch


def render(families: Iterable[Family], out: BodyWriter, tick: float) -> None:
    """The Prometheus text format (0.0.4), written in chunks; families without samples are left out.

    Values print as Python's str(): ints as they are, floats as repr (inf and nan included), all of
    which Prometheus' parser (Go's strconv.ParseFloat) reads.
    """
    for fam in families:
        rows = fam.rows
        name = fam.spec.name
        header = f"# HELP {name} {help_text(fam.spec, tick)}\n# TYPE {name} {fam.spec.type}\n"
        if isinstance(rows, Columns) and len(rows.labels) == 1:
            rows = [(rows.labels[0], rows.values[0])]
        if isinstance(rows, Sequence) and len(rows) == 1 and not rows[0][0]:  # one sample, no labels
            if rows[0][1] is not None:
                out.write(f"{header}{name} {rows[0][1]}\n")
            continue
        for text in rows.texts(name) if isinstance(rows, DestRows) else _texts(name, rows):
            if text:
                out.write(header + text if header else text)  # no header for a family without samples
                header = ""


def _texts(name: str, rows: Sequence[Row] | Columns | Iterator[Row]) -> Iterator[str]:
    """The sample lines, CHUNK_LINES rows at a time."""
    chunks: Iterable[Iterable[Row]]
    if isinstance(rows, Columns):
        labs, vals = rows.labels, rows.values
        chunks = (
            zip(labs[i : i + CHUNK_LINES], vals[i : i + CHUNK_LINES], strict=True)
            for i in range(0, len(labs), CHUNK_LINES)
        )
    else:
        chunks = _batches(rows)
    for lines in chunks:
        yield "".join([f"{name}{{{lab}}} {v}\n" for lab, v in lines if v is not None])


def render_inputs(inp: Inputs, keep_limit: int = 32 << 20) -> Body:
    w = BodyWriter(keep_limit)
    render(collect(inp), w, inp.options.tick)
    if inp.runtime is not None:
        w.write(inp.runtime())
    return w.finish()


class RuntimeMetrics:
    """The exporter process itself, by prometheus-client's collectors: process_* (CPU, memory, open
    files, process_start_time_seconds, which tells restarts apart from counter resets), python_info and
    python_gc_*. A few dozen samples, so client_python's own renderer is cheap enough here."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def __call__(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()
