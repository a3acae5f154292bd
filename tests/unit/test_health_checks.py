"""Each check type against real listeners on loopback: healthy, refusing, slow, wrong answers, bad TLS.

Every probe here goes to 127.0.0.1 (or ::1), to servers the test itself started.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from lvstop.health.checks import Target, agent_verdict, dns_answers, dns_query, exec_verdict, probe
from lvstop.health.config import CheckSpec
from lvstop.model import AF_INET, DestKey, FwdMethod, ServiceKey

LOOPBACK = "127.0.0.1"


def spec(kind: str, **kw: Any) -> CheckSpec:
    kw.setdefault("timeout", 1.0)
    return CheckSpec(type=kind, service=None, line=1, **kw)


def target(port: int, service: ServiceKey | None = None) -> Target:
    return Target(
        service or ServiceKey.tcp("203.0.113.10", 80),
        DestKey(AF_INET, LOOPBACK, port),
        FwdMethod.ROUTE,
        5,
        port,
    )


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
    return port


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]


async def serve(handler: Handler, tls: ssl.SSLContext | None = None) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, LOOPBACK, 0, ssl=tls)
    return server, server.sockets[0].getsockname()[1]


def http_handler(
    status: int = 200, body: bytes = b"all ok", chunked: bool = False, delay: float = 0
) -> Handler:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        seen.append(request)
        await asyncio.sleep(delay)
        if chunked:
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:3], body[3:]) if p) + b"0\r\n\r\n"
            head = b"Transfer-Encoding: chunked\r\n"
            payload = chunks
        else:
            head = b"Content-Length: %d\r\n" % len(body)
            payload = body
        writer.write(b"HTTP/1.1 %d X\r\n%sConnection: close\r\n\r\n" % (status, head))
        if not request.startswith(b"HEAD"):
            writer.write(payload)
        await writer.drain()
        writer.close()

    handle.seen = seen  # type: ignore[attr-defined]
    return handle


# --- tcp ----------------------------------------------------------------------------------------


async def test_tcp_up_against_a_listener_and_down_against_a_closed_port() -> None:
    server, port = await serve(lambda r, w: w.close())
    async with server:
        up = await probe(spec("tcp"), target(port))
    assert up.ok and up.reason == "connected" and 0 < up.latency < 1
    down = await probe(spec("tcp"), target(free_port()))
    assert not down.ok and down.reason == "connection refused"


async def test_tcp_times_out_when_the_listener_drops_syns() -> None:
    with socket.socket() as full:
        full.bind((LOOPBACK, 0))
        full.listen(0)  # never accepts: one connection fills its queue, then SYNs are dropped
        with socket.create_connection(full.getsockname(), timeout=1):
            result = await probe(spec("tcp", timeout=0.3), target(full.getsockname()[1]))
    assert not result.ok and result.reason == "timed out after 0.3 s" and 0.3 <= result.latency < 1


async def test_tcp_binds_the_source_address_and_probes_the_port_override() -> None:
    accepted: list[tuple[str, int]] = []

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.append(w.get_extra_info("peername"))
        w.close()

    server, port = await serve(handle)
    t = dataclasses.replace(target(port), dest=DestKey(AF_INET, LOOPBACK, 1))  # dest port 1, probe `port`
    async with server:
        result = await probe(spec("tcp", source="127.0.0.2"), t)
        await asyncio.sleep(0.05)
    assert result.ok
    assert accepted and accepted[0][0] == "127.0.0.2"


# --- http / https -------------------------------------------------------------------------------


async def test_http_status_path_host_and_body() -> None:
    handler = http_handler(200, b"service is healthy")
    server, port = await serve(handler)
    async with server:
        ok = await probe(
            spec("http", path="/healthz", host="www.example.org", expect_body="healthy"), target(port)
        )
        lacks = await probe(spec("http", expect_body="sick"), target(port))
        regex = await probe(
            spec("http", expect_body_regex=__import__("re").compile(r"is \w+y$")), target(port)
        )
        head = await probe(spec("http", method="HEAD"), target(port))
    assert ok.ok and ok.reason == "status 200, body matches"
    assert not lacks.ok and lacks.reason == "status 200, body lacks 'sick'"
    assert regex.ok
    assert head.ok and head.reason == "status 200"
    first = handler.seen[0]  # type: ignore[attr-defined]
    assert first.startswith(b"GET /healthz HTTP/1.1\r\n") and b"\r\nHost: www.example.org\r\n" in first
    assert handler.seen[3].startswith(b"HEAD / HTTP/1.1\r\n")  # type: ignore[attr-defined]
    assert f"Host: {LOOPBACK}:{port}".encode() in handler.seen[1]  # type: ignore[attr-defined]


async def test_http_wrong_status_chunked_body_and_slow_server() -> None:
    server, port = await serve(http_handler(503))
    async with server:
        wrong = await probe(spec("http"), target(port))
        wanted = await probe(spec("http", expect_status=frozenset({503})), target(port))
    assert not wrong.ok and wrong.reason == "status 503"
    assert wanted.ok
    server, port = await serve(http_handler(200, b"chunky body", chunked=True))
    async with server:
        chunked = await probe(spec("http", expect_body="chunky body"), target(port))
    assert chunked.ok, chunked.reason
    server, port = await serve(http_handler(200, delay=5))
    async with server:
        slow = await probe(spec("http", timeout=0.2), target(port))
    assert not slow.ok and slow.reason == "timed out after 0.2 s" and 0.2 <= slow.latency < 1


async def test_http_refuses_an_answer_that_is_not_http() -> None:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        await w.drain()
        w.close()

    server, port = await serve(handle)
    async with server:
        result = await probe(spec("http"), target(port))
    assert not result.ok and result.reason.startswith("not an HTTP answer: 'SSH-2.0")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (openssl), as (cert, key) paths."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=lvstop-test",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


async def test_https_verifies_the_certificate_unless_told_not_to(certificate: tuple[str, str]) -> None:
    cert, key = certificate
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server, port = await serve(http_handler(200, b"secure ok"), tls)
    async with server:
        untrusted = await probe(spec("https"), target(port))
        unverified = await probe(spec("https", tls_verify=False, expect_body="secure"), target(port))
        trusted = await probe(spec("https", tls_ca=cert), target(port))
        wrong_name = await probe(spec("https", tls_ca=cert, host="www.example.org"), target(port))
        plain = await probe(spec("http"), target(port))
    assert not untrusted.ok and untrusted.reason == "TLS: CERTIFICATE_VERIFY_FAILED"
    assert unverified.ok and unverified.reason == "status 200, body matches"
    assert trusted.ok, trusted.reason
    assert not wrong_name.ok and wrong_name.reason.startswith("TLS: ")
    assert not plain.ok  # plain HTTP to a TLS port gets no HTTP answer


# --- dns ----------------------------------------------------------------------------------------


def dns_reply(query: bytes, answers: list[bytes], rcode: int = 0) -> bytes:
    ident = query[:2]
    question = query[12:]
    header = ident + struct.pack("!HHHHH", 0x8180 | rcode, 1, len(answers), 0, 0)
    records = b"".join(b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, len(a)) + a for a in answers)
    return header + question + records


class DnsServer(asyncio.DatagramProtocol):
    def __init__(self, answers: list[bytes], rcode: int = 0, stray: bool = False) -> None:
        self.answers, self.rcode, self.stray = answers, rcode, stray

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.stray:  # a late answer to some other query comes first
            other = bytes([data[0] ^ 0xFF, data[1]]) + data[2:]
            self.transport.sendto(dns_reply(other, [bytes([192, 0, 2, 99])]), addr)
        self.transport.sendto(dns_reply(data, self.answers, self.rcode), addr)


async def udp_dns(answers: list[bytes], rcode: int = 0, stray: bool = False) -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: DnsServer(answers, rcode, stray), local_addr=(LOOPBACK, 0)
    )
    try:
        yield transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


UDP_SERVICE = ServiceKey.udp("203.0.113.10", 53)


async def test_dns_over_udp_expects_the_answer() -> None:
    async for port in udp_dns([bytes([192, 0, 2, 10]), bytes([192, 0, 2, 11])], stray=True):
        t = target(port, UDP_SERVICE)
        any_answer = await probe(spec("dns", query="www.example.org"), t)
        expected = await probe(spec("dns", query="www.example.org", expect=("192.0.2.11",)), t)
        missing = await probe(spec("dns", query="www.example.org", expect=("192.0.2.12",)), t)
        wrong_type = await probe(spec("dns", query="www.example.org", qtype="AAAA"), t)
    assert any_answer.ok and any_answer.reason == "2 A answers"
    assert expected.ok
    assert not missing.ok and missing.reason == "answer lacks 192.0.2.12"
    assert not wrong_type.ok and wrong_type.reason == "no AAAA answer"
    async for port in udp_dns([], rcode=3):
        nx = await probe(spec("dns", query="nowhere.example.org"), target(port, UDP_SERVICE))
    assert not nx.ok and nx.reason == "NXDOMAIN"


async def test_dns_over_udp_times_out_when_nothing_answers() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOOPBACK, 0))
        result = await probe(
            spec("dns", query="a.example", timeout=0.2), target(silent.getsockname()[1], UDP_SERVICE)
        )
    assert not result.ok and result.reason == "timed out after 0.2 s"


async def test_dns_over_tcp_for_tcp_services() -> None:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        (size,) = struct.unpack("!H", await r.readexactly(2))
        reply = dns_reply(await r.readexactly(size), [bytes([192, 0, 2, 10])])
        w.write(struct.pack("!H", len(reply)) + reply)
        await w.drain()
        w.close()

    server, port = await serve(handle)
    async with server:
        result = await probe(spec("dns", query="www.example.org", expect=("192.0.2.10",)), target(port))
    assert result.ok, result.reason


def test_dns_messages_round_trip_and_malformed_answers_are_refused() -> None:
    q = dns_query(0x1234, "www.example.org", "A")
    assert q[:2] == b"\x12\x34" and b"\x03www\x07example\x03org\x00" in q
    assert dns_answers(dns_reply(q, [bytes([192, 0, 2, 1])]), 0x1234, "A") == ("NOERROR", ["192.0.2.1"])
    with pytest.raises(Exception, match="truncated"):
        dns_answers(dns_reply(q, [bytes([192, 0, 2, 1])])[:-2], 0x1234, "A")
    with pytest.raises(Exception, match="another query"):
        dns_answers(dns_reply(q, []), 0x4321, "A")
    loop = dns_reply(q, [])[:12] + b"\xc0\x0c"  # a name pointing at itself
    with pytest.raises(Exception, match="compression loop"):
        dns_answers(loop[:4] + b"\x00\x01" + loop[6:], 0x1234, "A")


# --- exec ---------------------------------------------------------------------------------------


def sh(script: str) -> CheckSpec:
    return spec("exec", timeout=10.0, command=("sh", "-c", script))  # a loaded machine starts sh slowly


async def test_exec_exit_codes_weights_and_environment() -> None:
    t = target(8080)
    up = await probe(sh('echo "fine $LVSTOP_DEST_ADDRESS:$LVSTOP_PROBE_PORT"'), t)
    down = await probe(sh("echo broken; exit 1"), t)
    weighted = await probe(sh("exit 7"), t)
    env = await probe(
        sh('test "$LVSTOP_SERVICE/$LVSTOP_DEST_FWD/$LVSTOP_DEST_WEIGHT" = "TCP 203.0.113.10:80/Route/5"'), t
    )
    missing = await probe(spec("exec", command=("/nonexistent/check",)), t)
    assert up.ok and up.reason == "exit 0: fine 127.0.0.1:8080" and up.weight is None
    assert not down.ok and down.reason == "exit 1: broken"
    assert weighted.ok and weighted.weight == 5 and weighted.reason == "exit 7, weight 5"
    assert env.ok, env.reason
    assert not missing.ok and missing.reason == "no such file or directory"


async def test_exec_timeout_kills_the_command_and_what_it_started(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    cmd = ("sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait")
    result = await probe(spec("exec", command=cmd, timeout=0.3), target(8080))
    assert not result.ok and result.reason == "timed out after 0.3 s"
    child = int(pidfile.read_text())
    await asyncio.sleep(0.1)
    assert _gone_or_zombie(child)


def _gone_or_zombie(pid: int) -> bool:
    """Killed: no such process, or one that died and waits for its (re)parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def test_exec_verdicts() -> None:
    assert exec_verdict(0, "") == (True, "exit 0", None, None)
    assert exec_verdict(2, "") == (True, "exit 2, weight 0", 0, None)
    assert exec_verdict(255, "x") == (True, "exit 255, weight 253: x", 253, None)
    assert exec_verdict(-9, "") == (False, "killed by signal 9", None, None)


# --- agent --------------------------------------------------------------------------------------


def agent_server(reply: bytes, got: list[bytes] | None = None) -> Handler:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if got is not None:
            got.append(await r.readline())
        w.write(reply)
        await w.drain()
        w.close()

    return handle


@pytest.mark.parametrize(
    ("reply", "ok", "percent"),
    [
        (b"up\n", True, None),
        (b"ready 75%\n", True, 75),
        (b"drain\n", True, 0),
        (b"maint\n", False, None),
        (b"down # disk full\n", False, None),
        (b"50%,maxconn:30\n", True, 50),
        (b"", False, None),
        (b"hello\n", False, None),
    ],
)
async def test_agent_replies(reply: bytes, ok: bool, percent: int | None) -> None:
    got: list[bytes] = []
    server, port = await serve(agent_server(reply, got))
    async with server:
        result = await probe(spec("agent", port=port, send="status\n"), target(port))
    assert (result.ok, result.percent) == (ok, percent), result.reason
    assert got == [b"status\n"]


async def test_agent_that_never_answers_times_out() -> None:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    server, port = await serve(handle)
    async with server:
        result = await probe(spec("agent", port=port, timeout=0.2), target(port))
    assert not result.ok and result.reason == "timed out after 0.2 s"


def test_agent_verdicts() -> None:
    assert agent_verdict("up 30%") == (True, "agent: up 30%", None, 30)
    assert agent_verdict("75% drain") == (True, "agent: 75% drain", None, 0)
    assert agent_verdict("stopped")[0] is False
    assert agent_verdict("   ") == (False, "empty agent reply", None, None)


def test_the_checks_module_imports_no_textual() -> None:
    code = "import sys, lvstop.health.runner, lvstop.health.command; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
