"""Snapshots as JSON: `lvstop list --json`, recordings, the exporter's /api/v1/snapshot, RemoteSource.

The round trip is exact: `snapshot_from_dict(snapshot_to_dict(s)) == s`, including int versus float.

Schema (SCHEMA_VERSION 1). Keys are the model's field names; every key is always written. A reader
accepts a missing key only where the model has a default, and ignores keys it does not know, so
fields can be added without a new version; a version bump means an incompatible change.

Snapshot (object)
  schema          int     SCHEMA_VERSION of the writer; a reader refuses newer versions
  source          str     netlink | proc | demo | replay | remote
  director        str     host name of the director
  wall_time       number  Unix time (s) when the poll started
  mono_time       number  monotonic clock (s) when the poll started; only differences mean anything
  services        [Service]
  version         str|null    IPVS version, e.g. "1.2.1"
  conn_tab_size   int|null    connection hash table size
  totals          Counters|null   /proc/net/ip_vs_stats
  total_rates     Rates|null      the kernel's (or lvstop's reproduction of its) EWMA of the totals
  total_instant   Rates|null      plain deltas over the last poll interval
  daemons         [Daemon]|null   null where the source cannot see them (/proc)
  timeouts        Timeouts|null
  sysctls         {str: int}  net.ipv4.vs.* by short name
  est_cpulist     str|null    net.ipv4.vs.est_cpulist (6.2+) as printed, e.g. "0-1"; "" = estimation stopped
  issues          [Issue]     what could not be read
  poll_duration   number|null seconds the read took
  seq             int         poll counter (0 when no poller was involved)

ServiceKey (object)
  family          "inet" | "inet6"
  protocol        "tcp" | "udp" | "sctp" | null (null for fwmark services)
  address         str     canonical text ("" for fwmark services); IPv6 compressed
  port            int     0 for fwmark services
  fwmark          int     0 unless a fwmark service

Service (object)
  key             ServiceKey
  scheduler       str     rr, wlc, mh, ...
  flags           int     IP_VS_SVC_F_* bits: persistent 0x1, hashed 0x2, one-packet 0x4,
                          scheduler flags 0x8, 0x10, 0x20
  timeout         int     persistence timeout, s
  netmask         int     persistence mask: IPv4 the mask as u32, IPv6 the prefix length
  pe_name         str     persistence engine ("" or "sip")
  counters        Counters|null
  rates           Rates|null
  instant         Rates|null
  dests           [Dest]
  error           str|null    set when the dests could not be read consistently (dests incomplete)

Dest (object)
  family          "inet" | "inet6"   may differ from the service's (tunnel dests)
  address, port   str, int
  fwd             "masq" | "local" | "tunnel" | "route" | "bypass"
  weight, active_conns, inactive_conns   int
  u_threshold, l_threshold   int|null    null where the source cannot see them (/proc)
  persist_conns   int|null    null where the source cannot see it (/proc)
  tun_type        "ipip" | "gue" | "gre" | null   (null: unknown, /proc)
  tun_port        int|null    GUE/GRE port
  tun_flags       int|null    IP_VS_TUNNEL_ENCAP_FLAG_* (csum 0x1, remcsum 0x2)
  counters, rates, instant   as for Service

Counters (object): conns, inpkts, outpkts, inbytes, outbytes — int, cumulative (bytes in bytes).
Rates (object): cps, inpps, outpps — number per second; inbps, outbps — number, bytes per second.
Daemon (object): state "master" | "backup", mcast_ifn str, syncid int, maxlen int|null,
  group str|null, group6 str|null, port int|null, ttl int|null.
Timeouts (object): tcp, tcpfin, udp — int, seconds.
Issue (object): kind "no_ipvs" | "no_permission" | "inconsistent" | "malformed" | "unavailable" | "io",
  message str, service ServiceKey|null.

`lvstop list --json` adds to each Service (recordings and the exporter's snapshot do not have it):
  managed_by      [Managed]|null  the running keepalived or ldirectord whose configuration names this
                  service (they put their own weights back); null when none does. lvstop looks on this
                  host only: always null for the demo, replay and remote sources
Managed (object): manager "keepalived" | "ldirectord", pid int, block str (the configuration's words,
  "virtual_server 203.0.113.10 80", "virtual=203.0.113.10:80"), where str (file:line), keeps_failed bool
  (inhibit_on_failure / quiescent=yes: a failing server stays at weight 0, else it is removed), undo str
  (how that manager will undo a weight lvstop sets).
and, with --health.config, to each Dest a `health` object (lvstop.health.state.health_to_dict).
"""

from __future__ import annotations

import enum
import ipaddress
import json
import math
import sys
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from lvstop.errors import ParseError
from lvstop.model import (
    AF_INET,
    AF_INET6,
    Counters,
    Daemon,
    DaemonState,
    Dest,
    DestKey,
    FwdMethod,
    Issue,
    IssueKind,
    Protocol,
    Rates,
    Service,
    ServiceKey,
    Snapshot,
    Timeouts,
    TunType,
)
from lvstop.sources.procfs import parse_cpulist

if TYPE_CHECKING:
    from lvstop.managers import Claim, ManagedService

ManagedMap = Mapping[ServiceKey, "tuple[Claim, ...]"]  # lvstop.managers.by_service()

SCHEMA_VERSION = 1

_FAMILIES = {AF_INET: "inet", AF_INET6: "inet6"}
_FAMILY_BY_NAME = {v: k for k, v in _FAMILIES.items()}
_PROTOCOLS = {Protocol.TCP: "tcp", Protocol.UDP: "udp", Protocol.SCTP: "sctp", Protocol.NONE: None}
_PROTOCOL_BY_NAME = {v: k for k, v in _PROTOCOLS.items()}
_COUNTER_FIELDS = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")
_RATE_FIELDS = ("cps", "inpps", "outpps", "inbps", "outbps")

E = TypeVar("E", bound=enum.Enum)
T = TypeVar("T")
_MISSING = object()
_MAX_FLOAT_INT = int(sys.float_info.max)


# ---------------------------------------------------------------------------------------------- encode


def _counters(c: Counters | None) -> dict[str, int] | None:
    if c is None:
        return None
    return {
        "conns": c.conns,
        "inpkts": c.inpkts,
        "outpkts": c.outpkts,
        "inbytes": c.inbytes,
        "outbytes": c.outbytes,
    }


def _rates(r: Rates | None) -> dict[str, float] | None:
    if r is None:
        return None
    return {"cps": r.cps, "inpps": r.inpps, "outpps": r.outpps, "inbps": r.inbps, "outbps": r.outbps}


def service_key_to_dict(k: ServiceKey) -> dict[str, Any]:
    return {
        "family": _FAMILIES[k.family],
        "protocol": _PROTOCOLS[k.protocol],
        "address": k.address,
        "port": k.port,
        "fwmark": k.fwmark,
    }


def dest_key_to_dict(k: DestKey) -> dict[str, Any]:
    return {"family": _FAMILIES[k.family], "address": k.address, "port": k.port}


def _dest(d: Dest) -> dict[str, Any]:
    return {
        "family": _FAMILIES[d.family],
        "address": d.address,
        "port": d.port,
        "fwd": d.fwd.name.lower(),
        "weight": d.weight,
        "u_threshold": d.u_threshold,
        "l_threshold": d.l_threshold,
        "active_conns": d.active_conns,
        "inactive_conns": d.inactive_conns,
        "persist_conns": d.persist_conns,
        "tun_type": None if d.tun_type is None else d.tun_type.name.lower(),
        "tun_port": d.tun_port,
        "tun_flags": d.tun_flags,
        "counters": _counters(d.counters),
        "rates": _rates(d.rates),
        "instant": _rates(d.instant),
    }


def _service(s: Service) -> dict[str, Any]:
    return {
        "key": service_key_to_dict(s.key),
        "scheduler": s.scheduler,
        "flags": s.flags,
        "timeout": s.timeout,
        "netmask": s.netmask,
        "pe_name": s.pe_name,
        "counters": _counters(s.counters),
        "rates": _rates(s.rates),
        "instant": _rates(s.instant),
        "dests": [_dest(d) for d in s.dests],
        "error": s.error,
    }


def _timeouts(t: Timeouts | None) -> dict[str, int] | None:
    return None if t is None else {"tcp": t.tcp, "tcpfin": t.tcpfin, "udp": t.udp}


def _daemon(d: Daemon) -> dict[str, Any]:
    return {
        "state": d.state.name.lower(),
        "mcast_ifn": d.mcast_ifn,
        "syncid": d.syncid,
        "maxlen": d.maxlen,
        "group": d.group,
        "group6": d.group6,
        "port": d.port,
        "ttl": d.ttl,
    }


def managed_to_dict(pid: int, m: ManagedService) -> dict[str, Any]:
    return {
        "manager": m.manager,
        "pid": pid,
        "block": m.block,
        "where": m.where,
        "keeps_failed": m.keeps_failed,
        "undo": m.undo(),
    }


def snapshot_to_dict(s: Snapshot, managed: ManagedMap | None = None) -> dict[str, Any]:
    """The JSON-ready form of a snapshot (plain dicts, lists, str, int, float, None); with `managed`
    (lvstop list --json), each service's `managed_by`."""
    services = [_service(x) for x in s.services]
    if managed is not None:
        for svc, d in zip(s.services, services, strict=True):
            claims = managed.get(svc.key)
            d["managed_by"] = [managed_to_dict(pid, m) for pid, m in claims] if claims else None
    return {
        "schema": SCHEMA_VERSION,
        "source": s.source,
        "director": s.director,
        "wall_time": s.wall_time,
        "mono_time": s.mono_time,
        "services": services,
        "version": s.version,
        "conn_tab_size": s.conn_tab_size,
        "totals": _counters(s.totals),
        "total_rates": _rates(s.total_rates),
        "total_instant": _rates(s.total_instant),
        "daemons": None if s.daemons is None else [_daemon(d) for d in s.daemons],
        "timeouts": _timeouts(s.timeouts),
        "sysctls": dict(s.sysctls),
        "est_cpulist": s.est_cpulist,
        "issues": [
            {
                "kind": i.kind.value,
                "message": i.message,
                "service": None if i.service is None else service_key_to_dict(i.service),
            }
            for i in s.issues
        ],
        "poll_duration": s.poll_duration,
        "seq": s.seq,
    }


def dumps(s: Snapshot, *, indent: int | None = None, managed: ManagedMap | None = None) -> str:
    """Compact JSON (one line) unless `indent` is given. Non-finite numbers are refused (not JSON)."""
    if indent is None:
        return json.dumps(snapshot_to_dict(s, managed), separators=(",", ":"), allow_nan=False)
    return json.dumps(snapshot_to_dict(s, managed), indent=indent, allow_nan=False)


# ---------------------------------------------------------------------------------------------- decode


class JsonReader:
    """Typed access to one JSON object (a snapshot, an API reply); errors are ParseErrors naming the
    path of the offending value."""

    __slots__ = ("d", "path")

    def __init__(self, d: object, path: str) -> None:
        if not isinstance(d, dict):
            raise ParseError(f"{path or 'snapshot'}: expected an object, got {_kind(d)}")
        self.d: dict[str, Any] = d
        self.path = path

    def _get(self, key: str, default: object) -> object:
        v = self.d.get(key, _MISSING)
        if v is _MISSING:
            if default is _MISSING:
                raise ParseError(f"{self._at(key)}: missing")
            return default
        return v

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _bad(self, key: str, want: str, v: object) -> ParseError:
        return ParseError(f"{self._at(key)}: expected {want}, got {_kind(v)}")

    def integer(self, key: str, default: object = _MISSING) -> int:
        v = self._get(key, default)
        if type(v) is not int:
            raise self._bad(key, "an integer", v)
        return v

    def opt_integer(self, key: str, default: int | None = None) -> int | None:
        """null is None; a missing key is `default`."""
        v = self._get(key, default)
        return v if v is None or v is default else self.integer(key)

    def number(self, key: str, default: object = _MISSING) -> float:
        v = self._get(key, default)
        if type(v) is int and abs(v) > _MAX_FLOAT_INT:  # math.isfinite() would raise OverflowError
            raise self._bad(key, "a finite number", v)
        if type(v) not in (int, float) or not math.isfinite(v):  # type: ignore[arg-type]
            raise self._bad(key, "a finite number", v)
        return v  # type: ignore[return-value]

    def opt_number(self, key: str) -> float | None:
        v = self._get(key, None)
        return None if v is None else self.number(key)

    def text(self, key: str, default: object = _MISSING) -> str:
        v = self._get(key, default)
        if type(v) is not str:
            raise self._bad(key, "a string", v)
        return v

    def boolean(self, key: str) -> bool:
        v = self._get(key, _MISSING)
        if type(v) is not bool:
            raise self._bad(key, "true or false", v)
        return v

    def texts(self, key: str) -> tuple[str, ...]:
        """A list of strings; a missing key is an empty list."""
        v = self._get(key, [])
        if type(v) is not list:
            raise self._bad(key, "a list", v)
        for i, x in enumerate(v):
            if type(x) is not str:
                raise ParseError(f"{self._at(key)}[{i}]: expected a string, got {_kind(x)}")
        return tuple(v)

    def service_key(self, key: str) -> ServiceKey:
        try:
            return service_key_from_dict(self._get(key, _MISSING), self._at(key))
        except ValueError as e:
            raise ParseError(str(e)) from None

    def dest_key(self, key: str) -> DestKey:
        try:
            return dest_key_from_dict(self._get(key, _MISSING), self._at(key))
        except ValueError as e:
            raise ParseError(str(e)) from None

    def opt_text(self, key: str) -> str | None:
        v = self._get(key, None)
        return None if v is None else self.text(key)

    def obj(self, key: str) -> JsonReader:
        return JsonReader(self._get(key, _MISSING), self._at(key))

    def opt_obj(self, key: str) -> JsonReader | None:
        v = self._get(key, None)
        return None if v is None else JsonReader(v, self._at(key))

    def items(self, key: str, item: Callable[[JsonReader], T], *, required: bool = False) -> tuple[T, ...]:
        """A list of objects, each read by `item`; a missing key is an empty list unless `required`."""
        v = self._get(key, _MISSING if required else [])
        if type(v) is not list:
            raise self._bad(key, "a list", v)
        return tuple(item(JsonReader(x, f"{self._at(key)}[{i}]")) for i, x in enumerate(v))

    def enum(self, key: str, cls: type[E], default: object = _MISSING) -> E:
        v = self._get(key, default)
        if isinstance(v, cls):
            return v
        if type(v) is str and v.upper() in cls.__members__:
            return cls.__members__[v.upper()]
        names = ", ".join(m.lower() for m in cls.__members__)
        raise self._bad(key, f"one of {names}", v)

    def family(self, key: str) -> int:
        v = self._get(key, _MISSING)
        if type(v) is not str or v not in _FAMILY_BY_NAME:
            raise self._bad(key, '"inet" or "inet6"', v)
        return _FAMILY_BY_NAME[v]


def _kind(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, str):
        return f"the string {v!r}" if len(v) <= 40 else "a string"
    if isinstance(v, int | float):
        return f"the number {v!r}"
    if isinstance(v, dict):
        return "an object"
    return "a list" if isinstance(v, list) else type(v).__name__


# Keys are also what users send (the write API) and what the drain state keeps, hence ValueError
# naming the field, lenient `family` (taken from the address when left out) and normalised addresses.


def service_key_from_dict(d: object, path: str = "service") -> ServiceKey:
    """A ServiceKey from service_key_to_dict's form; ValueError says which field under `path` is wrong."""
    obj = _key_object(d, path)
    fwmark = obj.get("fwmark", 0)
    if type(fwmark) is not int or not 0 <= fwmark <= 0xFFFFFFFF:
        raise ValueError(f"{path}.fwmark: expected an integer 0..4294967295, got {_kind(fwmark)}")
    family = _key_family(obj, path)
    if fwmark:
        return ServiceKey.mark(fwmark, family)
    proto = obj.get("protocol", _MISSING)
    if not isinstance(proto, str) or proto not in _PROTOCOL_BY_NAME:
        got = "nothing" if proto is _MISSING else _kind(proto)
        raise ValueError(f'{path}.protocol: expected "tcp", "udp" or "sctp" (or a fwmark), got {got}')
    return ServiceKey(family, _PROTOCOL_BY_NAME[proto], _key_address(obj, path, family), _key_port(obj, path))


def dest_key_from_dict(d: object, path: str = "dest") -> DestKey:
    """A DestKey from dest_key_to_dict's form; ValueError says which field under `path` is wrong."""
    obj = _key_object(d, path)
    family = _key_family(obj, path)
    return DestKey(family, _key_address(obj, path, family), _key_port(obj, path))


def _key_object(d: object, path: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected an object, got {_kind(d)}")
    return d


def _key_family(obj: dict[str, Any], path: str) -> int:
    if "family" not in obj:
        return AF_INET6 if ":" in str(obj.get("address", "")) else AF_INET
    v = obj["family"]
    if type(v) is not str or v not in _FAMILY_BY_NAME:
        raise ValueError(f'{path}.family: expected "inet" or "inet6", got {_kind(v)}')
    return _FAMILY_BY_NAME[v]


def _key_address(obj: dict[str, Any], path: str, family: int) -> str:
    v = obj.get("address", _MISSING)
    if type(v) is not str:
        raise ValueError(
            f"{path}.address: expected an IP address, got {'nothing' if v is _MISSING else _kind(v)}"
        )
    try:
        addr = ipaddress.ip_address(v)
    except ValueError:
        raise ValueError(f"{path}.address: not an IP address: {v!r}") from None
    if addr.version != (6 if family == AF_INET6 else 4):
        raise ValueError(f"{path}.address: {v} does not match family {_FAMILIES[family]}")
    return str(addr)  # the canonical form the sources use, so keys compare equal


def _key_port(obj: dict[str, Any], path: str) -> int:
    v = obj.get("port", _MISSING)
    if type(v) is not int or not 0 <= v <= 65535:
        raise ValueError(
            f"{path}.port: expected an integer 0..65535, got {'nothing' if v is _MISSING else _kind(v)}"
        )
    return v


def _read_counters(r: JsonReader | None) -> Counters | None:
    if r is None:
        return None
    return Counters(*(r.integer(f) for f in _COUNTER_FIELDS))


def _read_rates(r: JsonReader | None) -> Rates | None:
    if r is None:
        return None
    return Rates(*(r.number(f) for f in _RATE_FIELDS))


def _read_dest(r: JsonReader) -> Dest:
    family = r.family("family")
    try:
        address = _key_address(r.d, r.path, family)  # listings and keys need an IP address and a port
        port = _key_port(r.d, r.path)
    except ValueError as e:
        raise ParseError(str(e)) from None
    return Dest(
        family,
        address,
        port,
        r.enum("fwd", FwdMethod),
        r.integer("weight"),
        r.opt_integer("u_threshold", 0),
        r.opt_integer("l_threshold", 0),
        r.integer("active_conns", 0),
        r.integer("inactive_conns", 0),
        r.opt_integer("persist_conns", 0),
        None if r.d.get("tun_type", "ipip") is None else r.enum("tun_type", TunType, TunType.IPIP),
        r.opt_integer("tun_port", 0),
        r.opt_integer("tun_flags", 0),
        _read_counters(r.opt_obj("counters")),
        _read_rates(r.opt_obj("rates")),
        _read_rates(r.opt_obj("instant")),
    )


def _read_service(r: JsonReader) -> Service:
    return Service(
        r.service_key("key"),
        r.text("scheduler"),
        r.integer("flags", 0),
        r.integer("timeout", 0),
        r.integer("netmask", 0xFFFFFFFF),
        r.text("pe_name", ""),
        _read_counters(r.opt_obj("counters")),
        _read_rates(r.opt_obj("rates")),
        _read_rates(r.opt_obj("instant")),
        r.items("dests", _read_dest),
        r.opt_text("error"),
    )


def _read_daemon(r: JsonReader) -> Daemon:
    return Daemon(
        r.enum("state", DaemonState),
        r.text("mcast_ifn"),
        r.integer("syncid"),
        r.opt_integer("maxlen"),
        r.opt_text("group"),
        r.opt_text("group6"),
        r.opt_integer("port"),
        r.opt_integer("ttl"),
    )


def _read_issue(r: JsonReader) -> Issue:
    svc = None if r.d.get("service") is None else r.service_key("service")
    return Issue(r.enum("kind", IssueKind), r.text("message"), svc)


def _read_sysctls(r: JsonReader) -> Mapping[str, int]:
    s = JsonReader(r._get("sysctls", {}), r._at("sysctls"))
    return MappingProxyType({name: s.integer(name) for name in s.d})


def _read_cpulist(text: str | None) -> str | None:
    return None if text is None else parse_cpulist(text, source="est_cpulist")


def snapshot_from_dict(d: object) -> Snapshot:
    """The inverse of snapshot_to_dict. Raises ParseError naming the offending path."""
    r = JsonReader(d, "")
    version = r.integer("schema")
    if version > SCHEMA_VERSION:
        raise ParseError(f"schema {version} is newer than this lvstop understands ({SCHEMA_VERSION})")
    t = r.opt_obj("timeouts")
    return Snapshot(
        r.text("source"),
        r.text("director"),
        r.number("wall_time"),
        r.number("mono_time"),
        r.items("services", _read_service),
        r.opt_text("version"),
        r.opt_integer("conn_tab_size"),
        _read_counters(r.opt_obj("totals")),
        _read_rates(r.opt_obj("total_rates")),
        _read_rates(r.opt_obj("total_instant")),
        None if r.d.get("daemons", ()) is None else r.items("daemons", _read_daemon),
        None if t is None else Timeouts(t.integer("tcp"), t.integer("tcpfin"), t.integer("udp")),
        _read_sysctls(r),
        r.items("issues", _read_issue),
        r.opt_number("poll_duration"),
        r.integer("seq", 0),
        _read_cpulist(r.opt_text("est_cpulist")),
    )


def loads(text: str | bytes) -> Snapshot:
    """Parse JSON text into a Snapshot; ParseError carries the line of a JSON syntax error."""
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ParseError(f"invalid JSON: {e.msg} (column {e.colno})", line=e.lineno) from None
    except UnicodeDecodeError as e:
        raise ParseError(f"not UTF-8 text: {e.reason}") from None
    except RecursionError:
        raise ParseError("invalid JSON: nested too deeply") from None
    except ValueError as e:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise ParseError(f"invalid JSON: {e}") from None
    return snapshot_from_dict(d)
