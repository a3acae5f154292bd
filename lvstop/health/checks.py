"""One probe of one dest, per check type, as asyncio coroutines that never raise: `probe(spec, target)`.

Probes go to the dest's own address (a DR or tunnel real server is reached on its real address, never
the VIP) and port, or to the check's `port:`; `source:` binds the local end first. Whatever happens
(refused, reset, timed out, a bad answer) ends as a ProbeResult with a one-line reason.

Pure parts (the HTTP status line, the DNS messages, the agent's reply) are plain functions below the
probes so that tests feed them bytes.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import os
import random
import re
import select
import signal
import socket
import ssl
import struct
import time
from _socket import socket as _BareSocket  # socket.socket without its Python layer: ~5 us less a probe
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import TypeVar

from lvstop.health.config import CheckSpec
from lvstop.health.state import ProbeResult
from lvstop.model import AF_INET6, DestKey, FwdMethod, Protocol, ServiceKey

BODY_LIMIT = 64 * 1024  # what an http check reads of a body to match it
HEADER_LIMIT = 16 * 1024
AGENT_LIMIT = 1024
_S = TypeVar("_S", bound=_BareSocket)
_LINGER_RST = struct.pack("ii", 1, 0)  # close with RST, as HAProxy's checks do: no TIME_WAIT per probe


@dataclass(frozen=True, slots=True)
class Target:
    """A dest as one check probes it."""

    service: ServiceKey
    dest: DestKey
    fwd: FwdMethod
    weight: int
    port: int  # the port probed: the check's `port:` or the dest's

    @property
    def address(self) -> str:
        return self.dest.address

    @property
    def sockaddr(self) -> tuple[str, int]:
        return (self.dest.address, self.port)


Prober = Callable[[CheckSpec, Target], Awaitable[ProbeResult]]
Done = Callable[[ProbeResult], None]
Starter = Callable[[CheckSpec, Target, Done], None]


class Probes:
    """Starts probes in the running loop: `start(spec, target, done)` calls `done(result)` once, later.

    tcp checks, the many cheap ones, share one epoll of their own that the loop watches as a single
    reader: per probe a socket, a connect, a register and a close (which also leaves the epoll), with
    no task, future, handle or timer, and SO_ERROR asked only of a connect that failed
    (bench/bench_health.py). Their timeouts are swept every SWEEP seconds, so one fires up to SWEEP
    late. The other types run `probe` as a task.
    """

    SWEEP = 0.05

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._epoll: select.epoll | None = None
        self._pending: dict[int, tuple[_BareSocket, float, float, CheckSpec, Done]] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def start(self, spec: CheckSpec, target: Target, done: Done) -> None:
        if spec.type != "tcp":
            task = self._loop.create_task(probe(spec, target))
            task.add_done_callback(lambda t: done(t.result()))
            return
        started = time.monotonic()
        try:
            sock = _socket(spec, target, socket.SOCK_STREAM, _BareSocket)
        except OSError as e:
            done(ProbeResult(False, 0.0, (e.strerror or str(e)).lower()))
            return
        err = sock.connect_ex(target.sockaddr)
        if err != errno.EINPROGRESS:  # loopback may answer at once, either way
            _close_rst(sock)
            done(_connect_result(err, time.monotonic() - started))
            return
        if self._epoll is None:
            self._epoll = select.epoll()
            self._loop.add_reader(self._epoll.fileno(), self._ready)
        fd = sock.fileno()
        self._epoll.register(fd, select.EPOLLOUT)
        self._pending[fd] = (sock, started, started + spec.timeout, spec, done)
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(self.SWEEP, self._sweep)

    async def run(self, spec: CheckSpec, target: Target) -> ProbeResult:
        """One probe as a coroutine."""
        answer: asyncio.Future[ProbeResult] = self._loop.create_future()
        self.start(spec, target, answer.set_result)
        return await answer

    def _ready(self) -> None:
        assert self._epoll is not None
        pending = self._pending
        now = time.monotonic()  # one clock read for the batch: they all answered before this poll
        for fd, events in self._epoll.poll(0):
            sock, started, _, _, done = pending.pop(fd)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if events & _FAILED else 0
            _close_rst(sock)
            done(_connect_result(err, now - started))

    def _sweep(self) -> None:
        self._sweeper = None
        now = time.monotonic()
        pending = self._pending
        for fd in [fd for fd, c in pending.items() if c[2] <= now]:
            sock, started, _, spec, done = pending.pop(fd)
            _close_rst(sock)
            done(ProbeResult(False, now - started, _timed_out(spec)))
        if pending:
            self._sweeper = self._loop.call_later(self.SWEEP, self._sweep)

    def close(self) -> None:
        """Drops the probes under way (their `done` is not called)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for c in self._pending.values():
            _close_rst(c[0])
        self._pending.clear()
        if self._epoll is not None:
            self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None


_FAILED = select.EPOLLERR | select.EPOLLHUP


async def probe(spec: CheckSpec, target: Target) -> ProbeResult:
    """Runs `spec` once against `target` within its timeout."""
    if spec.type == "tcp":
        probes = Probes()
        try:
            return await probes.run(spec, target)
        finally:
            probes.close()
    started = time.monotonic()
    try:
        async with asyncio.timeout(spec.timeout):
            ok, reason, weight, percent = await _PROBES[spec.type](spec, target)
    except TimeoutError:
        ok, reason, weight, percent = False, _timed_out(spec), None, None
    except ssl.SSLError as e:
        ok, reason, weight, percent = False, f"TLS: {e.reason or e}", None, None
    except (ConnectionResetError, BrokenPipeError):
        ok, reason, weight, percent = False, "connection reset", None, None
    except asyncio.IncompleteReadError:
        ok, reason, weight, percent = False, "connection closed early", None, None
    except OSError as e:
        ok, reason, weight, percent = False, (e.strerror or str(e)).lower(), None, None
    except _Bad as e:
        ok, reason, weight, percent = False, str(e), None, None
    return ProbeResult(ok, time.monotonic() - started, reason, weight, percent)


def _timed_out(spec: CheckSpec) -> str:
    return f"timed out after {spec.timeout:g} s"


class _Bad(Exception):
    """An answer that came but is wrong; its message is the reason."""


_Outcome = tuple[bool, str, int | None, int | None]


def _socket(spec: CheckSpec, target: Target, kind: int, make: Callable[[int, int], _S]) -> _S:
    family = socket.AF_INET6 if target.dest.family == AF_INET6 else socket.AF_INET
    sock = make(family, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        if spec.source is not None:
            sock.bind((spec.source, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def _close_rst(sock: _BareSocket) -> None:
    try:  # noqa: SIM105 (suppress() costs a context manager per probe)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    except OSError:
        pass
    sock.close()


async def _connected(spec: CheckSpec, target: Target) -> socket.socket:
    sock = _socket(spec, target, socket.SOCK_STREAM, socket.socket)
    try:
        await asyncio.get_running_loop().sock_connect(sock, target.sockaddr)
    except BaseException:
        _close_rst(sock)
        raise
    return sock


# --- tcp ----------------------------------------------------------------------------------------


def _connect_result(err: int, latency: float) -> ProbeResult:
    return ProbeResult(True, latency, "connected") if not err else ProbeResult(False, latency, _reason(err))


@functools.cache
def _reason(err: int) -> str:
    return os.strerror(err).lower()


# --- http / https -------------------------------------------------------------------------------


def tls_context(spec: CheckSpec) -> ssl.SSLContext:
    if not spec.tls_verify:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=spec.tls_ca)


def http_request(spec: CheckSpec, target: Target) -> bytes:
    host = (
        spec.host
        or (f"[{target.address}]" if target.dest.family == AF_INET6 else target.address) + f":{target.port}"
    )
    return (
        f"{spec.method} {spec.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lvstop-health\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")


def parse_status_line(line: bytes) -> int:
    m = re.match(rb"HTTP/1\.[01] (\d{3})(?: |\r?\n|$)", line)
    if m is None:
        raise _Bad(f"not an HTTP answer: {line[:40].decode('latin-1').strip()!r}")
    return int(m.group(1))


async def _http(spec: CheckSpec, target: Target) -> _Outcome:
    sock = await _connected(spec, target)
    tls = None
    if spec.type == "https":
        tls = tls_context(spec)
    try:
        reader, writer = await asyncio.open_connection(
            sock=sock,
            ssl=tls,
            server_hostname=(spec.host or target.address) if tls is not None else None,
            limit=HEADER_LIMIT,
        )
    except BaseException:
        _close_rst(sock)
        raise
    try:
        writer.write(http_request(spec, target))
        status = parse_status_line(await reader.readline())
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if status not in spec.expect_status:
            return False, f"status {status}", None, None
        if spec.expect_body is None and spec.expect_body_regex is None:
            return True, f"status {status}", None, None
        body = (await _read_body(reader, headers)).decode("utf-8", "replace")
        if spec.expect_body is not None and spec.expect_body not in body:
            return False, f"status {status}, body lacks {spec.expect_body!r}", None, None
        if spec.expect_body_regex is not None and not spec.expect_body_regex.search(body):
            return (
                False,
                f"status {status}, body does not match {spec.expect_body_regex.pattern!r}",
                None,
                None,
            )
        return True, f"status {status}, body matches", None, None
    finally:
        writer.transport.abort()


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts: list[bytes] = []
        size = 0
        while size < BODY_LIMIT:
            head = (await reader.readline()).split(b";")[0].strip()
            try:
                n = int(head, 16)
            except ValueError:
                raise _Bad(f"bad chunk size {head[:20]!r}") from None
            if n == 0:
                break
            parts.append(await reader.readexactly(min(n, BODY_LIMIT - size)))
            size += n
            if size < BODY_LIMIT:
                await reader.readline()
        return b"".join(parts)
    length = headers.get("content-length")
    if length is not None and length.isdigit():
        return await reader.readexactly(min(int(length), BODY_LIMIT))
    return await reader.read(BODY_LIMIT)


# --- dns ----------------------------------------------------------------------------------------

_QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28}
_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def dns_query(ident: int, name: str, qtype: str) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.rstrip(".").split(".") if p)
    return (
        struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
        + labels
        + b"\0"
        + struct.pack("!HH", _QTYPES[qtype], 1)
    )


def _dns_name(msg: bytes, pos: int) -> tuple[str, int]:
    """The name at `pos` (following compression pointers) and where the record goes on."""
    labels: list[str] = []
    end = -1
    for _ in range(128):  # a loop of pointers ends here
        if pos >= len(msg):
            raise _Bad("truncated DNS answer")
        n = msg[pos]
        if n & 0xC0 == 0xC0:
            if pos + 1 >= len(msg):
                raise _Bad("truncated DNS answer")
            if end < 0:
                end = pos + 2
            pos = ((n & 0x3F) << 8) | msg[pos + 1]
            continue
        if n == 0:
            return ".".join(labels), end if end >= 0 else pos + 1
        labels.append(msg[pos + 1 : pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n
    raise _Bad("DNS name compression loop")


def dns_answers(msg: bytes, ident: int, qtype: str) -> tuple[str, list[str]]:
    """(rcode name, the answers of `qtype` as text) of a reply to query `ident`."""
    if len(msg) < 12:
        raise _Bad("truncated DNS answer")
    rid, flags, qd, an = struct.unpack_from("!HHHH", msg)
    if rid != ident or not flags & 0x8000:
        raise _Bad("DNS reply to another query")
    if flags & 0x0200:
        raise _Bad("DNS answer truncated (TC): use transport: tcp")
    rcode = flags & 0xF
    pos = 12
    for _ in range(qd):
        pos = _dns_name(msg, pos)[1] + 4
    want = _QTYPES[qtype]
    found: list[str] = []
    for _ in range(an):
        pos = _dns_name(msg, pos)[1]
        if pos + 10 > len(msg):
            raise _Bad("truncated DNS answer")
        rtype, _cls, _ttl, rdlen = struct.unpack_from("!HHIH", msg, pos)
        pos += 10
        rdata = msg[pos : pos + rdlen]
        if len(rdata) != rdlen:
            raise _Bad("truncated DNS answer")
        if rtype == want:
            found.append(_rdata_text(msg, pos, rdata, rtype))
        pos += rdlen
    return _RCODES.get(rcode, f"rcode {rcode}"), found


def _rdata_text(msg: bytes, pos: int, rdata: bytes, rtype: int) -> str:
    if rtype == 1 and len(rdata) == 4:
        return str(ipaddress.IPv4Address(rdata))
    if rtype == 28 and len(rdata) == 16:
        return str(ipaddress.IPv6Address(rdata))
    if rtype in (2, 5, 12, 6):  # NS, CNAME, PTR: a name; SOA: its primary name
        return _dns_name(msg, pos)[0]
    if rtype == 15:
        return _dns_name(msg, pos + 2)[0]
    if rtype == 16:
        out, i = [], 0
        while i < len(rdata):
            out.append(rdata[i + 1 : i + 1 + rdata[i]].decode("utf-8", "replace"))
            i += 1 + rdata[i]
        return "".join(out)
    raise _Bad(f"malformed record of type {rtype}")


def dns_verdict(spec: CheckSpec, rcode: str, answers: list[str]) -> _Outcome:
    if rcode != "NOERROR":
        return False, rcode, None, None
    if not answers:
        return False, f"no {spec.qtype} answer", None, None
    wanted = {_canonical(x) for x in spec.expect}
    missing = sorted(wanted - {_canonical(x) for x in answers})
    if missing:
        return False, f"answer lacks {', '.join(missing)}", None, None
    return True, f"{len(answers)} {spec.qtype} answer{'s' if len(answers) > 1 else ''}", None, None


def _canonical(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value.rstrip(".").lower()


def dns_transport(spec: CheckSpec, target: Target) -> str:
    return spec.transport or ("tcp" if target.service.protocol is Protocol.TCP else "udp")


async def _dns(spec: CheckSpec, target: Target) -> _Outcome:
    ident = random.getrandbits(16)
    query = dns_query(ident, spec.query, spec.qtype)
    loop = asyncio.get_running_loop()
    if dns_transport(spec, target) == "tcp":
        sock = await _connected(spec, target)
        try:
            await loop.sock_sendall(sock, struct.pack("!H", len(query)) + query)
            (size,) = struct.unpack("!H", await _recv_exactly(sock, 2))
            return dns_verdict(spec, *dns_answers(await _recv_exactly(sock, size), ident, spec.qtype))
        finally:
            _close_rst(sock)
    sock = _socket(spec, target, socket.SOCK_DGRAM, socket.socket)
    try:
        await loop.sock_connect(sock, target.sockaddr)
        await loop.sock_sendall(sock, query)
        while True:  # a stray datagram (an older query's late answer) is skipped, not taken for the answer
            reply = await loop.sock_recv(sock, 65535)
            if len(reply) >= 2 and struct.unpack_from("!H", reply)[0] == ident:
                return dns_verdict(spec, *dns_answers(reply, ident, spec.qtype))
    finally:
        sock.close()


async def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise asyncio.IncompleteReadError(data, size)
        data += chunk
    return data


# --- exec ---------------------------------------------------------------------------------------


def exec_env(target: Target) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ", "HOME")}
    return keep | {
        "LVSTOP_SERVICE": str(target.service),
        "LVSTOP_DEST": str(target.dest),
        "LVSTOP_DEST_ADDRESS": target.address,
        "LVSTOP_DEST_PORT": str(target.dest.port),
        "LVSTOP_PROBE_PORT": str(target.port),
        "LVSTOP_DEST_FWD": target.fwd.label,
        "LVSTOP_DEST_WEIGHT": str(target.weight),
    }


def exec_verdict(code: int, said: str) -> _Outcome:
    """keepalived's MISC_CHECK with misc_dynamic: 0 up, 1 down, 2-255 up with weight code - 2."""
    tail = f": {said}" if said else ""
    if code < 0:
        return False, f"killed by signal {-code}{tail}", None, None
    if code == 0:
        return True, f"exit 0{tail}", None, None
    if code == 1:
        return False, f"exit 1{tail}", None, None
    return True, f"exit {code}, weight {code - 2}{tail}", code - 2, None


async def _exec(spec: CheckSpec, target: Target) -> _Outcome:
    proc = await asyncio.create_subprocess_exec(
        *spec.command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=exec_env(target),
        start_new_session=True,  # its own process group, so a timeout kills what it started too
    )
    try:
        assert proc.stdout is not None
        said = (await proc.stdout.read(200)).decode("utf-8", "replace").strip().splitlines()
        code = await proc.wait()
    except BaseException:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.shield(proc.wait())
        raise
    return exec_verdict(code, said[0][:80] if said else "")


# --- agent --------------------------------------------------------------------------------------

_AGENT_UP = frozenset({"up", "ready"})
_AGENT_DOWN = frozenset({"down", "fail", "stopped", "maint"})


def agent_verdict(reply: str) -> _Outcome:
    """HAProxy's agent-check words: up/ready, down/fail/stopped, maint, drain (0 %) and NN% of the
    configured weight; the last state word wins; other words (maxconn:N, a reason) are ignored."""
    words = [w for w in re.split(r"[\s,]+", reply.strip().lower()) if w]
    if not words:
        return False, "empty agent reply", None, None
    ok: bool | None = None
    percent: int | None = None
    for w in words:
        if w in _AGENT_UP:
            ok = True
        elif w in _AGENT_DOWN:
            ok = False
        elif w == "drain":
            percent = 0
        elif m := re.fullmatch(r"(\d{1,3})%", w):
            percent = min(int(m.group(1)), 256)
    said = f"agent: {reply.strip()[:60]}"
    if ok is None and percent is None:
        return False, f"{said} (no state or weight)", None, None
    return ok is not False, said, None, percent


async def _agent(spec: CheckSpec, target: Target) -> _Outcome:
    sock = await _connected(spec, target)
    try:
        loop = asyncio.get_running_loop()
        if spec.send is not None:
            await loop.sock_sendall(sock, spec.send.encode("utf-8"))
        data = b""
        while b"\n" not in data and len(data) < AGENT_LIMIT:
            chunk = await loop.sock_recv(sock, AGENT_LIMIT)
            if not chunk:
                break
            data += chunk
        return agent_verdict(data.split(b"\n")[0].decode("utf-8", "replace"))
    finally:
        _close_rst(sock)


_PROBES: dict[str, Callable[[CheckSpec, Target], Awaitable[_Outcome]]] = {
    "http": _http,
    "https": _http,
    "dns": _dns,
    "exec": _exec,
    "agent": _agent,
}
