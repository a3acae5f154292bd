"""NetlinkSource: the IPVS state over generic netlink (what ipvsadm reads), decoded by sources.wire.

Thin I/O: send a request, read the raw reply bytes, hand them to the pure decoders in wire.py. A full
read is GET_INFO, GET_CONFIG, GET_DAEMON, the service dump and one dest dump per service, plus the
totals of /proc/net/ip_vs_stats and the sysctls of /proc/sys/net/ipv4/vs (parsed by sources.procfs).

Every IPVS command, reads included, needs CAP_NET_ADMIN; the kernel's EPERM becomes a SourceError
NO_PERMISSION naming it, so the caller can fall back to /proc. lvstop never loads ip_vs: a kernel
without the "IPVS" generic netlink family gives SourceError NO_IPVS.

Network namespaces (--netns NAME under /var/run/netns, or a path such as /proc/PID/ns/net): IPVS
state, /proc/net/ip_vs* and /proc/sys/net are all per namespace, and each follows the namespace of
the thread that opens the socket or the file. setns(2) moves only the calling thread, so one helper
thread enters the namespace (with pyroute2's setns) and opens everything there: the netlink socket
and the /proc files (through /proc/thread-self/net, since /proc/self/net would show the main
thread's namespace). A socket or file keeps its namespace, so it is then read from any thread.
pyroute2's own GenericNetlinkSocket is not used: in 0.9 it wraps the fd in an asyncio transport with
one socket per calling thread, so a poller thread would silently get a fresh socket in its own
namespace; pyroute2 is used only to enter a namespace (the nlctrl family list is sources/genl.py).
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import mmap
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from lvstop import gcpolicy
from lvstop.errors import ParseError, SourceError
from lvstop.model import (
    Counters,
    Daemon,
    Dest,
    DestKey,
    DestTable,
    Issue,
    IssueKind,
    Rates,
    Service,
    ServiceKey,
    ServiceRows,
    Snapshot,
    Table,
    Timeouts,
)
from lvstop.sources import genl, wire
from lvstop.sources.netns import enter_netns, netns_path
from lvstop.sources.netns import os_error_kind as _os_kind
from lvstop.sources.procfs import (
    ProcSource,
    estimator_issues,
    parse_cpulist,
    parse_ip_vs_stats,
    parse_sysctls,
    read_est_cpulist,
)

if TYPE_CHECKING:
    from concurrent.futures import Future

NETLINK_GENERIC = 16
VANISHED = "vanished during the read"
CHANGED = "changed during the read"
_MSG_TRUNC = int(socket.MSG_TRUNC)  # a plain int: the IntFlag's & costs a microsecond per datagram
_RECV_SIZE = 1 << 16  # dump replies come in datagrams of at most ~32 KiB
# receive buffer kept resident between reads: up to ~10k dests, a read is not slowed by page faults
# (1.2 ms of a 17 ms poll at 10k); a bigger table's buffer (36 MB at 100k) is given back after each read
_RESIDENT = 4 << 20
_T = TypeVar("_T")


class NetlinkSocket(Protocol):
    """What NetlinkSource needs of a socket (tests pass a fake that replays recorded replies)."""

    def sendto(self, data: bytes, address: tuple[int, int], /) -> int: ...

    def recvmsg_into(self, buffers: list[memoryview], /) -> tuple[int, list[Any], int, Any]: ...

    def settimeout(self, value: float | None, /) -> None: ...

    def close(self) -> None: ...


class KernelSocket(socket.socket):
    """A socket whose timeout is the kernel's (SO_RCVTIMEO, SO_SNDTIMEO) on a blocking socket: Python's
    own timeout polls before every send and receive, 6,000 more syscalls a poll at 2,000 services.
    A receive that times out raises BlockingIOError (EAGAIN) instead of TimeoutError."""

    def settimeout(self, value: float | None, /) -> None:
        super().settimeout(None)
        seconds = 0.0 if value is None else max(value, 1e-6)  # 0 means no timeout to the kernel
        timeval = struct.pack("@ll", int(seconds), int(seconds % 1 * 1e6))
        self.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        self.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


def open_generic_socket() -> NetlinkSocket:
    return KernelSocket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_GENERIC)


class _Namespace:
    """A thread living in another network namespace that runs calls there (see the module doc)."""

    def __init__(self, path: str) -> None:
        # imported here: concurrent.futures brings logging, and `lvstop list` without --netns needs neither
        from concurrent.futures import Future
        from queue import SimpleQueue

        self.path = path
        self._future = Future
        self._calls: SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = SimpleQueue()
        entered: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(entered,), name="lvstop-netns", daemon=True)
        self._thread.start()
        entered.result()

    def _run(self, entered: Future[None]) -> None:
        try:
            self._enter()
        except BaseException as e:
            entered.set_exception(e)
            return
        entered.set_result(None)
        while (item := self._calls.get()) is not None:
            fn, result = item
            try:
                result.set_result(fn())
            except BaseException as e:
                result.set_exception(e)

    def _enter(self) -> None:
        enter_netns(self.path)

    def call(self, fn: Callable[[], _T]) -> _T:
        result: Future[_T] = self._future()
        self._calls.put((fn, result))
        return result.result()

    def close(self) -> None:
        self._calls.put(None)


class NetlinkSource:
    """Reads IPVS over generic netlink; also the write primitives control.py uses (get/set_dest)."""

    name = "netlink"

    def __init__(
        self,
        netns: str | None = None,
        proc_root: str = "/proc",
        *,
        timeout: float = 5.0,
        socket_factory: Callable[[], NetlinkSocket] = open_generic_socket,
    ) -> None:
        self.netns = netns
        self.proc_root = proc_root
        self._timeout = timeout
        self._socket_factory = socket_factory
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._sock: NetlinkSocket | None = None
        self._family = 0
        # the GET_DEST request of each service of the last read, of the family id of the socket
        self._dest_requests: tuple[list[ServiceKey], list[bytes]] = ([], [])
        self._keys: list[ServiceKey] = []  # the services of the last read, each once
        self._rx = _Receiver()
        self._ns = _Namespace(netns_path(netns)) if netns is not None else None
        # /proc/net follows the opening thread's namespace only through thread-self
        self._net_root = os.path.join(proc_root, "thread-self") if netns is not None else proc_root
        self._proc: ProcSource | None = None
        self._sysctl_files = _SysctlFiles(os.path.join(proc_root, "sys", "net", "ipv4", "vs"))
        try:
            with self._lock:
                self._connect()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ plumbing

    def _in_ns(self, fn: Callable[[], _T]) -> _T:
        return fn() if self._ns is None else self._ns.call(fn)

    def _connect(self) -> NetlinkSocket:
        if self._sock is None:
            sock = self._in_ns(self._socket_factory)
            try:
                sock.settimeout(self._timeout)
                self._sock = sock
                self._family = self._resolve_family()
            except BaseException:
                self._drop()
                raise
        return self._sock

    def _drop(self) -> None:
        """Forget the socket (after a timeout or garbled reply it may be out of step)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._dest_requests = ([], [])

    def _resolve_family(self) -> int:
        """The IPVS family id, from the list of registered generic netlink families.

        Not a lookup by name: for a name it does not know, the kernel runs
        `modprobe net-pf-16-proto-16-family-IPVS`, which loads ip_vs (seen on 6.1). Listing the
        families loads nothing.
        """
        seq = next(self._seq)
        what = "netlink list of generic families"
        data = self._reply(genl.families_request(seq), seq, what)
        try:
            family = genl.family_id(data, wire.IPVS_GENL_NAME, what)
        except ParseError as e:
            raise SourceError(IssueKind.MALFORMED, str(e)) from None
        if family is not None:
            return family
        raise SourceError(
            IssueKind.NO_IPVS,
            "ip_vs is not loaded: the kernel has no IPVS netlink family (lvstop never loads it)",
        )

    def _transact(self, request: bytes, seq: int, what: str | _What) -> tuple[wire.Span, int]:
        """Send one request and receive its whole reply into the receiver, from its position on: the
        reply's span there and how many datagrams carried its messages. A clean NLMSG_DONE alone in the
        last datagram (as the kernel ends a dump) is left out of the span and not counted."""
        sock = self._sock
        if sock is None:
            raise SourceError(IssueKind.IO, f"{what}: no netlink socket")
        rx = self._rx
        start = rx.pos
        chunks = 0
        try:
            sock.sendto(request, (0, 0))
            while True:
                room = rx.room()
                n, _anc, flags, _addr = sock.recvmsg_into([room])
                if flags & _MSG_TRUNC:
                    raise ParseError("reply larger than the receive buffer", source=str(what))
                data = room[:n]
                first_seq, ends = wire.scan_chunk(data, what)
                if first_seq != seq:
                    continue  # the rest of an earlier, abandoned request: overwritten by the next datagram
                if ends and wire.is_clean_done(data):
                    return (start, rx.pos, True), chunks
                rx.pos += n
                chunks += 1
                if ends:
                    return (start, rx.pos, False), chunks
        except (TimeoutError, BlockingIOError):  # BlockingIOError: a KernelSocket's timeout
            rx.pos = start
            self._drop()
            raise SourceError(
                IssueKind.IO, f"{what}: no reply from the kernel within {self._timeout} s"
            ) from None
        except ParseError as e:
            rx.pos = start
            self._drop()
            raise SourceError(IssueKind.MALFORMED, str(e)) from None
        except OSError as e:
            rx.pos = start
            self._drop()
            raise SourceError(_os_kind(e), f"{what}: {e.strerror or e}") from None

    def _reply(self, request: bytes, seq: int, what: str) -> bytes:
        """A whole reply as bytes, its NLMSG_DONE included (requests other than the dest dumps)."""
        (start, end, ended), _ = self._transact(request, seq, what)
        self._rx.pos = start
        return bytes(self._rx.view[start:end]) + (wire.CLEAN_DONE if ended else b"")

    def _request(self, build: Callable[[int, int], bytes], what: str) -> bytes:
        self._connect()
        seq = next(self._seq)
        return self._reply(build(self._family, seq), seq, what)

    def _requests_for(self, keys: list[ServiceKey]) -> list[bytes]:
        """The GET_DEST request of each service, built once per socket and kept while the service is;
        by position when the services are those of the last read (the usual poll: no key hashed)."""
        self._connect()
        known_keys, known = self._dest_requests
        if keys != known_keys:  # equal lists of the same key objects compare by identity (wire caches keys)
            by_key = dict(zip(known_keys, known, strict=True))
            known = [by_key.get(k) or wire.get_dests_request(self._family, 0, k) for k in keys]
            self._dest_requests = (keys, known)
        return known

    def _dest_dump(self, request: bytes, key: ServiceKey) -> tuple[wire.Span, int]:
        seq = next(self._seq)
        return self._transact(wire.with_seq(request, seq), seq, _What(key))

    # ------------------------------------------------------------------ reads

    def read(self) -> Snapshot:
        wall, mono = time.time(), time.monotonic()
        issues: list[Issue] = []
        with self._lock, gcpolicy.paused():  # three objects per dest and no cycles (lvstop.gcpolicy)
            version, tab_size = self._info()
            timeouts = self._partial(issues, self._timeouts)
            daemons = self._partial(issues, self._daemons) or ()
            try:
                services, dests = self._with_dests(self._unique_services(issues), issues)
                services = self._recheck(services, issues)
            finally:
                self._rx.release()
        totals, total_rates = self._totals(issues)
        sysctls, est_cpulist = self._sysctl_files.read(issues, self._in_ns)
        issues += estimator_issues(sysctls, est_cpulist)
        return Snapshot(
            source=self.name,
            director=socket.gethostname(),
            wall_time=wall,
            mono_time=mono,
            services=ServiceRows(Table.build(services, dests)),
            version=version,
            conn_tab_size=tab_size,
            totals=totals,
            total_rates=total_rates,
            daemons=daemons,
            timeouts=timeouts,
            sysctls=MappingProxyType(sysctls),
            issues=tuple(issues),
            poll_duration=time.monotonic() - mono,
            est_cpulist=est_cpulist,
        )

    def _info(self) -> tuple[str, int]:
        what = "netlink GET_INFO"
        try:
            data = self._request(wire.get_info_request, what)
            return wire.decode_info(data, self._family)
        except wire.NetlinkError as e:
            if e.errno == errno.ENOENT:  # the family went away: ip_vs was unloaded
                self._drop()
                raise SourceError(
                    IssueKind.NO_IPVS, "ip_vs is not loaded any more (IPVS netlink family gone)"
                ) from None
            raise
        except ParseError as e:
            raise SourceError(IssueKind.MALFORMED, str(e)) from None

    def _timeouts(self) -> Timeouts:
        data = self._request(wire.get_config_request, "netlink GET_CONFIG")
        return wire.decode_config(data, self._family)

    def _daemons(self) -> tuple[Daemon, ...]:
        data = self._request(wire.get_daemons_request, "netlink GET_DAEMON")
        return tuple(wire.decode_daemons(data, self._family))

    @staticmethod
    def _partial(issues: list[Issue], fn: Callable[[], _T]) -> _T | None:
        """A part of the read that may fail alone: its error becomes an issue."""
        try:
            return fn()
        except wire.NetlinkError as e:
            issues.append(Issue(e.kind, str(e)))
        except ParseError as e:
            issues.append(Issue(IssueKind.MALFORMED, str(e)))
        return None

    def _services(self) -> list[Service]:
        data = self._request(wire.get_services_request, "netlink GET_SERVICE dump")
        try:
            return wire.decode_services(data, self._family)
        except ParseError as e:
            raise SourceError(IssueKind.MALFORMED, str(e)) from None

    def _unique_services(self, issues: list[Issue]) -> list[Service]:
        services = self._services()
        keys = [s.key for s in services]
        if keys == self._keys:  # the services of the last read (compared by identity): none repeated
            return services
        services, dropped = _unique(services, keys)
        self._keys = [s.key for s in services]
        if dropped:
            issues.append(
                Issue(
                    IssueKind.INCONSISTENT,
                    f"service dump changed while read: {dropped} duplicate services dropped",
                )
            )
        return services

    def _with_dests(self, services: list[Service], issues: list[Issue]) -> tuple[list[Service], DestTable]:
        """One GET_DEST dump per service (IPVS has no dump of all dests), decoded together into one
        table. A service whose dests could not be read whole gets its error and an issue."""
        services = list(services)
        replies: list[wire.Span] = []  # in the receiver, back to back
        read: list[int] = []  # the service of each reply
        spanning: list[int] = []  # replies of more than one datagram
        problems: dict[int, list[Issue]] = {}
        keys = [s.key for s in services]
        requests = self._requests_for(keys)
        sock = self._sock
        for i, svc in enumerate(services):
            if self._sock is not sock:  # reconnected after a garbled reply, maybe with another family id
                requests = self._requests_for(keys)
                sock = self._sock
            try:
                span, chunks = self._dest_dump(requests[i], svc.key)
            except SourceError as e:
                if e.kind is not IssueKind.MALFORMED:
                    raise  # no reply at all: the whole read fails
                # a garbled datagram: the next request reconnects
                problems[i] = [Issue(e.kind, str(e), svc.key)]
                services[i] = dataclasses.replace(svc, error=f"malformed reply: {e}")
                continue
            if chunks > 1:
                spanning.append(len(replies))
            read.append(i)
            replies.append(span)
        table, errors = wire.decode_dest_table(
            self._rx.view, replies, self._family, [services[i].key.family for i in read]
        )
        self._rx.pos = 0
        table.service[:] = np.array(read, np.intp)[table.service]
        for r, err in errors.items():
            i = read[r]
            svc, out = services[i], problems.setdefault(i, [])
            if isinstance(err, wire.NetlinkError) and err.kind is IssueKind.INCONSISTENT:
                services[i] = self._vanished(svc, out)
            elif isinstance(err, SourceError):
                out.append(Issue(err.kind, str(err), svc.key))
                services[i] = dataclasses.replace(svc, error=str(err))
            else:
                out.append(Issue(IssueKind.MALFORMED, str(err), svc.key))
                reason = err.reason if isinstance(err, ParseError) else str(err)
                services[i] = dataclasses.replace(svc, error=f"malformed reply: {reason}")
        # A dump spanning datagrams resumes by position: a service re-created meanwhile repeats dests.
        # Within one datagram the kernel holds its lock, so only those dumps are checked.
        repeated = np.zeros(len(table), bool)
        starts = np.searchsorted(table.service, [read[r] for r in spanning] + [read[r] + 1 for r in spanning])
        for at, r in enumerate(spanning):
            i = read[r]
            rows = np.arange(starts[at], starts[at + len(spanning)])
            seen: set[tuple[int, bytes, int]] = set()
            for row, k in zip(rows.tolist(), _dest_ids(table, rows), strict=True):
                repeated[row] = k in seen
                seen.add(k)
            dropped = int(repeated[rows].sum())
            if dropped:
                svc = services[i]
                msg = f"{svc.key} {CHANGED}: {dropped} duplicate dests dropped"
                problems.setdefault(i, []).append(Issue(IssueKind.INCONSISTENT, msg, svc.key))
                services[i] = dataclasses.replace(svc, error=CHANGED)
        if repeated.any():
            table = table.take(np.flatnonzero(~repeated))
        issues += [x for i in sorted(problems) for x in problems[i]]
        return services, table

    def _recheck(self, services: list[Service], issues: list[Issue]) -> list[Service]:
        """Mark the services that are gone by the end of the read.

        The kernel answers a dest dump of a missing service with an empty dump, and a dump that
        spans several datagrams just stops early if the service is deleted meanwhile: neither is an
        error. One more service dump tells which services vanished while their dests were read.
        """
        data = self._request(wire.get_services_request, "netlink GET_SERVICE dump")
        try:
            keys = wire.decode_service_keys(data, self._family)
        except ParseError as e:
            raise SourceError(IssueKind.MALFORMED, str(e)) from None
        if keys == self._keys:  # none went away (the usual poll: compared by identity)
            return services
        still = set(keys)
        return [s if s.key in still or s.error else self._vanished(s, issues) for s in services]

    @staticmethod
    def _vanished(svc: Service, issues: list[Issue]) -> Service:
        issues.append(
            Issue(
                IssueKind.INCONSISTENT, f"{svc.key} {VANISHED} (deleted while its dests were read)", svc.key
            )
        )
        return dataclasses.replace(svc, error=VANISHED)

    # ------------------------------------------------------------------ /proc parts

    def _totals(self, issues: list[Issue]) -> tuple[Counters | None, Rates | None]:
        path = os.path.join(self._net_root, "net", "ip_vs_stats")
        try:
            return parse_ip_vs_stats(self._in_ns(lambda: _read_text(path)), source=path)
        except OSError as e:
            issues.append(Issue(_os_kind(e), f"{path}: {e.strerror or e}"))
        except ParseError as e:
            issues.append(Issue(IssueKind.MALFORMED, str(e)))
        return None, None

    def conn_lines(self, sync: bool = False) -> Iterator[str]:
        """ip_vs_conn(_sync) of this source's namespace, streamed (the file is opened there)."""
        if self._proc is None:
            self._proc = ProcSource(root=self._net_root, sys_root=os.path.join(self.proc_root, "sys"))
        proc = self._proc
        return self._in_ns(lambda: proc.conn_lines(sync))

    # ------------------------------------------------------------------ writes (control.py only)

    def get_dest(self, skey: ServiceKey, dkey: DestKey) -> Dest | None:
        """A fresh read of one dest; None when it or its service does not exist."""
        what = f"netlink GET_DEST of {skey}"
        with self._lock:
            try:
                data = self._request(lambda fam, seq: wire.get_dests_request(fam, seq, skey), what)
                dests = wire.decode_dests(data, self._family, skey.family)
            except wire.NetlinkError as e:
                if e.kind is IssueKind.INCONSISTENT:
                    return None
                raise
            except ParseError as e:
                raise SourceError(IssueKind.MALFORMED, str(e)) from None
        return next((d for d in dests if d.key == dkey), None)

    def set_dest(self, skey: ServiceKey, dest: Dest) -> None:
        """IPVS_CMD_SET_DEST with the whole dest (never NEW_DEST: a missing dest stays missing)."""
        what = f"netlink SET_DEST of {dest.key} in {skey}"
        with self._lock:
            data = self._request(lambda fam, seq: wire.set_dest_request(fam, seq, skey, dest), what)
            try:
                wire.ack(data, what)
            except ParseError as e:
                raise SourceError(IssueKind.MALFORMED, str(e)) from None

    def close(self) -> None:
        with self._lock:
            self._drop()
            self._sysctl_files.close()
        if self._ns is not None:
            self._ns.close()
            self._ns = None


class _Receiver:
    """Replies received back to back into one anonymous mapping (recvmsg_into): the dest dumps of a poll
    (36 MB at 100k dests) land where decode_dest_table reads them, with no bytes object per datagram
    and no join. Its pages are given back after each read (no 36 MB resident between polls)."""

    def __init__(self) -> None:
        self._map = _anonymous(_RECV_SIZE)
        self.view = memoryview(self._map)
        self.pos = 0  # where the next datagram goes

    def room(self) -> memoryview:
        """Space for the largest datagram at pos (the mapping doubles when short: every span stays)."""
        if len(self.view) - self.pos < _RECV_SIZE:
            bigger = _anonymous(2 * len(self.view))
            bigger[: self.pos] = self.view[: self.pos]
            self._map, self.view = bigger, memoryview(bigger)  # the old one goes when its views do
        return self.view[self.pos : self.pos + _RECV_SIZE]

    def release(self) -> None:
        """Pages beyond the first _RESIDENT bytes go back (they read as zeros, faulted in when used)."""
        self.pos = 0
        if len(self._map) > _RESIDENT:
            self._map.madvise(mmap.MADV_DONTNEED, _RESIDENT, len(self._map) - _RESIDENT)


def _anonymous(size: int) -> mmap.mmap:
    # private: MADV_DONTNEED frees its pages (a shared mapping's would stay in shmem)
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


class _SysctlFiles:
    """The net.ipv4.vs sysctls, each file opened once and read again in place: a read at offset 0 makes
    /proc/sys print the value as it is now, so a change shows at the next poll as before, without the
    listing, opens and closes of ~27 files every poll (0.4 ms of a 1k-dest poll's 3 ms). While a file
    fails to open or read (ip_vs unloaded: its entries are gone) every read lists and opens them again."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._fds: dict[str, int] = {}  # by name, sorted
        self._unreadable: dict[str, Exception] = {}  # names that would not open or read, at the last listing

    def read(
        self, issues: list[Issue], in_ns: Callable[[Callable[[], Any]], Any]
    ) -> tuple[dict[str, int], str | None]:
        """(sysctls as procfs.read_sysctls gives them, est_cpulist as procfs.read_est_cpulist does)."""
        texts = self._texts() if self._fds and not self._unreadable else None
        if texts is None or self._unreadable:
            try:
                in_ns(self._open)  # /proc/sys/net is the opening thread's namespace
            except OSError as e:
                issues.append(Issue(_os_kind(e), f"cannot list {self.directory}: {e.strerror or e}"))
                return {}, in_ns(lambda: read_est_cpulist(self.directory, issues))
            texts = self._texts()
        return parse_sysctls(texts), self._est_cpulist(texts, issues)

    def _open(self) -> None:
        self.close()
        for name in sorted(os.listdir(self.directory)):
            try:
                self._fds[name] = os.open(os.path.join(self.directory, name), os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                self._unreadable[name] = e  # write-only or vanished entries say nothing about traffic

    def _texts(self) -> dict[str, str]:
        """Every open file's text; a file that fails to read is left out and noted in _unreadable."""
        texts: dict[str, str] = {}
        for name, fd in self._fds.items():
            try:
                texts[name] = os.pread(fd, 4096, 0).decode("ascii")
            except (OSError, UnicodeDecodeError) as e:
                self._unreadable[name] = e
        return texts

    def _est_cpulist(self, texts: dict[str, str], issues: list[Issue]) -> str | None:
        path = os.path.join(self.directory, "est_cpulist")
        text = texts.get("est_cpulist")
        if text is not None:
            try:
                return parse_cpulist(text, source=path)
            except ParseError as e:
                issues.append(Issue(IssueKind.MALFORMED, str(e)))
                return None
        failed = self._unreadable.get("est_cpulist")
        if failed is not None and not isinstance(failed, FileNotFoundError):  # none before 6.2
            issues.append(Issue(IssueKind.IO, f"{path}: {getattr(failed, 'strerror', None) or failed}"))
        return None

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
        self._unreadable = {}


class _What:
    """The name of a service's GET_DEST for messages, made only when one is (a poll sends hundreds)."""

    __slots__ = ("key",)

    def __init__(self, key: ServiceKey) -> None:
        self.key = key

    def __str__(self) -> str:
        return f"netlink GET_DEST of {self.key}"


def _read_text(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read()


def _dest_ids(table: DestTable, rows: np.ndarray) -> list[tuple[int, bytes, int]]:
    return list(
        zip(table.family[rows].tolist(), table.addr[rows].tolist(), table.port[rows].tolist(), strict=True)
    )


def _unique(items: list[_T], keys: Sequence[Hashable]) -> tuple[list[_T], int]:
    """First occurrence of each key, in order, and how many repeats were dropped (only churn repeats)."""
    if len(set(keys)) == len(keys):
        return items, 0
    seen: set[Hashable] = set()
    out: list[_T] = []
    for x, k in zip(items, keys, strict=True):
        if k not in seen:
            seen.add(k)
            out.append(x)
    return out, len(items) - len(out)
