"""How keys, addresses, flags and tunnels are written in cells, and the row keys of services and dests."""

from __future__ import annotations

import socket
from collections.abc import Callable

from lvstop.model import (
    AF_INET,
    AF_INET6,
    TUN_F_CSUM,
    TUN_F_REMCSUM,
    Dest,
    DestKey,
    FwdMethod,
    Rates,
    Service,
    ServiceKey,
    TunType,
    format_hostport,
)

Names = Callable[[str], str | None]  # address -> resolved name, None while unknown


def no_names(_address: str) -> str | None:
    return None


def service_id(key: ServiceKey) -> str:
    return str(key)


def dest_id(key: DestKey) -> str:
    return str(key)


def addr_order(family: int, address: str, port: int) -> tuple[int, bytes, int]:
    try:  # inet_pton, not ipaddress: a sort key per row per build, ~30x cheaper
        packed = socket.inet_pton(AF_INET6 if ":" in address else AF_INET, address)
    except OSError:
        packed = address.encode()
    return (family, packed, port)


def host_label(family: int, address: str, port: int, names: Names) -> str:
    name = names(address)
    if name is None:
        return format_hostport(family, address, port)
    return f"{name}:{port}"


def vip_label(key: ServiceKey, names: Names = no_names) -> str:
    if key.is_fwmark:
        return f"mark {key.fwmark}" + (" v6" if key.family == 10 else "")
    return host_label(key.family, key.address, key.port, names)


def service_flags(svc: Service) -> str:
    parts: list[str] = []
    if svc.persistent:
        part = f"persist {svc.timeout}s"
        full = 128 if svc.key.family == 10 else 32
        if svc.prefix_len != full:
            part += f" /{svc.prefix_len}"
        parts.append(part)
    if svc.one_packet:
        parts.append("ops")
    parts.extend(svc.sched_flags())
    if svc.pe_name:
        parts.append(f"pe {svc.pe_name}")
    return " ".join(parts)


def tunnel_label(d: Dest) -> str:
    if d.fwd is not FwdMethod.TUNNEL:
        return ""
    if d.tun_type is None or d.tun_flags is None:
        return "?"  # read from /proc: the tunnel type is unknown
    label = d.tun_type.name.lower()
    if d.tun_type is TunType.GUE and d.tun_port:
        label += f":{d.tun_port}"
    if d.tun_flags & TUN_F_CSUM:
        label += " csum"
    if d.tun_flags & TUN_F_REMCSUM:
        label += " remcsum"
    return label


def rates_of(obj: Service | Dest, instant: bool) -> Rates | None:
    return obj.instant if instant else obj.rates


def live_dests(svc: Service) -> int:
    return sum(1 for d in svc.dests if d.weight > 0)
