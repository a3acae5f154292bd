"""The demo director: a believable IPVS director in memory, seeded and driven by an injected clock.

The default director ("demo-director") has fourteen services of every kind the kernel knows: TCP,
UDP, SCTP and fwmark services (one of them IPv6), IPv4 and IPv6 VIPs, NAT, DR and tunnel dests (one
GUE tunnel with checksums), persistence with a netmask and with the SIP engine, one-packet
scheduling, rr/wrr/lc/wlc/sed/sh/mh schedulers (mh with its flags), thresholds that overload a dest
at the daily peak, a master sync daemon, timeouts and sysctls. Two dests tell a story:

- 192.0.2.24 (api, DR) died three minutes before start: its weight is still 2, so IPVS keeps sending
  it connections, which never establish: conns and inpkts grow, ActiveConn sinks to 0 and InActConn
  holds the SYN_RECV entries; nothing comes back.
- 192.0.2.33 (imaps) was drained (weight 1 -> 0) three minutes before start: it gets no new
  connections and its long-lived active ones decay over the next hour.

`SimSource(services=N, dests_per_service=M)` builds a synthetic director of that size instead.

Traffic follows a daily curve (low at 04:00 UTC, high at 16:00), with noise and occasional bursts,
spread over the dests by weight (hash schedulers are uneven, persistent clients stick to their
dest). As in the kernel, counters only move when the estimator would have refreshed them, every 2 s
of the clock; the sim leaves rates to the poller. The state at any time depends only on the seed and
the clock, never on how often it is read. get_dest/set_dest behave like the kernel's (weight 0 means
no new connections; what is established decays), so the demo can be drained like a director.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from lvstop.errors import ControlError
from lvstop.model import (
    AF_INET,
    AF_INET6,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    TUN_F_CSUM,
    Counters,
    Daemon,
    DaemonState,
    Dest,
    DestKey,
    DestTable,
    FwdMethod,
    Protocol,
    Service,
    ServiceKey,
    ServiceRows,
    Snapshot,
    Table,
    Timeouts,
    TunType,
    address_bytes,
)

TICK = 2.0  # the kernel's estimator period: counters move this often
DIRECTOR = "demo-director"
UPTIME = 3 * 86400 + 7 * 3600  # history behind the counters at start
RECENT = 180.0  # the failure and the drain happened this long before start
MAX_DETAILED_TICKS = 300  # after a longer clock jump, older ticks are simulated as one coarse step
TIMEOUTS = Timeouts(tcp=900, tcpfin=120, udp=300)
SYN_RECV_TIMEOUT = 60.0
SCTP_CLOSED_TIMEOUT = 10.0
BURST_CHANCE = 0.004  # per service and tick: a burst of 1.5-3x every ~8 minutes, fading in ~15 s
TEMPLATES_PER_CONN = 0.05  # share of new connections that come from a client without a template
VIA_TEMPLATE = 0.6  # share of a persistent service's connections from clients holding a template
SYSCTLS = MappingProxyType(
    {
        "am_droprate": 10,
        "amemthresh": 1024,
        "backup_only": 0,
        "cache_bypass": 0,
        "conn_reuse_mode": 1,
        "conntrack": 0,
        "drop_entry": 0,
        "drop_packet": 0,
        "expire_nodest_conn": 0,
        "expire_quiescent_template": 0,
        "ignore_tunneled": 0,
        "nat_icmp_send": 0,
        "pmtu_disc": 1,
        "run_estimation": 1,
        "schedule_icmp": 0,
        "secure_tcp": 0,
        "sloppy_sctp": 0,
        "sloppy_tcp": 0,
        "snat_reroute": 1,
        "sync_persist_mode": 0,
        "sync_ports": 1,
        "sync_qlen_max": 15207,
        "sync_refresh_period": 0,
        "sync_retries": 0,
        "sync_sock_size": 0,
        "sync_version": 1,
    }
)
DAEMONS = (Daemon(DaemonState.MASTER, "eth1", 7, maxlen=1472, group="224.0.0.81", port=8848, ttl=1),)
# Clients: 198.51.100.0/24 and 2001:db8:c::/64 (documentation ranges).
_CLIENT4 = 0xC6336400
_CLIENT6 = "2001:0db8:000c:0000"
_HASHING = frozenset({"sh", "mh", "dh", "lblc", "lblcr"})
_NAT = frozenset({FwdMethod.MASQ, FwdMethod.LOCAL})  # replies pass the director only with NAT
_CONN_HEADER = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"
_CONN_SYNC_HEADER = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Origin Expires\n"
_DEST_COLUMNS = tuple(f.name for f in dataclasses.fields(DestTable))


@dataclass(frozen=True, slots=True)
class Traffic:
    """A service's load: peak new connections per second and what one connection carries."""

    peak_cps: float
    duration: float  # mean seconds ESTABLISHED; 0: never active (UDP: the kernel counts it inactive)
    linger: float  # mean seconds still listed after closing (TIME_WAIT 120 s, UDP 300 s, SCTP 10 s)
    pkts_in: float
    pkts_out: float
    bytes_in: float
    bytes_out: float
    shift_h: float = 0.0  # hours this service's daily curve lags the others


@dataclass(frozen=True, slots=True)
class DestSpec:
    address: str
    port: int
    weight: int
    fwd: FwdMethod = FwdMethod.MASQ
    u_threshold: int = 0
    l_threshold: int = 0
    tun_type: TunType = TunType.IPIP
    tun_port: int = 0
    tun_flags: int = 0
    failing: bool = False  # dead since RECENT s before start: connections never establish
    drained_from: int = 0  # > 0: drained RECENT s before start; the weight it had


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    key: ServiceKey
    scheduler: str
    traffic: Traffic
    dests: tuple[DestSpec, ...]
    flags: int = 0
    timeout: int = 0
    netmask: int = 0xFFFFFFFF
    pe_name: str = ""
    marks: tuple[tuple[str, int], ...] = ()  # fwmark services: the VIP:port pairs the mark matches


def _tcp(addr: str, port: int) -> ServiceKey:
    return ServiceKey.tcp(addr, port)


_WEB = Traffic(30, 4, 120, 8, 7, 900, 25_000)
_TLS = Traffic(45, 30, 120, 14, 16, 2_500, 60_000, shift_h=1)
_API = Traffic(20, 2, 120, 6, 5, 1_200, 8_000, shift_h=-1)
_MAIL = Traffic(1.5, 600, 120, 60, 80, 6_000, 90_000, shift_h=-3)
_CDN = Traffic(12, 8, 120, 20, 40, 1_800, 200_000, shift_h=2)
_SMTP = Traffic(1, 6, 120, 14, 10, 30_000, 1_200, shift_h=-5)
_DNS = Traffic(120, 0, 0, 1, 1, 70, 220)
_NTP = Traffic(3, 0, 300, 1, 1, 76, 76)
_MARK = Traffic(15, 5, 120, 9, 8, 1_000, 30_000)
_MARK6 = Traffic(8, 5, 120, 9, 8, 1_000, 30_000, shift_h=6)
_WEB6 = Traffic(18, 20, 120, 12, 14, 1_500, 40_000, shift_h=6)
_DIAMETER = Traffic(0.02, 3_600, 10, 400, 400, 80_000, 80_000)
_SQL = Traffic(0.8, 400, 120, 300, 300, 30_000, 400_000)
_SIP = Traffic(2, 0, 300, 6, 6, 3_000, 3_000, shift_h=-2)


def demo_services() -> tuple[ServiceSpec, ...]:
    """The hand-made demo director."""
    r, t = FwdMethod.ROUTE, FwdMethod.TUNNEL
    return (
        ServiceSpec(
            _tcp("203.0.113.10", 80),
            "wlc",
            _WEB,
            tuple(DestSpec(f"192.0.2.{i}", 8080, w) for i, w in ((11, 100), (12, 100), (13, 100), (14, 50))),
        ),
        ServiceSpec(
            _tcp("203.0.113.10", 443),
            "wlc",
            _TLS,
            tuple(DestSpec(f"192.0.2.{i}", 8443, 100) for i in (11, 12, 13)),
            flags=SVC_F_PERSISTENT,
            timeout=300,
            netmask=0xFFFFFFF8,
        ),
        ServiceSpec(
            _tcp("203.0.113.11", 8080),
            "wrr",
            _API,
            (
                DestSpec("192.0.2.21", 8080, 3, r),
                DestSpec("192.0.2.22", 8080, 3, r),
                DestSpec("192.0.2.23", 8080, 2, r),
                DestSpec("192.0.2.24", 8080, 2, r, failing=True),
            ),
        ),
        ServiceSpec(
            _tcp("203.0.113.12", 993),
            "rr",
            _MAIL,
            (
                DestSpec("192.0.2.31", 993, 1),
                DestSpec("192.0.2.32", 993, 1),
                DestSpec("192.0.2.33", 993, 0, drained_from=1),
            ),
        ),
        ServiceSpec(
            _tcp("203.0.113.13", 443),
            "mh",
            _CDN,
            (
                DestSpec("192.0.2.41", 443, 1, t),
                DestSpec("192.0.2.42", 443, 1, t, tun_type=TunType.GUE, tun_port=6080, tun_flags=TUN_F_CSUM),
                DestSpec("192.0.2.43", 443, 1, t),
            ),
            flags=SVC_F_SCHED1 | SVC_F_SCHED2,
        ),
        ServiceSpec(
            _tcp("203.0.113.14", 25),
            "sed",
            _SMTP,
            (DestSpec("192.0.2.51", 25, 5), DestSpec("192.0.2.52", 25, 5)),
        ),
        ServiceSpec(
            ServiceKey.udp("203.0.113.10", 53),
            "rr",
            _DNS,
            tuple(DestSpec(f"192.0.2.{i}", 53, 1) for i in (61, 62, 63)),
            flags=SVC_F_ONEPACKET,
        ),
        ServiceSpec(
            ServiceKey.udp("203.0.113.15", 123),
            "sh",
            _NTP,
            (DestSpec("192.0.2.71", 123, 1, r), DestSpec("192.0.2.72", 123, 1, r)),
            flags=SVC_F_SCHED2,
        ),
        ServiceSpec(
            ServiceKey.mark(1),
            "wlc",
            _MARK,
            tuple(DestSpec(f"192.0.2.{i}", 0, 10) for i in (81, 82, 83)),
            marks=(("203.0.113.20", 80), ("203.0.113.20", 443)),
        ),
        ServiceSpec(
            ServiceKey.mark(2, AF_INET6),
            "wrr",
            _MARK6,
            (DestSpec("2001:db8:1::81", 0, 2), DestSpec("2001:db8:1::82", 0, 1)),
            marks=(("2001:db8:20::20", 80), ("2001:db8:20::20", 443)),
        ),
        ServiceSpec(
            _tcp("2001:db8:10::10", 443),
            "lc",
            _WEB6,
            tuple(DestSpec(f"2001:db8:1::{i}", 443, 1, r) for i in (11, 12, 13)),
        ),
        ServiceSpec(
            ServiceKey(AF_INET, Protocol.SCTP, "203.0.113.16", 3868),
            "rr",
            _DIAMETER,
            (DestSpec("192.0.2.91", 3868, 1), DestSpec("192.0.2.92", 3868, 1)),
        ),
        ServiceSpec(
            _tcp("203.0.113.17", 3306),
            "wlc",
            _SQL,
            tuple(
                DestSpec(f"192.0.2.{i}", 3306, 1, u_threshold=120, l_threshold=90) for i in (101, 102, 103)
            ),
        ),
        ServiceSpec(
            ServiceKey.udp("203.0.113.18", 5060),
            "rr",
            _SIP,
            (DestSpec("192.0.2.111", 5060, 1), DestSpec("192.0.2.112", 5060, 1)),
            flags=SVC_F_PERSISTENT,
            timeout=60,
            pe_name="sip",
        ),
    )


_SCHEDULERS = ("wlc", "wrr", "rr", "lc", "sh", "mh", "sed", "nq")


def synthetic_services(seed: int, services: int, dests_per_service: int) -> tuple[ServiceSpec, ...]:
    """A big director for benchmarks: mostly TCP, every 10th UDP, every 10th fwmark, a fifth IPv6."""
    if services < 1 or dests_per_service < 1:
        raise ValueError(f"need at least one service and one dest, not {services}x{dests_per_service}")
    rng = random.Random(f"synthetic:{seed}")
    out: list[ServiceSpec] = []
    for i in range(services):
        fwmark = i % 10 == 9
        v6 = i % 5 == 3 or (fwmark and i % 20 == 19)
        if fwmark:
            key = ServiceKey.mark(i + 1, AF_INET6 if v6 else AF_INET)
        elif v6:
            key = _tcp(f"2001:db8:100::{i + 1:x}", 443)
        elif i % 10 == 7:
            key = ServiceKey.udp(f"203.0.113.{1 + i % 254}", 1024 + i // 254)
        else:
            key = _tcp(f"203.0.113.{1 + i % 254}", 1024 + i // 254)
        fwd = FwdMethod.ROUTE if i % 4 == 1 else FwdMethod.MASQ
        port = 0 if key.is_fwmark else 8080
        dests = tuple(
            DestSpec(
                f"2001:db8:200::{j + 1:x}" if v6 else f"192.0.2.{1 + j % 254}",
                port + (0 if v6 or key.is_fwmark else j // 254),
                rng.choice((1, 1, 2, 5, 10)),
                fwd,
            )
            for j in range(dests_per_service)
        )
        udp = key.protocol is Protocol.UDP
        traffic = Traffic(
            rng.uniform(0.5, 10),
            0 if udp else rng.uniform(1, 30),
            TIMEOUTS.udp if udp else TIMEOUTS.tcpfin,
            rng.uniform(1, 20),
            rng.uniform(1, 20),
            rng.uniform(100, 5_000),
            rng.uniform(100, 100_000),
            shift_h=rng.uniform(-6, 6),
        )
        marks = (
            ((f"203.0.113.{1 + i % 254}" if not v6 else f"2001:db8:100::{i + 1:x}", 80),)
            if key.is_fwmark
            else ()
        )
        out.append(ServiceSpec(key, _SCHEDULERS[i % len(_SCHEDULERS)], traffic, dests, marks=marks))
    return tuple(out)


# ------------------------------------------------------------------------------------------ state


@dataclass(slots=True)
class _DestState:
    spec: DestSpec
    family: int
    weight: int
    fwd: FwdMethod
    u_threshold: int
    l_threshold: int
    tun_type: TunType
    tun_port: int
    tun_flags: int
    skew: float  # hash schedulers do not spread evenly
    failing: bool = False
    overloaded: bool = False  # IP_VS_DEST_F_OVERLOAD (thresholds)
    carry: float = 0.0  # fraction of a connection owed to the next tick
    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0
    active: float = 0.0
    inactive: float = 0.0
    persist: float = 0.0

    @property
    def key(self) -> DestKey:
        return DestKey(self.family, self.spec.address, self.spec.port)

    def dest(self) -> Dest:
        spec = self.spec
        return Dest(
            self.family,
            spec.address,
            spec.port,
            self.fwd,
            self.weight,
            self.u_threshold,
            self.l_threshold,
            int(self.active + 0.5),
            int(self.inactive + 0.5),
            int(self.persist + 0.5),
            self.tun_type,
            self.tun_port,
            self.tun_flags,
            Counters(self.conns, self.inpkts, self.outpkts, self.inbytes, self.outbytes),
        )


@dataclass(slots=True)
class _ServiceState:
    spec: ServiceSpec
    dests: list[_DestState]
    udp: bool  # no ESTABLISHED state: every entry is inactive
    template_cap: float  # most templates one dest can hold (client networks / dests)
    # Per-tick decay of the active, inactive, failing (SYN_RECV) and template pools.
    decays: tuple[float, float, float, float]
    burst: float = 1.0
    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0

    def service(self) -> Service:
        """The service's row without its dests (they are columns, see SimSource._dest_table)."""
        s = self.spec
        counters = Counters(self.conns, self.inpkts, self.outpkts, self.inbytes, self.outbytes)
        return Service(s.key, s.scheduler, s.flags, s.timeout, s.netmask, s.pe_name, counters)


def _daily(t: float, shift_h: float) -> float:
    """Load relative to the peak: 0.2 at 04:00 UTC, 1 at 16:00, shifted by shift_h hours."""
    h = (t / 3600.0 - shift_h) % 24.0
    x = 0.5 - 0.5 * math.cos(2 * math.pi * (h - 4.0) / 24.0)
    return 0.2 + 0.8 * math.pow(x, 1.5)


def _pool(q: float, span: int) -> tuple[float, float]:
    """(q^span, g) so that span ticks of a pool decaying by q per tick with `n` arrivals spread over
    them end at x * q^span + n * g."""
    if span == 1:
        return q, 1.0
    qs = q**span
    return qs, (1.0 - qs) / ((1.0 - q) * span)


def _decay(seconds: float) -> float:
    return math.exp(-TICK / seconds) if seconds > 0 else 0.0


def _client_nets(netmask: int) -> int:
    """How many persistence networks the /24 of v4 clients holds under this (IPv4) mask."""
    return max(1, 256 >> (32 - bin(netmask & 0xFFFFFFFF).count("1")))


# ------------------------------------------------------------------------------------------ source


class SimSource:
    """The demo director (see the module docstring). Thread-safe.

    Snapshots carry the injected clock as both wall_time and mono_time: the estimator measures
    intervals in the sim's own time, so a test's fake clock gives exact rates.
    """

    name = "demo"

    def __init__(
        self,
        seed: int = 1,
        services: int | None = None,
        dests_per_service: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if services is None and dests_per_service is not None:
            raise ValueError("dests_per_service needs services (the demo director has its own)")
        specs = (
            demo_services()
            if services is None
            else synthetic_services(
                seed, services, dests_per_service if dests_per_service is not None else 10
            )
        )
        self._seed = seed
        self._clock = clock
        self._lock = threading.Lock()
        rng = random.Random(f"build:{seed}")
        self._services = [self._state(s, rng) for s in specs]
        self._totals: Counters | None = None
        self._fixed: DestTable | None = None  # the dest columns only set_dest changes
        now = clock()
        self._k = math.floor(now / TICK)
        recent = round(RECENT / TICK)
        history = round(UPTIME / TICK)
        self._tick(self._k - recent - history, history)
        for sv in self._services:
            for d in sv.dests:
                d.failing = d.spec.failing
                d.weight = d.spec.weight
        self._tick(self._k - recent, recent)

    @staticmethod
    def _state(spec: ServiceSpec, rng: random.Random) -> _ServiceState:
        hashing = spec.scheduler in _HASHING
        dests = [
            _DestState(
                d,
                AF_INET6 if ":" in d.address else AF_INET,
                d.drained_from or d.weight,
                d.fwd,
                d.u_threshold,
                d.l_threshold,
                d.tun_type,
                d.tun_port,
                d.tun_flags,
                rng.uniform(0.6, 1.4) if hashing else 1.0,
            )
            for d in spec.dests
        ]
        cap = _client_nets(spec.netmask) / max(1, len(dests))
        tr = spec.traffic
        decays = (_decay(tr.duration), _decay(tr.linger), _decay(SYN_RECV_TIMEOUT), _decay(spec.timeout))
        return _ServiceState(spec, dests, spec.key.protocol is Protocol.UDP, cap, decays)

    # ---------------------------------------------------------------------------------- simulation

    def _advance(self) -> None:
        """Run the ticks due by now (the caller holds the lock)."""
        k_now = math.floor(self._clock() / TICK)
        if k_now <= self._k:
            return
        due = k_now - self._k
        if due > MAX_DETAILED_TICKS:
            self._tick(self._k + 1, due - MAX_DETAILED_TICKS)
            self._k += due - MAX_DETAILED_TICKS
        for k in range(self._k + 1, k_now + 1):
            self._tick(k, 1)
        self._k = k_now

    def _tick(self, k: int, span: int) -> None:
        """Advance `span` ticks starting at tick k (one estimator refresh when span is 1)."""
        rng = random.Random(f"tick:{self._seed}:{k}")
        t = k * TICK
        self._totals = None
        for sv in self._services:
            spec = sv.spec
            tr = spec.traffic
            noise = max(0.2, 1.0 + 0.08 * rng.gauss(0.0, 1.0))
            new = tr.peak_cps * _daily(t, tr.shift_h) * sv.burst * noise * TICK * span
            if span > 1:  # a coarse step (start, clock jump) ends calm
                sv.burst = 1.0
            elif rng.random() < BURST_CHANCE:
                sv.burst = rng.uniform(1.5, 3.0)
            else:
                sv.burst = 1.0 + (sv.burst - 1.0) * 0.85
            self._spread(sv, new, span, rng)

    def _spread(self, sv: _ServiceState, new: float, span: int, rng: random.Random) -> None:
        spec = sv.spec
        tr = spec.traffic
        ops = bool(spec.flags & SVC_F_ONEPACKET)  # one-packet scheduling keeps no entries
        persistent = bool(spec.flags & SVC_F_PERSISTENT)
        dests = sv.dests
        weighted = [0.0 if d.overloaded else d.weight * d.skew for d in dests]
        wsum = sum(weighted)
        psum = sum(d.persist for d in dests) if persistent else 0.0
        sticky = new * VIA_TEMPLATE if psum > 0 else 0.0  # clients that return to their template's dest
        fresh = new - sticky if wsum > 0 else 0.0
        qa, qi, qf, qp = sv.decays
        qa, ga = _pool(qa, span)
        qi, gi = _pool(qi, span)
        qf, gf = _pool(qf, span)
        qp, gp = _pool(qp, span)
        udp = sv.udp
        cap = sv.template_cap
        random = rng.random
        spread = wsum > 0
        d_conns = d_inpkts = d_outpkts = d_inbytes = d_outbytes = 0
        for d, w in zip(dests, weighted, strict=True):
            jitter = 0.8 + 0.4 * random()  # this dest's luck in this tick
            x = fresh * w / wsum if spread else 0.0
            if sticky:
                x += sticky * d.persist / psum
            x = d.carry + x * jitter
            n = int(x)
            d.carry = x - n
            failing = d.failing
            if n:  # no connection, no packet: the counters stay as they were
                if failing:  # SYNs retried, never answered, never established
                    inp, inb, outp, outb = 3 * n, 180 * n, 0, 0
                else:
                    size = n * (1.3 - 0.3 * jitter)  # the busy ticks carry shorter connections
                    inp, inb = int(size * tr.pkts_in + 0.5), int(size * tr.bytes_in + 0.5)
                    if d.fwd in _NAT:
                        outp, outb = int(size * tr.pkts_out + 0.5), int(size * tr.bytes_out + 0.5)
                    else:
                        outp = outb = 0
                d.conns += n
                d.inpkts += inp
                d.outpkts += outp
                d.inbytes += inb
                d.outbytes += outb
                d_conns += n
                d_inpkts += inp
                d_outpkts += outp
                d_inbytes += inb
                d_outbytes += outb
            if ops:
                continue
            a0 = d.active
            if udp or failing:
                d.active = a0 * qa
                closed = a0 - d.active
            else:
                d.active = a0 * qa + n * ga
                closed = a0 + n - d.active
            if failing:
                d.inactive = d.inactive * qf + (closed + n) * gf
            elif udp:
                d.inactive = d.inactive * qi + n * gi
            else:
                d.inactive = d.inactive * qi + closed * gi
            if persistent:
                d.persist = min(cap, d.persist * qp + n * TEMPLATES_PER_CONN * gp)
            if d.u_threshold:
                total = d.active + d.inactive
                if total >= d.u_threshold:
                    d.overloaded = True
                elif d.overloaded and (
                    total < d.l_threshold if d.l_threshold else total * 4 < d.u_threshold * 3
                ):
                    d.overloaded = False
        sv.conns += d_conns
        sv.inpkts += d_inpkts
        sv.outpkts += d_outpkts
        sv.inbytes += d_inbytes
        sv.outbytes += d_outbytes

    # ---------------------------------------------------------------------------------- Source

    def read(self) -> Snapshot:
        with self._lock:
            wall = self._clock()
            self._advance()
            services = ServiceRows(Table.build([sv.service() for sv in self._services], self._dest_table()))
            if self._totals is None:
                self._totals = Counters(
                    sum(sv.conns for sv in self._services),
                    sum(sv.inpkts for sv in self._services),
                    sum(sv.outpkts for sv in self._services),
                    sum(sv.inbytes for sv in self._services),
                    sum(sv.outbytes for sv in self._services),
                )
            return Snapshot(
                self.name,
                DIRECTOR,
                wall,
                wall,
                services,
                version="1.2.1",
                conn_tab_size=4096,
                totals=self._totals,
                daemons=DAEMONS,
                timeouts=TIMEOUTS,
                sysctls=SYSCTLS,
            )

    def _dest_table(self) -> DestTable:
        """Every dest as columns: what set_dest changes is kept between reads, the rest made anew."""
        dests = [d for sv in self._services for d in sv.dests]
        fixed = self._fixed
        if fixed is None:
            fixed = DestTable.empty(len(dests))
            fixed.service[:] = [i for i, sv in enumerate(self._services) for _ in sv.dests]
            fixed.family[:] = [d.family for d in dests]
            fixed.addr[:] = [address_bytes(d.family, d.spec.address) for d in dests]
            fixed.port[:] = [d.spec.port for d in dests]
            fixed.fwd[:] = [d.fwd for d in dests]
            fixed.weight[:] = [d.weight for d in dests]
            fixed.u_threshold[:] = [d.u_threshold for d in dests]
            fixed.l_threshold[:] = [d.l_threshold for d in dests]
            fixed.tun_type[:] = [d.tun_type for d in dests]
            fixed.tun_port[:] = [d.tun_port for d in dests]
            fixed.tun_flags[:] = [d.tun_flags for d in dests]
            fixed.has_counters[:] = True
            for name in _DEST_COLUMNS:
                getattr(fixed, name).flags.writeable = False  # shared by every read's table
            self._fixed = fixed
        # int(x + 0.5) as the rows show them (x >= 0)
        return dataclasses.replace(
            fixed,
            active=np.floor(np.array([d.active for d in dests]) + 0.5).astype(np.int64),
            inactive=np.floor(np.array([d.inactive for d in dests]) + 0.5).astype(np.int64),
            persist=np.floor(np.array([d.persist for d in dests]) + 0.5).astype(np.int64),
            counters=np.array(
                [(d.conns, d.inpkts, d.outpkts, d.inbytes, d.outbytes) for d in dests], np.uint64
            ).reshape(len(dests), 5),
        )

    def conn_lines(self, sync: bool = False) -> Iterator[str]:
        """The connection table as /proc/net/ip_vs_conn(_sync) prints it, consistent with the
        ActiveConn/InActConn/PersistConn of the last read (same tick)."""
        with self._lock:
            self._advance()
            parts = [_table_part(sv, i, d) for sv in self._services for i, d in enumerate(sv.dests)]
            rng = random.Random(f"conns:{self._seed}:{self._k}")
        return _conn_lines(parts, rng, sync)

    def close(self) -> None:
        """Nothing to release."""

    # ---------------------------------------------------------------------------------- writes

    def _find(self, skey: ServiceKey, dkey: DestKey) -> tuple[_ServiceState, _DestState] | None:
        for sv in self._services:
            if sv.spec.key == skey:
                for d in sv.dests:
                    if d.key == dkey:
                        return sv, d
                return None
        return None

    def get_dest(self, skey: ServiceKey, dkey: DestKey) -> Dest | None:
        """The dest as it is now, like a fresh GET_DEST."""
        with self._lock:
            self._advance()
            found = self._find(skey, dkey)
            return None if found is None else found[1].dest()

    def set_dest(self, skey: ServiceKey, dest: Dest) -> None:
        """IPVS_CMD_SET_DEST: replaces the dest's configuration; refuses what the kernel refuses."""
        with self._lock:
            self._advance()
            found = self._find(skey, dest.key)
            if found is None:
                raise ControlError(f"{dest.key} in {skey}: No such destination (ENOENT)", status=404)
            ut, lt = dest.u_threshold, dest.l_threshold
            tt, tp, tf = dest.tun_type, dest.tun_port, dest.tun_flags
            if ut is None or lt is None or tt is None or tp is None or tf is None:
                raise ControlError(f"{dest.key} in {skey}: a setting is unknown (EINVAL)", status=400)
            if dest.weight < 0 or lt > ut:
                raise ControlError(
                    f"{dest.key} in {skey}: weight or thresholds out of range (ERANGE)", status=400
                )
            _sv, d = found
            d.weight, d.fwd = dest.weight, dest.fwd
            d.u_threshold, d.l_threshold = ut, lt
            d.tun_type, d.tun_port, d.tun_flags = tt, tp, tf
            self._fixed = None


# ------------------------------------------------------------------------------------------ conn table


@functools.cache  # the director's few hundred addresses, printed for every connection table read
def _hex_addr(family: int, address: str) -> str:
    """An address as ip_vs_conn prints it: %08X, or %pI6 (full, lower-case)."""
    if family == AF_INET6:
        return ipaddress.IPv6Address(address).exploded
    return f"{int(ipaddress.IPv4Address(address)):08X}"


_State = tuple[str, int, int]  # a state's name padded to its column, its timeout, the timeout's bits


@dataclass(frozen=True, slots=True)
class _TablePart:
    """What the connection table shows for one dest, captured under the lock."""

    proto: str  # padded to the column's width
    vips: tuple[str, ...]  # per VIP the line's middle: VIP, port, dest, dest port (hex, as printed)
    v6: bool
    states: tuple[_State, ...]  # the inactive states to draw from
    active: int
    inactive: int
    template_nets: tuple[int, ...]  # v4 client networks of this dest's templates (host part 0)
    template_state: str  # padded
    timeout: int
    pe_name: str


def _state(name: str, timeout: int) -> _State:
    return f"{name:<11}", timeout, timeout.bit_length()


_TCP_INACTIVE = (_state("TIME_WAIT", 120),) * 17 + (_state("FIN_WAIT", 120),) * 2 + (_state("CLOSE", 10),)
_UDP_STATES = (_state("UDP", TIMEOUTS.udp),)
_SYN_RECV_STATES = (_state("SYN_RECV", int(SYN_RECV_TIMEOUT)),)
_SCTP_STATES = (_state("CLOSED", int(SCTP_CLOSED_TIMEOUT)),)
_ESTABLISHED = _state("ESTABLISHED", 900)
# v4 clients 198.51.100.1-253 as printed; _client4[int(253 * random() ** 2.5)] favours a few busy ones
_CLIENT4_HEX = tuple(f"{_CLIENT4 + 1 + i:08X}" for i in range(253))


def _table_part(sv: _ServiceState, index: int, d: _DestState) -> _TablePart:
    spec = sv.spec
    key = spec.key
    vips = spec.marks if key.is_fwmark else ((key.address, key.port),)
    v6 = ":" in vips[0][0]
    states: tuple[_State, ...]
    if sv.udp:
        states = _UDP_STATES
    elif d.failing:
        states = _SYN_RECV_STATES
    elif key.protocol is Protocol.SCTP:
        states = _SCTP_STATES
    else:
        states = _TCP_INACTIVE
    persist = int(d.persist + 0.5)
    daddr = _hex_addr(d.family, d.spec.address)
    vfamily = AF_INET6 if v6 else AF_INET
    nets = _client_nets(spec.netmask) if persist else 1
    return _TablePart(
        f"{'TCP' if key.is_fwmark else key.protocol.name:<3}",
        tuple([f"{_hex_addr(vfamily, a)} {p:04X} {daddr} {d.spec.port or p:04X} " for a, p in vips]),
        v6,
        states,
        int(d.active + 0.5),
        int(d.inactive + 0.5),
        tuple([((index + j * len(sv.dests)) % nets) * (256 // nets) for j in range(persist)]),
        "NONE       " if sv.udp else "ASSURED    ",
        spec.timeout,
        spec.pe_name,
    )


def _conn_lines(parts: list[_TablePart], rng: random.Random, sync: bool) -> Iterator[str]:
    """The table's lines. Every draw is rejection sampling on getrandbits (what Random.randrange and
    choice do), written out: a call of randrange costs more than the rest of a line."""
    bits = rng.getrandbits
    uniform = rng.random
    clients4 = _CLIENT4_HEX
    yield _CONN_SYNC_HEADER if sync else _CONN_HEADER
    for p in parts:
        proto, v6, states, active = p.proto, p.v6, p.states, p.active
        # First the entries' clients, ports and states, in the table's order (active, inactive) ...
        entries: list[tuple[str, _State]] = []
        append = entries.append
        n_states = len(states)
        k_states = n_states.bit_length()
        for i in range(active + p.inactive):
            if v6:
                a, b = bits(16), bits(16)
                r = bits(8)
                while r >= 255:
                    r = bits(8)
                client = f"{_CLIENT6}:{a:04x}:{b:04x}:0000:{r + 1:04x}"
            else:
                client = clients4[int(253 * uniform() ** 2.5)]
            cport = bits(16)
            while cport >= 64512:
                cport = bits(16)
            if i < active:
                state = _ESTABLISHED
            else:
                r = bits(k_states)
                while r >= n_states:
                    r = bits(k_states)
                state = states[r]
            append((f"{proto} {client} {cport + 1024:04X} ", state))
        # ... then per entry its VIP (fwmark services match several), expiry and PE data.
        vips = p.vips
        n_vips = len(vips)
        k_vips = n_vips.bit_length()
        pe = p.pe_name
        for head, (name, ttl, k) in entries:
            r = bits(k_vips)
            while r >= n_vips:
                r = bits(k_vips)
            e = bits(k)
            while e >= ttl:
                e = bits(k)
            if sync:
                yield f"{head}{vips[r]}{name} LOCAL  {e + 1:7d}\n"
            elif pe:
                yield f"{head}{vips[r]}{name} {e + 1:7d} {pe} {bits(48):012x}@sip.example\n"
            else:
                yield f"{head}{vips[r]}{name} {e + 1:7d}\n"
        ttl = p.timeout
        k = ttl.bit_length()
        for net in p.template_nets:
            e = bits(k)
            while e >= ttl:
                e = bits(k)
            head = f"{proto} {_CLIENT4 + net:08X} 0000 {vips[0]}{p.template_state}"
            if sync:
                yield f"{head} LOCAL  {e + 1:7d}\n"
            elif pe:
                yield f"{head} {e + 1:7d} {pe} {bits(48):012x}@sip.example\n"
            else:
                yield f"{head} {e + 1:7d}\n"
