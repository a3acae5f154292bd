"""Recording a kernel's replies for the unit tier, in the layout of tests/fixtures/netlink/README.md.

- capture(): ipvsadm's and /proc's view of a namespace, the files beside the netlink replies.
- record_read(): the bytes NetlinkSource receives for each request of one read (a socket wrapper
  passed as its socket_factory), as the unit tier replays them.
- scenario(): what a fixture folder describes (ipvsadm-save.txt, -thresholds, -daemon, -timeout,
  sysctl-vs.txt), so that test_kz_rerecord.py can rebuild it on the kernel under test.

Also run as a script inside a namespace for the replies that need another process:
    python rerecord.py eperm OUT      GET_INFO without capabilities (run it as an unprivileged user)
    python rerecord.py esrch OUT      GET_SERVICE of a service that does not exist
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script inside a namespace
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import nlrecord
    from oracle import parse_daemons, parse_list, parse_timeout
else:
    from . import nlrecord
    from .lab import Lab
    from .oracle import parse_daemons, parse_list, parse_timeout

from lvstop.errors import LvstopError
from lvstop.model import AF_INET, DestKey, ServiceKey, Snapshot
from lvstop.sources.netlink import NETLINK_GENERIC, NetlinkSource

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "netlink"
# what each ipvsadm-*.txt capture is (file name -> ipvsadm arguments)
IPVSADM_CAPTURES = {
    "ipvsadm-Ln.txt": ("-Ln",),
    "ipvsadm-stats.txt": ("-Ln", "--stats"),
    "ipvsadm-stats-exact.txt": ("-Ln", "--stats", "--exact"),
    "ipvsadm-rate.txt": ("-Ln", "--rate"),
    "ipvsadm-rate-exact.txt": ("-Ln", "--rate", "--exact"),
    "ipvsadm-thresholds.txt": ("-Ln", "--thresholds"),
    "ipvsadm-persistent-conn.txt": ("-Ln", "--persistent-conn"),
    "ipvsadm-tun-info.txt": ("-Ln", "--tun-info"),
    "ipvsadm-save.txt": ("-S", "-n"),
    "ipvsadm-daemon.txt": ("-L", "--daemon"),
    "ipvsadm-timeout.txt": ("-L", "--timeout"),
}
CONN_CAPTURES = {"ipvsadm-Lnc.txt": ("-Lnc",)}
# errors/: requests that fail, against the main scenario
MISSING_SERVICE = ServiceKey.tcp("203.0.113.99", 80)
SET_DEST_SERVICE = ServiceKey.tcp("203.0.113.14", 8080)
SET_DEST = DestKey(AF_INET, "192.0.2.12", 8080)
NOT_A_DEST = "192.0.2.99"


class Tap:
    """A socket_factory for NetlinkSource that keeps every request and the datagrams answering it."""

    def __init__(self) -> None:
        self.exchanges: list[tuple[bytes, list[bytes]]] = []

    def factory(self) -> _TappedSocket:
        return _TappedSocket(self)

    def reply(self, i: int) -> bytes:
        return b"".join(self.exchanges[i][1])


class _TappedSocket:
    def __init__(self, tap: Tap) -> None:
        self.tap = tap
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_GENERIC)

    def sendto(self, data: bytes, address: tuple[int, int], /) -> int:
        self.tap.exchanges.append((bytes(data), []))
        return self.sock.sendto(data, address)

    def recvmsg_into(self, buffers: list[memoryview], /) -> tuple[int, list[Any], int, Any]:
        n, anc, flags, addr = self.sock.recvmsg_into(buffers)
        self.tap.exchanges[-1][1].append(bytes(buffers[0][:n]))
        return n, anc, flags, addr

    def settimeout(self, value: float | None, /) -> None:
        self.sock.settimeout(value)

    def close(self) -> None:
        self.sock.close()


def capture(lab: Lab, ns: str, out: Path, *, conns: bool = False) -> None:
    """ipvsadm's listings, /proc's files and the sysctls of `ns`, as the fixture folders hold them."""
    out.mkdir(parents=True, exist_ok=True)
    for name, args in (IPVSADM_CAPTURES | (CONN_CAPTURES if conns else {})).items():
        (out / name).write_text(lab.ipvsadm(*args, ns=ns))
    files = ["ip_vs", "ip_vs_stats", *(["ip_vs_conn", "ip_vs_conn_sync"] if conns else [])]
    for name in files:
        (out / f"proc-{name}.txt").write_text(Path(f"{lab.proc_root(ns)}/net/{name}").read_text())
    # sysctls are per namespace and only visible from inside it
    (out / "sysctl-vs.txt").write_text(lab.in_ns(ns, ["sysctl", "net.ipv4.vs"]).stdout)


def _comparable(s: Snapshot) -> Snapshot:
    return dataclasses.replace(s, wall_time=0, mono_time=0, poll_duration=None)


def record_read(netns: str, out: Path, alongside: Callable[[Path], None], attempts: int = 5) -> Snapshot:
    """One tapped NetlinkSource read of `netns` into `out`, `alongside(out)` capturing the same instant.
    Retried until a second read after the captures decodes the same (nothing moved meanwhile)."""
    for _ in range(attempts):
        tap = Tap()
        source = NetlinkSource(netns=netns, socket_factory=tap.factory)
        try:
            snap = source.read()
            alongside(out)
            again = source.read()
        finally:
            source.close()
        if _comparable(snap) == _comparable(again):
            break
    else:
        raise AssertionError(f"{netns}: the table kept moving during {attempts} recording attempts")
    n = len(snap.services)
    # the requests of one read, in order: family list (at connect), info, config, daemons, services,
    # one dest dump per service, services again (the recheck); then the second read's
    names = ["ctrl_families", "info", "config", "daemons", "services"]
    names += [f"dests-{i:02d}" for i in range(n)] + ["services-recheck"]
    assert len(tap.exchanges) >= len(names), f"{len(tap.exchanges)} requests, expected {len(names)}"
    out.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (out / f"{name}.bin").write_bytes(tap.reply(i))
    index = {
        "family_id": _family_id(tap.reply(0)),
        "services": [
            {"service": str(s.key), "dests": f"dests-{i:02d}.bin", "datagrams": len(tap.exchanges[5 + i][1])}
            for i, s in enumerate(snap.services)
        ],
    }
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return snap


def _family_id(ctrl_dump: bytes) -> int:
    for mtype, _flags, payload in nlrecord.messages(ctrl_dump):
        if mtype == nlrecord.GENL_ID_CTRL:
            a = dict(nlrecord.attrs(payload[4:]))
            if a.get(nlrecord.CTRL_ATTR_FAMILY_NAME, b"").rstrip(b"\0") == b"IPVS":
                return int(struct.unpack("=H", a[nlrecord.CTRL_ATTR_FAMILY_ID][:2])[0])
    raise AssertionError("no IPVS in the recorded family list")


# ----------------------------------------------------------------- the scenario a folder describes


@dataclasses.dataclass(frozen=True)
class Scenario:
    rules: str  # ipvsadm -R input
    timeouts: tuple[int, int, int]
    daemons: list[dict[str, Any]]
    sysctls: dict[str, str]


def scenario(folder: Path) -> Scenario:
    rules = (folder / "ipvsadm-save.txt").read_text().splitlines()
    # ipvsadm -S leaves thresholds out: put them back from the --thresholds capture
    thresholds = parse_list((folder / "ipvsadm-thresholds.txt").read_text())
    for svc, dests in thresholds.dests.items():
        for dest, f in dests.items():
            if f["u_threshold"] or f["l_threshold"]:
                i = next(
                    i
                    for i, r in enumerate(rules)
                    if r.startswith("-a ") and f"-r {dest} " in r and _svc_arg(svc) in r
                )
                rules[i] += f" -x {f['u_threshold']} -y {f['l_threshold']}"
    sysctls = {}
    for line in (folder / "sysctl-vs.txt").read_text().splitlines():
        name, _, value = line.partition(" = ")
        sysctls[name.removeprefix("net.ipv4.vs.")] = value
    return Scenario(
        "\n".join(rules) + "\n",
        parse_timeout((folder / "ipvsadm-timeout.txt").read_text()),
        parse_daemons((folder / "ipvsadm-daemon.txt").read_text()),
        sysctls,
    )


def _svc_arg(name: str) -> str:
    """`TCP  203.0.113.10:80` -> `-t 203.0.113.10:80 `, as it appears in ipvsadm -S lines."""
    proto, where = name.split(None, 1)
    if proto == "FWM":
        mark, *v6 = where.split()
        return f"-f {mark} " + ("-6 " if v6 else "")
    return {"TCP": "-t", "UDP": "-u", "SCTP": "--sctp-service"}[proto] + f" {where} "


def daemon_args(d: dict[str, Any]) -> list[str]:
    return [
        "--start-daemon",
        d["state"],
        "--mcast-interface",
        d["mcast"],
        "--syncid",
        str(d["syncid"]),
        "--sync-maxlen",
        str(d["maxlen"]),
        "--mcast-group",
        d["group"],
        "--mcast-port",
        str(d["port"]),
        "--mcast-ttl",
        str(d["ttl"]),
    ]


# ----------------------------------------------------------------- replies needing another process


def _eperm(out: Path) -> None:
    tap = Tap()
    with contextlib.suppress(LvstopError):  # the EPERM is the point
        NetlinkSource(socket_factory=tap.factory).read()
    (out / "info_eperm.bin").write_bytes(tap.reply(1))  # [0] is the family list, [1] GET_INFO


def _esrch(out: Path) -> None:
    r = nlrecord.Recorder()
    r.resolve()
    k = MISSING_SERVICE
    key = (
        nlrecord.nla(nlrecord.SVC_ATTR_AF, struct.pack("=H", k.family))
        + nlrecord.nla(nlrecord.SVC_ATTR_PROTOCOL, struct.pack("=H", int(k.protocol)))
        + nlrecord.nla(nlrecord.SVC_ATTR_ADDR, socket.inet_pton(socket.AF_INET, k.address) + bytes(12))
        + nlrecord.nla(nlrecord.SVC_ATTR_PORT, struct.pack("!H", k.port))
    )
    reply = r.ipvs(nlrecord.GET_SERVICE, nlrecord.NLM_F_REQUEST, nlrecord.nla(nlrecord.CMD_ATTR_SERVICE, key))
    (out / "service_esrch.bin").write_bytes(reply)


if __name__ == "__main__":
    {"eperm": _eperm, "esrch": _esrch}[sys.argv[1]](Path(sys.argv[2]))
