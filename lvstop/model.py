"""The IPVS model: frozen, slotted dataclasses shared by every source and every consumer.

Numbers keep the kernel's units: counters are cumulative, rates are per second (bytes/s for the
byte rates), timeouts are seconds. A field that a source cannot see is None, never zero.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import socket
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar, overload

import numpy as np
import numpy.typing as npt

from lvstop import gcpolicy

AF_INET = 2
AF_INET6 = 10


class Protocol(enum.IntEnum):
    """IP protocol of a service; fwmark services carry NONE."""

    NONE = 0
    TCP = 6
    UDP = 17
    SCTP = 132

    @property
    def label(self) -> str:
        return self.name if self is not Protocol.NONE else "FWM"


class FwdMethod(enum.IntEnum):
    """IP_VS_CONN_F_FWD_MASK values, named as ipvsadm prints them."""

    MASQ = 0
    LOCAL = 1
    TUNNEL = 2
    ROUTE = 3
    BYPASS = 4

    @property
    def label(self) -> str:
        return {0: "Masq", 1: "Local", 2: "Tunnel", 3: "Route", 4: "Bypass"}[self.value]


class TunType(enum.IntEnum):
    IPIP = 0
    GUE = 1
    GRE = 2


# IP_VS_SVC_F_* (include/uapi/linux/ip_vs.h)
SVC_F_PERSISTENT = 0x0001
SVC_F_HASHED = 0x0002
SVC_F_ONEPACKET = 0x0004
SVC_F_SCHED1 = 0x0008
SVC_F_SCHED2 = 0x0010
SVC_F_SCHED3 = 0x0020

# IP_VS_TUNNEL_ENCAP_FLAG_*
TUN_F_CSUM = 0x0001
TUN_F_REMCSUM = 0x0002


def normalize_address(family: int, address: str) -> str:
    """Canonical text form (compressed IPv6) so that keys from every source compare equal."""
    if family == AF_INET6:
        return str(ipaddress.IPv6Address(address))
    return str(ipaddress.IPv4Address(address))


def format_hostport(family: int, address: str, port: int) -> str:
    """`192.0.2.1:80` or `[2001:db8::1]:80`, as ipvsadm -n prints them."""
    return f"[{address}]:{port}" if family == AF_INET6 else f"{address}:{port}"


@dataclass(frozen=True, slots=True, order=True)
class ServiceKey:
    """What identifies a virtual service in the kernel: (af, protocol, addr, port) or (af, fwmark)."""

    family: int
    protocol: Protocol
    address: str  # "" for fwmark services
    port: int  # 0 for fwmark services
    fwmark: int = 0

    @classmethod
    def tcp(cls, address: str, port: int) -> ServiceKey:
        fam = AF_INET6 if ":" in address else AF_INET
        return cls(fam, Protocol.TCP, normalize_address(fam, address), port)

    @classmethod
    def udp(cls, address: str, port: int) -> ServiceKey:
        fam = AF_INET6 if ":" in address else AF_INET
        return cls(fam, Protocol.UDP, normalize_address(fam, address), port)

    @classmethod
    def mark(cls, fwmark: int, family: int = AF_INET) -> ServiceKey:
        return cls(family, Protocol.NONE, "", 0, fwmark)

    @property
    def is_fwmark(self) -> bool:
        return self.fwmark != 0

    def __str__(self) -> str:
        if self.is_fwmark:
            return f"FWM {self.fwmark}" + (" IPv6" if self.family == AF_INET6 else "")
        return f"{self.protocol.label} {format_hostport(self.family, self.address, self.port)}"


@dataclass(frozen=True, slots=True, order=True)
class DestKey:
    """A real server within a service. Its family may differ from the service's (tunnel dests)."""

    family: int
    address: str
    port: int

    def __str__(self) -> str:
        return format_hostport(self.family, self.address, self.port)


@dataclass(frozen=True, slots=True)
class Counters:
    """Cumulative 64-bit counters as the kernel's estimator last refreshed them."""

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0


@dataclass(frozen=True, slots=True)
class Rates:
    """Per-second rates: connections, packets in/out, bytes in/out (bytes per second)."""

    cps: float = 0
    inpps: float = 0
    outpps: float = 0
    inbps: float = 0
    outbps: float = 0


@dataclass(frozen=True, slots=True)
class Dest:
    family: int
    address: str
    port: int
    fwd: FwdMethod
    weight: int
    u_threshold: int | None = 0  # None where the source cannot see it (/proc), as for the tunnel fields
    l_threshold: int | None = 0
    active_conns: int = 0
    inactive_conns: int = 0
    persist_conns: int | None = 0  # None where the source cannot see it (/proc)
    tun_type: TunType | None = TunType.IPIP
    tun_port: int | None = 0
    tun_flags: int | None = 0
    counters: Counters | None = None
    rates: Rates | None = None  # the kernel's EWMA (or lvstop's reproduction of it)
    instant: Rates | None = None  # plain delta over the last measured interval

    @property
    def key(self) -> DestKey:
        return DestKey(self.family, self.address, self.port)


@dataclass(frozen=True, slots=True)
class Service:
    key: ServiceKey
    scheduler: str
    flags: int = 0
    timeout: int = 0  # persistence timeout, seconds
    netmask: int = 0xFFFFFFFF  # IPv4: the mask as u32; IPv6: the prefix length
    pe_name: str = ""
    counters: Counters | None = None
    rates: Rates | None = None
    instant: Rates | None = None
    dests: tuple[Dest, ...] = ()
    # Set when the dests could not be read consistently (vanished mid-dump, error): dests are then
    # incomplete and must not be shown as "zero dests".
    error: str | None = None

    @property
    def persistent(self) -> bool:
        return bool(self.flags & SVC_F_PERSISTENT)

    @property
    def hashed(self) -> bool:
        return bool(self.flags & SVC_F_HASHED)

    @property
    def one_packet(self) -> bool:
        return bool(self.flags & SVC_F_ONEPACKET)

    @property
    def prefix_len(self) -> int:
        if self.key.family == AF_INET6:
            return self.netmask
        return bin(self.netmask & 0xFFFFFFFF).count("1")

    def sched_flags(self) -> tuple[str, ...]:
        """Scheduler flag names as ipvsadm prints them (sh-fallback, mh-port, ...)."""
        names: list[str] = []
        if self.scheduler in ("sh", "mh"):
            if self.flags & SVC_F_SCHED1:
                names.append(f"{self.scheduler}-fallback")
            if self.flags & SVC_F_SCHED2:
                names.append(f"{self.scheduler}-port")
        else:
            for bit, name in ((SVC_F_SCHED1, "flag-1"), (SVC_F_SCHED2, "flag-2"), (SVC_F_SCHED3, "flag-3")):
                if self.flags & bit:
                    names.append(name)
        return tuple(names)

    def dest(self, key: DestKey) -> Dest | None:
        for d in self.dests:
            if d.key == key:
                return d
        return None

    @property
    def live_weight(self) -> int:
        return sum(d.weight for d in self.dests)


class DaemonState(enum.IntEnum):
    MASTER = 1
    BACKUP = 2


@dataclass(frozen=True, slots=True)
class Daemon:
    state: DaemonState
    mcast_ifn: str
    syncid: int
    maxlen: int | None = None
    group: str | None = None
    group6: str | None = None
    port: int | None = None
    ttl: int | None = None


@dataclass(frozen=True, slots=True)
class Timeouts:
    tcp: int
    tcpfin: int
    udp: int


class IssueKind(enum.StrEnum):
    """Why something could not be read. The exporter counts errors by these kinds."""

    NO_IPVS = "no_ipvs"  # ip_vs module not loaded (lvstop never loads it)
    NO_PERMISSION = "no_permission"  # CAP_NET_ADMIN missing
    INCONSISTENT = "inconsistent"  # changed during the dump (service vanished, ...)
    MALFORMED = "malformed"  # truncated or unexpected reply / file
    UNAVAILABLE = "unavailable"  # the source cannot provide it at all (e.g. /proc lacks counters)
    IO = "io"  # anything else the OS said


@dataclass(frozen=True, slots=True)
class Issue:
    kind: IssueKind
    message: str
    service: ServiceKey | None = None


def _frozen_map(m: Mapping[str, int] | None = None) -> Mapping[str, int]:
    return MappingProxyType(dict(m or {}))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one poll saw. Immutable: the TUI, exporter and listing share one instance.

    `services` is a tuple of rows, or (from the columnar poll path) a ServiceRows that makes the rows
    from `table` when they are first asked for. `table` is the columnar form either way.
    """

    source: str  # netlink | proc | demo | replay | remote
    director: str  # host name (or the remote's)
    wall_time: float  # time.time() when the poll started
    mono_time: float  # time.monotonic() when the poll started
    services: Sequence[Service] = ()
    version: str | None = None  # e.g. "1.2.1"
    conn_tab_size: int | None = None
    totals: Counters | None = None  # /proc/net/ip_vs_stats
    total_rates: Rates | None = None
    total_instant: Rates | None = None
    daemons: tuple[Daemon, ...] | None = ()  # None: the source cannot see them (/proc)
    timeouts: Timeouts | None = None
    sysctls: Mapping[str, int] = field(default_factory=_frozen_map)
    issues: tuple[Issue, ...] = ()
    poll_duration: float | None = None  # seconds the read took
    seq: int = 0  # poll counter, set by the poller
    # net.ipv4.vs.est_cpulist (6.2+): CPUs the estimator kthreads may run on, as the kernel prints it;
    # "" means estimation is stopped; None where the kernel has no such sysctl or it could not be read
    est_cpulist: str | None = None
    _table: Table | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def table(self) -> Table:
        """The services and their dests as columns (made from the rows, once, if the source gave rows)."""
        services = self.services
        if isinstance(services, ServiceRows):
            return services.table
        table = self._table
        if table is None:
            table = Table.from_rows(services)
            object.__setattr__(self, "_table", table)
        return table

    def service(self, key: ServiceKey) -> Service | None:
        services = self.services
        if isinstance(services, ServiceRows):
            i = services.table.index(key)
            return None if i is None else services[i]
        for s in services:
            if s.key == key:
                return s
        return None

    @property
    def ok(self) -> bool:
        """True when nothing the source should have read was missing."""
        return not any(i.kind is not IssueKind.UNAVAILABLE for i in self.issues)


# The IPVS sysctls that explain traffic behaviour; sources read at least these.
EXPLAINING_SYSCTLS = (
    "expire_nodest_conn",
    "expire_quiescent_template",
    "conn_reuse_mode",
    "run_estimation",
    "conntrack",
    "sloppy_tcp",
    "sloppy_sctp",
    "backup_only",
)


@dataclass(frozen=True, slots=True)
class ConnEntry:
    """One line of /proc/net/ip_vs_conn (or _sync)."""

    protocol: str  # TCP, UDP, SCTP, IP (fwmark entries with protocol 0 show as "IP")
    client: str
    client_port: int
    vaddr: str
    vport: int
    daddr: str
    dport: int
    state: str
    expires: int  # seconds
    pe_name: str = ""
    pe_data: str = ""
    origin: str | None = None  # LOCAL or SYNC (only from ip_vs_conn_sync)

    @property
    def is_template(self) -> bool:
        """Persistence templates have client port 0 (state NONE for UDP, ASSURED-ish for TCP)."""
        return self.client_port == 0


# ------------------------------------------------------------------------------------ columns

U64 = np.uint64
Array = npt.NDArray[Any]
SERVICE_KEY_BYTES = 28  # family u16, protocol u16, address 16, port u16, pad 2, fwmark u32
DEST_KEY_BYTES = SERVICE_KEY_BYTES + 20  # + family u16, port u16, address 16
_SERVICE_KEY = struct.Struct("=HH16sH2xI")
_DEST_KEY = np.dtype(
    {
        "names": ["service", "family", "port", "addr"],
        "formats": [f"V{SERVICE_KEY_BYTES}", "<u2", "<u2", "V16"],
        "offsets": [0, SERVICE_KEY_BYTES, SERVICE_KEY_BYTES + 2, SERVICE_KEY_BYTES + 4],
        "itemsize": DEST_KEY_BYTES,
    }
)


def service_key_bytes(key: ServiceKey) -> bytes:
    """A service key as fixed-size bytes: the start of its dests' keys (see DestTable.keys)."""
    addr = socket.inet_pton(key.family, key.address) if key.address else b""
    return _SERVICE_KEY.pack(key.family, key.protocol, addr, key.port, key.fwmark)


def dest_key_bytes(skey: ServiceKey, family: int, address: str, port: int) -> bytes:
    """A dest's key as DestTable.keys makes it."""
    return service_key_bytes(skey) + struct.pack("<HH", family, port) + address_bytes(family, address)


def address_bytes(family: int, address: str) -> bytes:
    """A union nf_inet_addr: the address in the first 4 (IPv4) or 16 bytes, zero padded."""
    return socket.inet_pton(family, address).ljust(16, b"\0")


_TEXT: dict[int, dict[bytes, str]] = {AF_INET: {}, AF_INET6: {}}
_TEXT_MAX = 1 << 16


def address_text(family: int, raw: bytes) -> str:
    """Text of a union nf_inet_addr, as normalize_address writes it (cached: real servers repeat).
    Raises ValueError for an unknown family."""
    cache = _TEXT.get(family)
    if cache is None:
        raise ValueError(f"unknown address family {family}")
    name = cache.get(raw)
    if name is None:
        name = str(ipaddress.IPv4Address(raw[:4]) if family == AF_INET else ipaddress.IPv6Address(raw[:16]))
        if len(cache) >= _TEXT_MAX:
            cache.clear()
        cache[raw] = name
    return name


def _zeros5(n: int, dtype: Any = U64) -> Array:
    return np.zeros((n, 5), dtype)


@dataclass(frozen=True, slots=True, eq=False)
class DestTable:
    """The dests of a snapshot as columns, one row per dest, grouped by service in snapshot order.

    Integers that a source cannot see (/proc) are -1 for None: thresholds, persist and the tunnel
    fields; has_counters, has_rates and has_instant say whether the (n, 5) counters (u64), rates (u64,
    the kernel's integers) and instant (float64) rows hold values or None.
    """

    service: Array  # intp: index of the dest's service in the snapshot
    family: Array  # u16
    addr: Array  # V16, a union nf_inet_addr
    port: Array  # u16, host order
    fwd: Array  # u8
    weight: Array  # i64
    u_threshold: Array  # i64, -1 = None
    l_threshold: Array  # i64, -1 = None
    active: Array  # i64
    inactive: Array  # i64
    persist: Array  # i64, -1 = None
    tun_type: Array  # i64, -1 = None
    tun_port: Array  # i64, host order, -1 = None
    tun_flags: Array  # i64, -1 = None
    counters: Array  # (n, 5) u64
    has_counters: Array  # bool
    rates: Array  # (n, 5) u64
    has_rates: Array  # bool
    instant: Array  # (n, 5) float64
    has_instant: Array  # bool

    def __len__(self) -> int:
        return len(self.service)

    @classmethod
    def empty(cls, n: int = 0) -> DestTable:
        i64 = np.zeros(n, np.int64)
        return cls(
            np.zeros(n, np.intp),
            np.zeros(n, np.uint16),
            np.zeros(n, "V16"),
            np.zeros(n, np.uint16),
            np.zeros(n, np.uint8),
            i64,
            i64.copy(),
            i64.copy(),
            i64.copy(),
            i64.copy(),
            i64.copy(),
            i64.copy(),
            i64.copy(),
            i64.copy(),
            _zeros5(n),
            np.zeros(n, bool),
            _zeros5(n),
            np.zeros(n, bool),
            _zeros5(n, np.float64),
            np.zeros(n, bool),
        )

    @classmethod
    def from_rows(cls, services: Sequence[Service]) -> DestTable:
        dests = [(i, d) for i, s in enumerate(services) for d in s.dests]
        t = cls.empty(len(dests))
        if not dests:
            return t
        t.service[:] = [i for i, _ in dests]
        rows = [d for _, d in dests]
        t.family[:] = [d.family for d in rows]
        t.addr[:] = [address_bytes(d.family, d.address) for d in rows]
        t.port[:] = [d.port for d in rows]
        t.fwd[:] = [d.fwd for d in rows]
        t.weight[:] = [d.weight for d in rows]
        t.u_threshold[:] = [_int(d.u_threshold) for d in rows]
        t.l_threshold[:] = [_int(d.l_threshold) for d in rows]
        t.active[:] = [d.active_conns for d in rows]
        t.inactive[:] = [d.inactive_conns for d in rows]
        t.persist[:] = [_int(d.persist_conns) for d in rows]
        t.tun_type[:] = [_int(d.tun_type) for d in rows]
        t.tun_port[:] = [_int(d.tun_port) for d in rows]
        t.tun_flags[:] = [_int(d.tun_flags) for d in rows]
        for values, flags, attr, names in (
            (t.counters, t.has_counters, "counters", COUNTER_FIELDS),
            (t.rates, t.has_rates, "rates", RATE_FIELDS),
            (t.instant, t.has_instant, "instant", RATE_FIELDS),
        ):
            for k, d in enumerate(rows):
                x = getattr(d, attr)
                if x is not None:
                    flags[k] = True
                    values[k] = [getattr(x, f) for f in names]
        return t

    @staticmethod
    def concat(parts: Sequence[DestTable]) -> DestTable:
        if len(parts) == 1:
            return parts[0]
        return DestTable(*(np.concatenate([getattr(p, f) for p in parts]) for f in _DEST_COLUMNS))

    def take(self, rows: Array) -> DestTable:
        return DestTable(*(getattr(self, f)[rows] for f in _DEST_COLUMNS))

    def rows(self, start: int = 0, stop: int | None = None) -> list[Dest]:
        """Dest rows start..stop, made from the columns."""
        sl = slice(start, len(self) if stop is None else stop)
        family = self.family[sl].tolist()
        raw = self.addr[sl].tolist()
        pairs = list(zip(family, raw, strict=True))
        names = {fa: address_text(*fa) for fa in set(pairs)}  # real servers repeat across services
        tun = [None if t < 0 else _TUN[t] for t in self.tun_type[sl].tolist()]
        counters = _rows_of(_new_counters, self.counters[sl], self.has_counters[sl])
        rates = _rows_of(_new_rates, self.rates[sl], self.has_rates[sl])
        instant = _rows_of(_new_rates, self.instant[sl], self.has_instant[sl])
        return [
            _new_dest(f, names[f, a], p, _FWD[m], w, u, lt, ac, ic, ps, tt, tp, tf, c, r, i)
            for f, a, p, m, w, u, lt, ac, ic, ps, tt, tp, tf, c, r, i in zip(
                family,
                raw,
                self.port[sl].tolist(),
                self.fwd[sl].tolist(),
                self.weight[sl].tolist(),
                optional_values(self.u_threshold[sl]),
                optional_values(self.l_threshold[sl]),
                self.active[sl].tolist(),
                self.inactive[sl].tolist(),
                optional_values(self.persist[sl]),
                tun,
                optional_values(self.tun_port[sl]),
                optional_values(self.tun_flags[sl]),
                counters,
                rates,
                instant,
                strict=True,
            )
        ]

    def keys(self, service_keys: Array) -> Array:
        """One DEST_KEY_BYTES void per dest: its service's key bytes (`service_keys`, V28 per service),
        family, port and address. Equal keys, equal dests, across snapshots."""
        k = np.empty(len(self), _DEST_KEY)
        k["service"] = service_keys[self.service]
        k["family"] = self.family
        k["port"] = self.port
        k["addr"] = self.addr
        return k.view(f"V{DEST_KEY_BYTES}")


_DEST_COLUMNS = tuple(f.name for f in dataclasses.fields(DestTable))
COUNTER_FIELDS = tuple(f.name for f in dataclasses.fields(Counters))
RATE_FIELDS = tuple(f.name for f in dataclasses.fields(Rates))
_FWD = tuple(FwdMethod)
_TUN = tuple(TunType)


def _int(x: int | None) -> int:
    return -1 if x is None else x


def optional_values(column: Array) -> list[int | None]:
    """A column's values, -1 as None."""
    values: list[int | None] = column.tolist()
    return values if column.min(initial=0) >= 0 else [None if v < 0 else v for v in values]  # type: ignore[operator]


def _rows_of(cls: Callable[..., _F], values: Array, present: Array) -> list[_F | None]:
    if present.all():
        return [cls(*v) for v in values.tolist()]
    return [cls(*v) if ok else None for v, ok in zip(values.tolist(), present.tolist(), strict=True)]


@dataclass(frozen=True, slots=True, eq=False)
class Table:
    """A snapshot's services (rows without their dests: services are few) and all dests as columns."""

    services: tuple[Service, ...]
    dests: DestTable
    starts: Array  # intp, len(services) + 1: the dests of service i are rows starts[i]:starts[i + 1]
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, services: Sequence[Service], dests: DestTable) -> Table:
        """`services` (their dests are ignored) and their dests, whose `service` column is sorted."""
        starts = np.searchsorted(dests.service, np.arange(len(services) + 1), "left")
        bare = tuple(s if not s.dests else dataclasses.replace(s, dests=()) for s in services)
        return cls(bare, dests, starts)

    @classmethod
    def from_rows(cls, services: Sequence[Service]) -> Table:
        return cls.build(services, DestTable.from_rows(services))

    def index(self, key: ServiceKey) -> int | None:
        where = self._cache.get("index")
        if where is None:
            where = self._cache["index"] = {s.key: i for i, s in enumerate(self.services)}
        return where.get(key)

    def service_keys(self) -> Array:
        """service_key_bytes of each service, as V28 voids."""
        k = self._cache.get("service_keys")
        if k is None:
            raw = b"".join(service_key_bytes(s.key) for s in self.services)
            k = self._cache["service_keys"] = np.frombuffer(raw, f"V{SERVICE_KEY_BYTES}").copy()
        return k

    def dest_keys(self) -> Array:
        k = self._cache.get("dest_keys")
        if k is None:
            k = self._cache["dest_keys"] = self.dests.keys(self.service_keys())
        return k

    def dest_count(self, i: int) -> int:
        return int(self.starts[i + 1] - self.starts[i])


class ServiceRows(Sequence[Service]):
    """Snapshot.services made from a Table: a service's row (with its dests) is built when first read."""

    __slots__ = ("_rows", "table")

    def __init__(self, table: Table) -> None:
        self.table = table
        self._rows: list[Service | None] = [None] * len(table.services)

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, i: int) -> Service: ...

    @overload
    def __getitem__(self, i: slice) -> tuple[Service, ...]: ...

    def __getitem__(self, i: int | slice) -> Service | tuple[Service, ...]:
        if isinstance(i, slice):
            return tuple(self[j] for j in range(len(self._rows))[i])
        row = self._rows[i]
        if row is None:
            t = self.table
            n = len(self._rows)
            j = i + n if i < 0 else i
            with gcpolicy.paused():
                row = self._row(j, t.dests.rows(int(t.starts[j]), int(t.starts[j + 1])))
            self._rows[j] = row
        return row

    def _row(self, i: int, dests: list[Dest]) -> Service:
        s = self.table.services[i]
        return dataclasses.replace(s, dests=tuple(dests)) if dests else s

    def __iter__(self) -> Iterator[Service]:
        if None in self._rows:  # all at once: one pass over the columns
            t = self.table
            with gcpolicy.paused():  # several objects per dest, no cycles (lvstop.gcpolicy)
                dests = t.dests.rows()
                starts = t.starts.tolist()
                for i, row in enumerate(self._rows):
                    if row is None:
                        self._rows[i] = self._row(i, dests[starts[i] : starts[i + 1]])
        return iter(self._rows)  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ServiceRows | tuple | list):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"ServiceRows({tuple(self)!r})"


def align(prev: Array, cur: Array) -> Array:
    """For each key of `cur`, the index of the equal key in `prev`, or -1 (keys: voids, unique)."""
    n = len(cur)
    if len(prev) == n:
        if (prev == cur).all():  # the usual poll: the same rows in the same order (no copy of either)
            return np.arange(n)
        width = prev.dtype.itemsize
        if width % 8 == 0:
            eq = (prev.view(np.uint64).reshape(n, -1) == cur.view(np.uint64).reshape(n, -1)).all(axis=1)
            if eq.sum() * 2 > n:  # mostly in place: look up only the rest
                out = np.where(eq, np.arange(n), -1)
                where = {k: i for i, k in enumerate(prev.tolist())}
                rest = np.flatnonzero(~eq)
                out[rest] = [where.get(k, -1) for k in cur[rest].tolist()]
                return out
    where = {k: i for i, k in enumerate(prev.tolist())}
    return np.fromiter((where.get(k, -1) for k in cur.tolist()), np.intp, n)


# ------------------------------------------------------------------------------------ fast builders
# Rows made from columns (DestTable.rows) are built with these: measured at 100k dests with the
# collector paused, 0.23-0.26 s with them against 0.50-0.73 s with the dataclass __init__s.

_F = TypeVar("_F")
_TWINS: dict[type, type] = {}


def _build(cls: type[_F], fn: str, params: tuple[str, ...], values: dict[str, str]) -> Callable[..., _F]:
    """Compile `def fn(*params)` returning a `cls` whose fields are set from the `values` expressions.

    A frozen dataclass's __init__ sets every field through object.__setattr__ (a name lookup and a
    descriptor call each): 2 us for a Dest, the bulk of a poll at 5,000 dests. This stores the fields
    into a plain twin class with the very same __slots__ and then relabels the instance as `cls`;
    CPython allows that between classes of identical layout, and the result is an ordinary frozen
    instance, equal to the one __init__ builds (the model has no __post_init__ or validation).
    """
    names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    twin = _TWINS.get(cls)
    if twin is None:
        twin = _TWINS[cls] = type(f"_{cls.__name__}Twin", (), {"__slots__": cls.__slots__})  # type: ignore[attr-defined]
    lines = [f"def {fn}({', '.join(params)}):", "    o = _new(_twin)"]
    lines += [f"    o.{n} = {values[n]}" for n in names]
    lines += ["    o.__class__ = _cls", "    return o"]
    scope: dict[str, Any] = {"_new": object.__new__, "_twin": twin, "_cls": cls}
    exec("\n".join(lines), scope)  # source generated from the field names alone
    return scope[fn]  # type: ignore[no-any-return]


def fast_constructor(cls: type[_F]) -> Callable[..., _F]:
    """`cls(*values)` with every field given positionally, in field order (no defaults), 4x faster."""
    names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    return _build(cls, f"new_{cls.__name__.lower()}", names, {n: n for n in names})


_new_dest = fast_constructor(Dest)
_new_counters = fast_constructor(Counters)
_new_rates = fast_constructor(Rates)
