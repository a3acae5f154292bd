"""ipvsadm-compatible text: `lvstop list` prints what `ipvsadm -L -n` (1.31) prints, byte for byte.

Without -n (`ListOptions.numeric` False) ports print as ipvsadm's do: the services database's name
for the port in the service's protocol (`:https`, `:domain`), the number when it has none (fwmark
services have no protocol). Addresses stay numeric: lvstop makes no DNS lookups (ipvsadm -L does, so
the two differ where the director's resolver names its addresses).

Written from a reading of ipvsadm 1.31's ipvsadm.c and libipvs (no code taken): column widths, the
K/M/G/T rounding of large numbers, and the service and dest order. ipvsadm sorts with glibc's qsort,
a top-down merge sort, and its comparators subtract `ntohl()` words as unsigned ints and read the
result as a C int; that overflows when two addresses (or fwmarks) are more than 2^31 apart, so the
order is neither numeric nor even transitive. `_merge_sort` and `_c_int` reproduce both.

Beyond ipvsadm:
- `ListOptions.wide` (`lvstop list --all`): one table with everything per service and real server.
  Columns: the service (33 wide, as --stats), Sched (scheduler; the forwarding method on dest rows),
  Weight (a service shows the sum of its dests' weights), ActiveConn, InActConn, PersistConn (a
  service shows its dests' sums), the five counters of --stats and the five rates of --rate (9 wide
  each, K/M/G unless --exact), then Flags: what ipvsadm prints after the scheduler (sched flags,
  persistence, ops) on service rows, tunnel info and non-zero thresholds on dest rows, and
  "[incomplete: ...]" on a service whose dests could not all be read.
- `ListOptions.json`: the snapshot (or the one selected service) as lvstop's JSON (lvstop.codec).
Values a source could not read print as "-", never as 0.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import itertools
import socket
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from lvstop.errors import LvstopError
from lvstop.model import (
    AF_INET,
    AF_INET6,
    SVC_F_ONEPACKET,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    SVC_F_SCHED3,
    Array,
    ConnEntry,
    Counters,
    Dest,
    FwdMethod,
    Protocol,
    Rates,
    Service,
    ServiceKey,
    ServiceRows,
    Snapshot,
    Table,
    TunType,
    address_text,
    format_hostport,
)

if TYPE_CHECKING:
    from lvstop.codec import ManagedMap

MISSING = "-"


@dataclass(frozen=True, slots=True)
class ListOptions:
    """What to list, named after ipvsadm's options (`--stats` is `stats`, `-c` is `connection`...)."""

    stats: bool = False
    rate: bool = False
    exact: bool = False
    thresholds: bool = False
    persistent_conn: bool = False
    tun_info: bool = False
    connection: bool = False
    timeout: bool = False
    daemon: bool = False
    service: ServiceKey | None = None  # -t/-u/--sctp-service/-f [-6]: list this service only
    nosort: bool = False
    wide: bool = False  # lvstop's --all
    json: bool = False
    numeric: bool = True  # -n: port numbers; False: service names, as ipvsadm without -n
    # Show lvstop's plain deltas over the measured interval (Snapshot `instant`) instead of `rates`:
    # for sources without kernel rates, where the EWMA of two samples would mislead.
    instant_rates: bool = False


def option_conflict(opts: ListOptions) -> str | None:
    """The clash ipvsadm (or lvstop's own modes) would refuse, as a message; None when the options fit."""
    exclusive = [
        name
        for name, on in (
            ("connection", opts.connection),
            ("service", opts.service is not None),
            ("timeout", opts.timeout),
            ("daemon", opts.daemon),
        )
        if on
    ]
    if len(exclusive) > 1:
        return f"the option '{exclusive[1]}' conflicts with the '{exclusive[0]}' option"
    counters = opts.stats or opts.rate or opts.thresholds
    if ((opts.connection or opts.timeout or opts.daemon) and counters) or (
        (opts.timeout or opts.daemon) and opts.persistent_conn
    ):
        return "options conflict in the list command"
    formats = opts.stats or opts.rate or opts.thresholds or opts.persistent_conn or opts.tun_info
    if opts.wide and (formats or opts.connection or opts.timeout or opts.daemon):
        return "--all is a table of its own: it cannot be combined with other list formats"
    if opts.json and (formats or opts.wide or opts.connection or opts.timeout or opts.daemon):
        return "--json prints the whole snapshot: only a service selector can go with it"
    return None


def render(
    snapshot: Snapshot,
    opts: ListOptions,
    conns: Iterable[ConnEntry] = (),
    managed: ManagedMap | None = None,
) -> str:
    """The whole listing as one string (`conns` is used only with `opts.connection`; `managed`, who
    manages each service, only with `opts.json`)."""
    if opts.json:
        from lvstop.codec import dumps  # lazily: only --json needs the codec

        text: str = dumps(_selected(snapshot, opts), managed=managed)
        return text if text.endswith("\n") else text + "\n"
    return "".join(line + "\n" for line in iter_lines(snapshot, opts, conns))


def iter_lines(snapshot: Snapshot, opts: ListOptions, conns: Iterable[ConnEntry] = ()) -> Iterator[str]:
    """The listing line by line, without newlines; streams `conns` so a huge table is never held."""
    if opts.connection:
        yield from conn_lines(conns, opts)
    elif opts.timeout:
        yield timeout_line(snapshot)
    elif opts.daemon:
        yield from daemon_lines(snapshot)
    else:
        yield from service_lines(snapshot, opts)


# --- numbers ------------------------------------------------------------------------------------


def largenum(value: float | None, exact: bool) -> str:
    """ipvsadm's print_largenum: 9 columns, K/M/G/T (powers of 1000, truncated) unless exact."""
    if value is None:
        return f"{MISSING:>9}"
    n = _whole(value)
    if exact:
        digits = str(n)
        return digits.rjust(9 if len(digits) <= 8 else len(digits) + 1)
    for limit, divisor, unit in (
        (10**8, 1, ""),
        (10**9, 10**3, "K"),
        (10**11, 10**6, "M"),
        (10**14, 10**9, "G"),
    ):
        if n < limit:
            return f"{n // divisor:8d}{unit}" if unit else f"{n:9d}"
    return f"{n // 10**12:8d}T"


def _whole(value: float) -> int:
    # The kernel's rates are integers already; lvstop's own (floats) round half up as its read-out does.
    return value if isinstance(value, int) else int(value + 0.5)


def _num(value: float | None, width: int, left: bool = False) -> str:
    text = MISSING if value is None else str(_whole(value))
    return text.ljust(width) if left else text.rjust(width)


# --- ipvsadm's order ----------------------------------------------------------------------------

T = TypeVar("T")
Words = tuple[int, int, int, int]


def _c_int(x: int) -> int:
    """An unsigned 32-bit difference read as a C int (two's complement), as the comparators do."""
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


@functools.lru_cache(maxsize=4096)  # real servers serve many services: their addresses repeat
def _words(family: int, address: str) -> Words:
    """The 16-byte `union nf_inet_addr` as four host-order words (IPv4 fills the first)."""
    if not address:
        return (0, 0, 0, 0)
    if family == AF_INET6:
        a, b, c, d = struct.unpack("!4I", socket.inet_pton(socket.AF_INET6, address))
        return (a, b, c, d)
    return (struct.unpack("!I", socket.inet_aton(address))[0], 0, 0, 0)


def _cmp_addr(af1: int, w1: Sequence[int], w2: Sequence[int]) -> int:
    # Only the first operand's family decides how many words count (libipvs does the same).
    r = 0
    for i in range(4 if af1 == AF_INET6 else 1):
        r = _c_int(w1[i] - w2[i])
        if r:
            break
    return r


def _cmp_services(a: tuple[Service, Words], b: tuple[Service, Words]) -> int:
    ka, kb = a[0].key, b[0].key
    return (
        _c_int(ka.fwmark - kb.fwmark)
        or ka.family - kb.family
        or int(ka.protocol) - int(kb.protocol)
        or _cmp_addr(ka.family, a[1], b[1])
        or ka.port - kb.port
    )


def _cmp_dests(a: tuple[Dest, Words], b: tuple[Dest, Words]) -> int:
    return _cmp_addr(a[0].family, a[1], b[1]) or a[0].port - b[0].port


def _merge_sort(items: list[T], cmp: Callable[[T, T], int]) -> list[T]:
    """glibc's msort: split at n/2, sort both halves, merge taking the left one on cmp <= 0."""
    if len(items) <= 1:
        return items
    half = len(items) // 2
    left, right = _merge_sort(items[:half], cmp), _merge_sort(items[half:], cmp)
    out: list[T] = []
    i = j = 0
    while i < len(left) and j < len(right):
        if cmp(left[i], right[j]) <= 0:
            out.append(left[i])
            i += 1
        else:
            out.append(right[j])
            j += 1
    out.extend(left[i:])
    out.extend(right[j:])
    return out


def _consistent(columns: Iterable[Sequence[int]]) -> bool:
    """True when no two values of any column lie 2^31 or more apart: the comparators' wrapped
    differences then have the sign of the true ones, their order is numeric (a total order), and any
    stable sort gives what glibc's merge sort gives (no two keys are equal)."""
    return all(not col or max(col) - min(col) < 1 << 31 for col in columns)


def ipvsadm_order(services: Iterable[Service]) -> list[Service]:
    """Services in the order ipvsadm lists them, given the kernel's dump order."""
    keyed = [(s, _words(s.key.family, s.key.address)) for s in services]
    # addresses are compared only between services of one family (the family is compared first)
    columns: list[Sequence[int]] = [[s.key.fwmark for s, _ in keyed]]
    for family in {s.key.family for s, _ in keyed}:
        # only services without a fwmark compare addresses (a fwmark's ties are the same service)
        words = [w for s, w in keyed if s.key.family == family and not s.key.fwmark]
        columns += list(zip(*words, strict=True)) if words else []
    if _consistent(columns):
        keyed.sort(
            key=lambda sw: (
                sw[0].key.fwmark,
                sw[0].key.family,
                int(sw[0].key.protocol),
                sw[1],
                sw[0].key.port,
            )
        )
        return [s for s, _ in keyed]
    return [s for s, _ in _merge_sort(keyed, _cmp_services)]


def ipvsadm_dest_order(dests: Iterable[Dest]) -> list[Dest]:
    keyed = [(d, _words(d.family, d.address)) for d in dests]
    # the first operand's family says how many words count: one family, or glibc's own way
    if len({d.family for d, _ in keyed}) <= 1 and _consistent(zip(*(w for _, w in keyed), strict=True)):
        keyed.sort(key=lambda dw: (dw[1], dw[0].port))
        return [d for d, _ in keyed]
    return [d for d, _ in _merge_sort(keyed, _cmp_dests)]


# --- services and dests -------------------------------------------------------------------------

_TITLE_DEFAULT = (
    "Prot LocalAddress:Port Scheduler Flags",
    "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
)
_TITLE_TUN_INFO = (
    "Prot LocalAddress:Port Scheduler Flags",
    "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn",
)
_DEST_TITLE = "  -> RemoteAddress:Port"
_STATS_COLUMNS = ("Conns", "InPkts", "OutPkts", "InBytes", "OutBytes")
_RATE_COLUMNS = ("CPS", "InPPS", "OutPPS", "InBPS", "OutBPS")
_PROT = "Prot LocalAddress:Port"


def _titles(opts: ListOptions) -> tuple[str, ...]:
    if opts.wide:
        head = (
            f"{_PROT:<33} {'Sched':<7} {'Weight':<6} {'ActiveConn':<10} {'InActConn':<10} {'PersistConn':<11}"
            + "".join(f" {c:>8}" for c in _STATS_COLUMNS + _RATE_COLUMNS)
            + " Flags"
        )
        return (head, _DEST_TITLE)
    if opts.stats:
        return (f"{_PROT:<33}" + "".join(f" {c:>8}" for c in _STATS_COLUMNS), _DEST_TITLE)
    if opts.rate:
        return (f"{_PROT:<33}" + "".join(f" {c:>8}" for c in _RATE_COLUMNS), _DEST_TITLE)
    if opts.thresholds:
        return (
            f"{_PROT:<33} {'Uthreshold':<10} {'Lthreshold':<10} {'ActiveConn':<10} {'InActConn':<10}",
            _DEST_TITLE,
        )
    if opts.persistent_conn:
        return (
            f"{_PROT:<33} {'Weight':<9} {'PersistConn':<11} {'ActiveConn':<10} {'InActConn':<10}",
            _DEST_TITLE,
        )
    return _TITLE_TUN_INFO if opts.tun_info else _TITLE_DEFAULT


_SERVICE_DB_PROTOCOLS = {Protocol.TCP: "tcp", Protocol.UDP: "udp", Protocol.SCTP: "sctp"}


@functools.lru_cache(maxsize=4096)
def port_name(port: int, protocol: Protocol) -> str:
    """`port` as ipvsadm without -n prints it: its name in the services database for `protocol`
    (getservbyport, as ipvsadm calls it), else the number."""
    proto = _SERVICE_DB_PROTOCOLS.get(protocol)
    if proto is not None:
        try:
            return socket.getservbyport(port, proto)
        except (OSError, OverflowError):
            pass
    return str(port)


def _hostport(family: int, address: str, port: int, protocol: Protocol | None) -> str:
    """format_hostport, with the port's service name unless `protocol` is None (numeric)."""
    if protocol is None:
        return format_hostport(family, address, port)
    text = port_name(port, protocol)
    return f"[{address}]:{text}" if family == AF_INET6 else f"{address}:{text}"


def service_name(key: ServiceKey, names: bool = False) -> str:
    """`TCP  192.0.2.1:80`, `FWM  3 IPv6`: the service column as ipvsadm -n prints it (`names`: as
    ipvsadm without -n, `TCP  192.0.2.1:http`)."""
    if key.is_fwmark:
        return f"FWM  {key.fwmark}" + (" IPv6" if key.family == AF_INET6 else "")
    prot = key.protocol.name if key.protocol in (Protocol.TCP, Protocol.UDP, Protocol.SCTP) else "?"
    name = f"{prot:<4} {_hostport(key.family, key.address, key.port, key.protocol if names else None)}"
    return name if key.family == AF_INET6 else name[:33]


def dest_name(d: Dest, protocol: Protocol | None = None) -> str:
    """The dest column; with the service's `protocol`, its port by name as ipvsadm without -n."""
    return _dest_name(d.family, d.address, d.port, protocol)


def _dest_name(family: int, address: str, port: int, protocol: Protocol | None) -> str:
    name = _hostport(family, address, port, protocol)
    return name if family == AF_INET6 else name[:28]


def service_flags(svc: Service) -> str:
    """What ipvsadm prints after the scheduler: `(sh-port) persistent 360 mask 255.255.255.0 ops`."""
    parts: list[str] = []
    if svc.flags & (SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3):
        # ipvsadm prints the parentheses even when no flag has a name for this scheduler.
        parts.append("(" + ",".join(svc.sched_flags()) + ")")
    if svc.persistent:
        parts.append(f"persistent {svc.timeout}")
        if svc.key.family == AF_INET6:
            if svc.netmask != 128:
                parts.append(f"mask {svc.netmask}")
        elif svc.netmask != 0xFFFFFFFF:
            parts.append(f"mask {ipaddress.IPv4Address(svc.netmask & 0xFFFFFFFF)}")
        if svc.pe_name:
            parts.append(f"pe {svc.pe_name}")
    if svc.flags & SVC_F_ONEPACKET:
        parts.append("ops")
    return " ".join(parts)


def _fwd(d: Dest) -> str:
    return _FWD_NAMES.get(d.fwd, "(null)")


# ipvsadm has no name for other methods, and printf("%s", NULL) prints glibc's "(null)".
_FWD_NAMES = {m: m.label for m in (FwdMethod.MASQ, FwdMethod.LOCAL, FwdMethod.TUNNEL, FwdMethod.ROUTE)}
_TUN_FLAGS = {0: "-c", 1: "+c", 2: "r+c"}


def tunnel_info(d: Dest) -> str:
    """ipvsadm's TunnelInfo column: ipip, gue:PORT:FLAGS, gre:FLAGS, or n/a for other methods."""
    if d.fwd is not FwdMethod.TUNNEL:
        return "n/a"
    if d.tun_flags is None:
        return "?"  # read from /proc: unknown
    flags = _TUN_FLAGS.get(d.tun_flags, str(d.tun_flags))
    if d.tun_type is TunType.IPIP:
        return "ipip"
    if d.tun_type is TunType.GUE:
        return f"gue:{d.tun_port}:{flags}"[:15]
    if d.tun_type is TunType.GRE:
        return f"gre:{flags}"
    return "n/a"


def _counters(c: Counters | None) -> tuple[int | None, ...]:
    return (None,) * 5 if c is None else (c.conns, c.inpkts, c.outpkts, c.inbytes, c.outbytes)


def _rates(r: Rates | None) -> tuple[float | None, ...]:
    return (None,) * 5 if r is None else (r.cps, r.inpps, r.outpps, r.inbps, r.outbps)


def _shown_rates(item: Service | Dest, opts: ListOptions) -> Rates | None:
    return item.instant if opts.instant_rates else item.rates


def _service_line(svc: Service, opts: ListOptions) -> str:
    name = service_name(svc.key, not opts.numeric)
    if opts.wide:
        return _wide_service_line(svc, opts)
    if opts.stats:
        return f"{name:<33}" + "".join(largenum(v, opts.exact) for v in _counters(svc.counters))
    if opts.rate:
        return f"{name:<33}" + "".join(largenum(v, opts.exact) for v in _rates(_shown_rates(svc, opts)))
    flags = service_flags(svc)
    return f"{name} {svc.scheduler}" + (f" {flags}" if flags else "")


def _dest_line(d: Dest, opts: ListOptions, protocol: Protocol | None) -> str:
    """`protocol`: the service's, when ports print by name (None: numeric)."""
    name = dest_name(d, protocol)
    if opts.wide:
        return _wide_dest_line(name, d, opts)
    if opts.stats:
        return f"  -> {name:<28}" + "".join(largenum(v, opts.exact) for v in _counters(d.counters))
    if opts.rate:
        cps, inpps, outpps, inbps, outbps = _rates(_shown_rates(d, opts))
        return (
            f"  -> {name:<28} {_num(cps, 8)} {_num(inpps, 8)} {_num(outpps, 8)}"
            + largenum(inbps, opts.exact)
            + largenum(outbps, opts.exact)
        )
    if opts.thresholds:
        return (
            f"  -> {name:<28} {_num(d.u_threshold, 10, left=True)} {_num(d.l_threshold, 10, left=True)} "
            f"{d.active_conns:<10} {d.inactive_conns:<10}"
        )
    if opts.persistent_conn:
        return (
            f"  -> {name:<28} {d.weight:<9} {_num(d.persist_conns, 11, left=True)} "
            f"{d.active_conns:<10} {d.inactive_conns:<10}"
        )
    if opts.tun_info:
        return (
            f"  -> {name:<28} {_fwd(d):<7} {tunnel_info(d):<13} {d.weight:<6} "
            f"{d.active_conns:<10} {d.inactive_conns:<10}"
        )
    return _plain_dest_line(name, _fwd(d), d.weight, d.active_conns, d.inactive_conns)


def _plain_dest_line(name: str, fwd: str, weight: int, active: int, inactive: int) -> str:
    return _PLAIN_DEST % (name, fwd, weight, active, inactive)


_PLAIN_DEST = "  -> %-28s %-7s %-6d %-10d %-10d"  # %-formatting: 2x faster than the f-string here


def _wide_numbers(counters: Counters | None, rates: Rates | None, exact: bool) -> str:
    return "".join(largenum(v, exact) for v in (*_counters(counters), *_rates(rates)))


def _sum_persist(dests: Sequence[Dest]) -> int | None:
    values = [d.persist_conns for d in dests]
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def _wide_service_line(svc: Service, opts: ListOptions) -> str:
    active = sum(d.active_conns for d in svc.dests)
    inactive = sum(d.inactive_conns for d in svc.dests)
    line = (
        f"{service_name(svc.key, not opts.numeric):<33} {svc.scheduler:<7} {svc.live_weight:<6} "
        f"{active:<10} {inactive:<10} "
        f"{_num(_sum_persist(svc.dests), 11, left=True)}"
        + _wide_numbers(svc.counters, _shown_rates(svc, opts), opts.exact)
    )
    flags = service_flags(svc)
    if svc.error:
        flags = f"{flags} [incomplete: {svc.error}]".lstrip()
    return line + (f" {flags}" if flags else "")


def _wide_dest_line(name: str, d: Dest, opts: ListOptions) -> str:
    line = (
        f"  -> {name:<28} {_fwd(d):<7} {d.weight:<6} {d.active_conns:<10} {d.inactive_conns:<10} "
        f"{_num(d.persist_conns, 11, left=True)}"
        + _wide_numbers(d.counters, _shown_rates(d, opts), opts.exact)
    )
    notes = []
    if d.fwd is FwdMethod.TUNNEL:
        notes.append(tunnel_info(d))
    if d.u_threshold or d.l_threshold:
        notes.append(f"thresholds {d.u_threshold}/{d.l_threshold}")
    return line + (" " + " ".join(notes) if notes else "")


def _selected(snapshot: Snapshot, opts: ListOptions) -> Snapshot:
    if opts.service is None:
        return snapshot
    return dataclasses.replace(snapshot, services=(find_service(snapshot, opts.service),))


def find_service(snapshot: Snapshot, key: ServiceKey) -> Service:
    svc = snapshot.service(key)
    if svc is None:
        raise LvstopError(f"no such service: {key}")
    return svc


def version_line(snapshot: Snapshot) -> str:
    version = snapshot.version or "unknown"
    size = "unknown" if snapshot.conn_tab_size is None else str(snapshot.conn_tab_size)
    return f"IP Virtual Server version {version} (size={size})"


def service_lines(snapshot: Snapshot, opts: ListOptions) -> Iterator[str]:
    """`ipvsadm -Ln [format]` (all services, with the version line) or one service (`-t/-u/-f`)."""
    if opts.service is not None:
        services = [find_service(snapshot, opts.service)]
    else:
        yield version_line(snapshot)
        if isinstance(snapshot.services, ServiceRows) and not _formatted(opts):
            yield from _titles(opts)
            yield from _plain_lines(snapshot.services.table, opts)
            return
        services = list(snapshot.services) if opts.nosort else ipvsadm_order(snapshot.services)
    yield from _titles(opts)
    for svc in services:
        yield _service_line(svc, opts)
        dests = list(svc.dests) if opts.nosort else ipvsadm_dest_order(svc.dests)
        protocol = None if opts.numeric else svc.key.protocol
        for d in dests:
            yield _dest_line(d, opts, protocol)


def _formatted(opts: ListOptions) -> bool:
    """Any format but the plain one (forward, weight, active and inactive conns)."""
    return opts.stats or opts.rate or opts.thresholds or opts.persistent_conn or opts.tun_info or opts.wide


def _plain_lines(table: Table, opts: ListOptions) -> Iterator[str]:
    """service_lines' plain listing of every service, from the columns: no Dest row is made where
    ipvsadm's order is a key sort (every service but those with addresses 2^31 apart or mixed families)."""
    services, d, starts = table.services, table.dests, table.starts.tolist()
    if opts.nosort:
        order: Sequence[int] = range(len(services))
        rows = np.arange(len(d))
    else:
        position = {id(s): i for i, s in enumerate(services)}
        order = [position[id(s)] for s in ipvsadm_order(services)]
        rows = _dest_rows_order(table)
    for group in _groups(order, starts):
        # the dest lines of a few consecutive services at once, then interleaved with their services'
        protocols = [None if opts.numeric else services[i].key.protocol for i in group]
        block = [rows[starts[i] : starts[i + 1]] for i in group]
        r = np.concatenate(block) if block else rows[:0]
        family, raw, port = d.family[r].tolist(), d.addr[r].tolist(), d.port[r].tolist()
        each = itertools.chain.from_iterable(
            itertools.repeat(p, len(b)) for p, b in zip(protocols, block, strict=True)
        )
        names = list(map(_dest_name, family, map(address_text, family, raw), port, each))
        fwd = [_FWD_LABELS[m] for m in d.fwd[r].tolist()]
        lines = map(
            _PLAIN_DEST.__mod__,
            zip(names, fwd, d.weight[r].tolist(), d.active[r].tolist(), d.inactive[r].tolist(), strict=True),
        )
        for i in group:
            yield _service_line(services[i], opts)
            yield from itertools.islice(lines, starts[i + 1] - starts[i])


def _groups(order: Sequence[int], starts: list[int], size: int = 4096) -> Iterator[list[int]]:
    """`order` cut into runs of services with about `size` dests in all (one service at least)."""
    group: list[int] = []
    n = 0
    for i in order:
        group.append(i)
        n += starts[i + 1] - starts[i]
        if n >= size:
            yield group
            group, n = [], 0
    if group:
        yield group


_FWD_LABELS = tuple(_FWD_NAMES.get(m, "(null)") for m in FwdMethod)


def _dest_rows_order(table: Table) -> Array:
    """The dest rows in ipvsadm's order within each service (ipvsadm_dest_order, on whole columns)."""
    d, starts = table.dests, table.starts
    n = len(d)
    words = np.ascontiguousarray(d.addr).view(">u4").reshape(n, 4)  # _words of each
    order = np.lexsort((d.port, words[:, 3], words[:, 2], words[:, 1], words[:, 0], d.service))
    # services where that key sort is not what glibc's merge sort gives (see _consistent)
    first = starts[:-1][starts[:-1] < starts[1:]]
    odd: list[int] = []
    if n:
        spread = np.maximum.reduceat(words, first) - np.minimum.reduceat(words, first)
        mixed = np.maximum.reduceat(d.family, first) != np.minimum.reduceat(d.family, first)
        odd = first[(spread >= 1 << 31).any(axis=1) | mixed].tolist()
    for a in odd:
        b = int(starts[d.service[a] + 1])
        dests = d.rows(a, b)
        where = {id(x): a + k for k, x in enumerate(dests)}
        order[a:b] = [where[id(x)] for x in ipvsadm_dest_order(dests)]
    return order


# --- connections, timeouts, daemons -------------------------------------------------------------


def _conn_hostport(address: str, port: int, protocol: Protocol | None) -> str:
    return _hostport(AF_INET6 if ":" in address else AF_INET, address, port, protocol)


_CONN_PROTOCOLS = {"TCP": Protocol.TCP, "UDP": Protocol.UDP, "SCTP": Protocol.SCTP}


def conn_lines(entries: Iterable[ConnEntry], opts: ListOptions) -> Iterator[str]:
    """`ipvsadm -Lnc` (with `--persistent-conn`, also the persistence engine's name and data)."""
    yield "IPVS connection entries"
    if opts.persistent_conn:
        yield (
            f"pro expire {'state':<11} {'source':<18} {'virtual':<18} {'destination':<18} "
            f"{'pe name':<16} pe_data"
        )
    else:
        yield f"pro expire {'state':<11} {'source':<18} {'virtual':<18} destination"
    for e in entries:
        minutes, seconds = divmod(e.expires, 60)
        # by name unless -n; IP (fwmark templates) has no service names: Protocol.NONE keeps numbers
        protocol = None if opts.numeric else _CONN_PROTOCOLS.get(e.protocol, Protocol.NONE)
        head = (
            f"{e.protocol:<3} {f'{minutes:02d}:{seconds:02d}':<6} {e.state:<11} "
            f"{_conn_hostport(e.client, e.client_port, protocol):<18} "
            f"{_conn_hostport(e.vaddr, e.vport, protocol):<18} "
        )
        dest = _conn_hostport(e.daddr, e.dport, protocol)
        # ipvsadm shows the engine columns only for lines that carry both PEName and PEData.
        if opts.persistent_conn and e.pe_name and e.pe_data:
            yield head + f"{dest:<16} {e.pe_name:<18} {e.pe_data}"
        else:
            yield head + dest


def timeout_line(snapshot: Snapshot) -> str:
    t = snapshot.timeouts
    if t is None:
        raise LvstopError(f"the {snapshot.source} source did not provide the IPVS timeouts")
    return f"Timeout (tcp tcpfin udp): {t.tcp} {t.tcpfin} {t.udp}"


def daemon_lines(snapshot: Snapshot) -> Iterator[str]:
    """`ipvsadm -L --daemon`: master first, then backup, as the kernel reports them."""
    if snapshot.daemons is None:
        raise LvstopError(f"the {snapshot.source} source cannot see the sync daemons")
    for d in sorted(snapshot.daemons, key=lambda d: d.state):
        text = f"{d.state.name.lower()} sync daemon (mcast={d.mcast_ifn}, syncid={d.syncid}"
        if d.maxlen:
            text += f", maxlen={d.maxlen}"
        group = d.group6 or d.group
        if group:
            text += f", group={group}"
        if d.port:
            text += f", port={d.port}"
        if d.ttl:
            text += f", ttl={d.ttl}"
        yield text + ")"
