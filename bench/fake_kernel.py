"""A stand-in kernel for benchmarks: a demo director served over IPVS generic netlink, in its own process.

    .venv/bin/python bench/fake_kernel.py DIR --services 2000 --dests 50

Serves NetlinkSource's requests on the SOCK_SEQPACKET socket DIR/genl (datagrams, as netlink has) and
writes DIR/proc, a /proc for NetlinkSource's proc_root: net/ip_vs_stats (rewritten every tick),
net/ip_vs_conn_sync (a FIFO: each open gets the demo's connection table, printed on demand as the
kernel prints it) and sys/net/ipv4/vs/*. The demo director (SimSource) and a Poller that gives it the
kernel's EWMA rates run here, so an exporter on `NetlinkSource(socket_factory=connect(DIR))` does only
what it does on a real director: decode dumps that carry the kernel's rates, estimate instant rates,
render. Info, config and daemon replies are the real 6.1 kernel's, recorded in tests/fixtures/netlink.

What this process spends stands for the kernel's work. On a real director the kernel builds dumps and
prints ip_vs_conn in the reading process's system time; here it is this process's CPU, reported apart.
Writes (SET_DEST) are refused with EPERM: this kernel is read-only.
"""

from __future__ import annotations

import argparse
import errno
import itertools
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lvstop.model import Dest, Rates, Service, Snapshot  # noqa: E402
from lvstop.poller import Poller  # noqa: E402
from lvstop.sources import wire  # noqa: E402

try:  # the client socket behaves as the NetlinkSource under test's own (bench_poll --peer runs older code)
    from lvstop.sources.netlink import KernelSocket as _ClientSocket
except ImportError:  # code from before KernelSocket: a plain socket, Python's timeout
    _ClientSocket = socket.socket  # type: ignore[misc, assignment]

sys.path.insert(0, str(ROOT / "tests"))
import netlink_replies as replies  # noqa: E402

from lvstop.sources.sim import SimSource  # noqa: E402

RECORDED = ROOT / "tests" / "fixtures" / "netlink" / "main"
GENL_ID_CTRL = 16
DATAGRAM = 32 << 10  # the kernel's dump datagrams are at most about this big


def _split(data: bytes) -> list[tuple[int, int, bytes]]:
    """(type, cmd, message) for each netlink message of `data`."""
    out = []
    off = 0
    while off < len(data):
        length, mtype = struct.unpack_from("=IH", data, off)
        out.append((mtype, data[off + 16] if length > 16 else 0, data[off : off + length]))
        off += (length + 3) & ~3
    return out


def _with_seq(messages: list[bytes], seq: int) -> list[bytes]:
    out = []
    for m in messages:
        b = bytearray(m)
        struct.pack_into("=I", b, 8, seq)
        out.append(bytes(b))
    return out


def _datagrams(messages: list[bytes], seq: int) -> list[bytes]:
    """Messages packed into datagrams of at most DATAGRAM bytes, then NLMSG_DONE on its own."""
    grams: list[bytes] = []
    part: list[bytes] = []
    size = 0
    for m in messages:
        if part and size + len(m) > DATAGRAM:
            grams.append(b"".join(part))
            part, size = [], 0
        part.append(m)
        size += len(m)
    if part:
        grams.append(b"".join(part))
    return [*grams, replies.done(seq)]


def recorded_family() -> int:
    from pyroute2.netlink import ctrlmsg

    for mtype, _cmd, m in _split((RECORDED / "ctrl_families.bin").read_bytes()):
        if mtype == GENL_ID_CTRL:
            msg = ctrlmsg(m)
            msg.decode()
            if msg.get_attr("CTRL_ATTR_FAMILY_NAME") == wire.IPVS_GENL_NAME:
                return int(msg.get_attr("CTRL_ATTR_FAMILY_ID"))
    raise SystemExit("no IPVS family in the recorded family list")


class Kernel:
    def __init__(self, services: int, dests: int, tick: float = 2.0) -> None:
        self.family = recorded_family()
        self.sim = SimSource(seed=1, services=services, dests_per_service=dests)
        self.poller = Poller(self.sim)  # the kernel's own rates, as lvstop reproduces them
        self.tick = tick
        self._lock = threading.Lock()
        self._snap: Snapshot = self.poller.poll_once()
        self._at = time.monotonic()
        self._keys: dict[bytes, int] = {}
        self._dests: list[bytes] = []  # per service: its dest messages (seq 0), made from the columns
        self.recorded = {
            name: [m for _t, _c, m in _split((RECORDED / f"{name}.bin").read_bytes())]
            for name in ("ctrl_families", "info", "config", "daemons")
        }

    def snapshot(self, fresh: bool) -> Snapshot:
        with self._lock:
            if fresh and time.monotonic() - self._at >= self.tick:
                self._snap = self.poller.poll_once()
                self._at = time.monotonic()
                self._keys = {}
                self._dests = []
            return self._snap

    def answer(self, request: bytes) -> list[bytes]:
        mtype, cmd, _m = _split(request)[0]
        seq = struct.unpack_from("=I", request, 8)[0]
        if mtype == GENL_ID_CTRL:
            return [b"".join(_with_seq(self.recorded["ctrl_families"], seq))]
        if mtype != self.family:
            return [replies.error(-errno.EINVAL, request)]
        if cmd in (wire.CMD_GET_INFO, wire.CMD_GET_CONFIG):
            if cmd == wire.CMD_GET_INFO:  # a read starts: tick if one is due, so all its dumps agree
                self.snapshot(fresh=True)
            name = "info" if cmd == wire.CMD_GET_INFO else "config"
            return [b"".join(_with_seq(self.recorded[name], seq))]
        if cmd == wire.CMD_GET_DAEMON:
            return [b"".join(_with_seq(self.recorded["daemons"], seq))]
        if cmd == wire.CMD_GET_SERVICE:
            snap = self.snapshot(fresh=False)
            return _datagrams([self._service(s, seq) for s in snap.table.services], seq)
        if cmd == wire.CMD_GET_DEST:
            snap = self.snapshot(fresh=False)
            if not self._keys:
                self._keys = {
                    wire.nla(wire.CMD_ATTR_SERVICE, wire.encode_service_key(s.key)): i
                    for i, s in enumerate(snap.table.services)
                }
            i = self._keys.get(request[20:])
            if i is None:
                return [replies.error(-errno.ESRCH, request)]
            if not self._dests:
                self._dests = self._dest_messages(snap)
            return _dest_datagrams(self._dests[i], seq)
        return [replies.error(-errno.EPERM, request)]

    def _service(self, svc: Service, seq: int) -> bytes:
        payload = wire.nla(wire.CMD_ATTR_SERVICE, replies.encode_service(svc))
        return wire.message(self.family, wire.CMD_NEW_SERVICE, payload, flags=wire.NLM_F_MULTI, seq=seq)

    def _dest(self, dest: Dest, seq: int) -> bytes:
        payload = wire.nla(wire.CMD_ATTR_DEST, replies.encode_dest(dest))
        return wire.message(self.family, wire.CMD_NEW_DEST, payload, flags=wire.NLM_F_MULTI, seq=seq)

    def _dest_messages(self, snap: Snapshot) -> list[bytes]:
        """Every dest message of the snapshot at once: one encoded message as the template, every
        dest's values written into copies of it through the decoder's own numpy layout."""
        table = snap.table
        d = table.dests
        if not len(d):
            return [b""] * len(table.services)
        first = table.dests.rows(0, 1)[0]
        template = self._dest(first, 0)
        size = len(template)
        columns = wire.dest_columns(template + replies.done(0), self.family)
        assert columns is not None and columns.size == size
        buf = bytearray(template * len(d))
        out = np.frombuffer(buf, columns.dtype)  # a view: the headers between the values stay
        for name in ("addr", "port", "fwd", "weight", "tun_type", "tun_port", "tun_flags", "u_threshold"):
            out[name] = getattr(d, name)
        out["l_threshold"], out["active"], out["inactive"], out["family"] = (
            d.l_threshold,
            d.active,
            d.inactive,
            d.family,
        )
        out["persist"] = np.maximum(d.persist, 0)
        for k in range(5):  # the 64-bit stats, which lvstop reads; the 32-bit ones keep the template's
            out[f"s{k}"] = d.counters[:, k]
            out[f"s{k + 5}"] = d.rates[:, k]
        raw = bytes(buf)
        starts = (table.starts * size).tolist()
        return [raw[a:b] for a, b in itertools.pairwise(starts)]


def _dest_datagrams(messages: bytes, seq: int) -> list[bytes]:
    """A dest dump of `messages` (all of one size) in datagrams of at most DATAGRAM bytes, with `seq`."""
    if not messages:
        return [replies.done(seq)]
    size = struct.unpack_from("=I", messages)[0]
    words = np.frombuffer(messages, "<u4").reshape(-1, size // 4).copy()
    words[:, 2] = seq
    raw = words.tobytes()
    step = DATAGRAM // size * size
    return [*(raw[i : i + step] for i in range(0, len(raw), step)), replies.done(seq)]


def serve(kernel: Kernel, listener: socket.socket) -> None:
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_session, args=(kernel, conn), daemon=True).start()


def _session(kernel: Kernel, conn: socket.socket) -> None:
    with conn:
        while True:
            try:
                request = conn.recv(1 << 16)
            except OSError:
                return
            if not request:
                return
            for gram in kernel.answer(request):
                conn.sendall(gram)


def write_proc(kernel: Kernel, proc: Path) -> None:
    """DIR/proc: sysctls once, ip_vs_stats every tick, ip_vs_conn_sync printed on every open."""
    vs = proc / "sys" / "net" / "ipv4" / "vs"
    vs.mkdir(parents=True, exist_ok=True)
    for name, value in kernel.snapshot(fresh=False).sysctls.items():
        (vs / name).write_text(f"{value}\n")
    net = proc / "net"
    net.mkdir(exist_ok=True)
    fifo = net / "ip_vs_conn_sync"
    if not fifo.exists():
        os.mkfifo(fifo)
    _write_stats(kernel, net)  # there before the first read, as in /proc
    threading.Thread(target=_stats_loop, args=(kernel, net), daemon=True).start()
    threading.Thread(target=_conn_loop, args=(kernel, fifo), daemon=True).start()


def _stats_loop(kernel: Kernel, net: Path) -> None:
    while True:
        time.sleep(kernel.tick)
        _write_stats(kernel, net)


def _write_stats(kernel: Kernel, net: Path) -> None:
    snap = kernel.snapshot(fresh=False)
    c, r = snap.totals, snap.total_rates or Rates(0, 0, 0, 0, 0)  # the first tick has no rates yet
    if c is None:
        return
    rows = (
        "   Total Incoming Outgoing         Incoming         Outgoing\n"
        "   Conns  Packets  Packets            Bytes            Bytes\n"
        f"{c.conns:8X} {c.inpkts:8X} {c.outpkts:8X} {c.inbytes:16X} {c.outbytes:16X}\n\n"
        " Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n"
        + "{:8X} {:8X} {:8X} {:16X} {:16X}\n".format(
            *(int(v) for v in (r.cps, r.inpps, r.outpps, r.inbps, r.outbps))
        )
    )
    tmp = net / ".ip_vs_stats"
    tmp.write_text(rows)
    tmp.replace(net / "ip_vs_stats")


def _conn_loop(kernel: Kernel, fifo: Path) -> None:
    while True:
        with open(fifo, "w") as out:  # blocks until a reader opens it, as a /proc read starts the print
            try:
                for line in kernel.sim.conn_lines(sync=True):
                    out.write(line)
            except BrokenPipeError:
                pass  # the reader's budget ran out: it closed the file


class _Socket(_ClientSocket):
    """A connected SOCK_SEQPACKET socket (one datagram per send and receive) with NetlinkSource's own
    kernel socket behaviour (KernelSocket: its timeout is SO_RCVTIMEO, no poll before each call)."""

    def __init__(self, path: str) -> None:
        super().__init__(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.connect(path)

    def sendto(self, data: bytes, address: tuple[int, int], /) -> int:  # type: ignore[override]
        return self.send(data)


def connect(directory: str | os.PathLike[str]) -> Callable[[], _Socket]:
    """A NetlinkSource socket_factory that talks to the stand-in kernel serving `directory`."""
    path = os.fspath(Path(directory) / "genl")
    return lambda: _Socket(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", type=Path)
    p.add_argument("--services", type=int, default=500)
    p.add_argument("--dests", type=int, default=10)
    p.add_argument("--tick", type=float, default=2.0, help="seconds between the director's ticks")
    args = p.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    kernel = Kernel(args.services, args.dests, args.tick)
    write_proc(kernel, args.dir / "proc")
    path = args.dir / "genl"
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(os.fspath(path))
    listener.listen(8)
    print("ready", flush=True)
    serve(kernel, listener)


if __name__ == "__main__":
    main()
