"""The IPVS model: frozen, slotted dataclasses shared by every source and every consumer.

Numbers keep the kernel's units: counters are cumulative, rates are per second (bytes/s for the
byte rates), timeouts are seconds. A field that a source cannot see is None, never zero.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

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
    """Everything one poll saw. Immutable: the TUI, exporter and listing share one instance."""

    source: str  # netlink | proc | demo | replay | remote
    director: str  # host name (or the remote's)
    wall_time: float  # time.time() when the poll started
    mono_time: float  # time.monotonic() when the poll started
    services: tuple[Service, ...] = ()
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

    def service(self, key: ServiceKey) -> Service | None:
        for s in self.services:
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


# ------------------------------------------------------------------------------------ fast builders

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


def fast_replacer(cls: type[_F], *changed: str) -> Callable[..., _F]:
    """`lambda obj, *values: dataclasses.replace(obj, **dict(zip(changed, values)))`, 5x faster."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if not set(changed) <= names or "obj" in changed:
        raise ValueError(f"{cls.__name__} has no field among {changed!r}")
    values = {n: n if n in changed else f"obj.{n}" for n in names}
    return _build(cls, f"replace_{cls.__name__.lower()}", ("obj", *changed), values)
