"""Helpers of the exporter tests: deterministic snapshots, golden inputs, a running exporter."""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvstop import codec
from lvstop.conntable import ConnTable
from lvstop.control import DrainRecord
from lvstop.exporter.http import Server
from lvstop.exporter.main import Running, build_parser, conn_stats, start
from lvstop.exporter.metrics import BackendHealth, ConnStats, ControlView, Health, Inputs, Options
from lvstop.model import AF_INET, DestKey, ServiceKey, Snapshot
from lvstop.poller import Poller
from lvstop.sources.sim import SimSource

FIXTURES = Path(__file__).parent / "fixtures"
T0 = 1_763_769_600.0  # 2025-11-22 00:00 UTC: every clock in the golden tests starts here


def demo_director(polls: int = 3, **sim: Any) -> tuple[Snapshot, list[str]]:
    """The demo director after `polls` polls 2 s apart on a frozen clock (rates need two), and its
    connection table at that moment."""
    t = [T0]
    source = SimSource(seed=1, clock=lambda: t[0], **sim)
    poller = Poller(source, clock=lambda: t[0] - T0, wall_clock=lambda: t[0])
    snap = poller.poll_once()
    for _ in range(polls - 1):
        t[0] += 2
        snap = poller.poll_once()
    return snap, list(source.conn_lines())


def kernel_snapshot() -> Snapshot:
    """A 6.1 kernel's state (netlink dump, ip_vs_stats, sysctls, daemons) captured under qemu."""
    return codec.snapshot_from_dict(json.loads((FIXTURES / "kernel-6.1.json").read_text()))


def conn_of(snap: Snapshot, lines: list[str]) -> ConnStats:
    summary = ConnTable(snap.services).summarize(
        lines, sync=False, budget_s=None, filters=None, clock=lambda: 0.0
    )
    return conn_stats(summary, T0)


def golden_inputs(snap: Snapshot, conn: ConnStats | None, options: Options | None = None) -> Inputs:
    """Everything that is not IPVS state pinned down, so the page depends on the snapshot alone."""
    first = snap.services[0]
    return Inputs(
        snap,
        Health(
            source=snap.source,
            poll_success=True,
            last_success=T0,
            poll_duration=0.004,
            errors={"inconsistent": 1},
            scrape_duration=0.002,
            render_duration=0.001,
            version="0.0.0-golden",
            python_version="3.x",
        ),
        ControlView(
            drains={(first.key, first.dests[0].key): DrainRecord(7, T0 - 600, "alice", "kernel update")},
            edits={"applied": 3, "rejected": 1},
            external={(first.key, first.dests[-1].key): 2},
            managers=(("keepalived", 812),),
        ),
        conn,
        options or Options(),
        backends=BackendHealth(  # health checks of the first service's first two dests, one up and one down
            {(first.key, d.key): state for d, state in zip(first.dests, ("up", "down"), strict=False)},
            {"tcp": (120, 7, 0.84)},
        ),
    )


# --- a running exporter ------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Harness:
    running: Running
    audit_path: Path
    drain_state: Path
    read_url: str
    write_url: str | None
    default_headers: dict[str, str] = field(default_factory=dict)

    @property
    def source(self) -> SimSource:
        src = self.running.exporter.source.source
        assert isinstance(src, SimSource)
        return src

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        write: bool = True,
        raw: bytes | None = None,
    ) -> Reply:
        url = self.write_url if write and self.write_url else self.read_url
        host = url.split("://")[1]
        conn = http.client.HTTPConnection(host, timeout=10)
        try:
            hdrs = dict(self.default_headers)
            data = raw
            if body is not None:
                data = json.dumps(body).encode()
                hdrs.setdefault("Content-Type", "application/json")
                hdrs.setdefault("X-Lvstop-Request", "1")
            hdrs.update(headers or {})
            conn.request(method, path, body=data, headers={k: v for k, v in hdrs.items() if v is not None})
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def post(self, path: str, body: Any, **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)

    def get(self, path: str, **kw: Any) -> Reply:
        kw.setdefault("write", False)
        return self.request("GET", path, **kw)

    def audit(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(x) for x in self.audit_path.read_text().splitlines()]

    def poll(self) -> Snapshot:
        """A poll now, so the next page shows what just changed."""
        return self.running.poller.poll_once()


def listener(h: Harness, **kw: Any) -> Iterator[tuple[str, int]]:
    """One more read listener on `h`'s App (a Server with `kw`), serving while the loop body runs."""
    srv = Server(("127.0.0.1", 0), h.running.app, writes=False, tls=None, **kw)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield "127.0.0.1", srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def start_exporter(tmp_path: Path, *extra: str, write: bool = True, source: Any = None) -> Harness:
    audit = tmp_path / "audit.jsonl"
    state = tmp_path / "state" / "drains.json"
    argv = [
        "--source",
        "demo",
        "--web.listen-address",
        "127.0.0.1:0",
        "--write.listen-address",
        "127.0.0.1:0",
        "--drain-state",
        str(state),
        "--audit-log",
        str(audit),
        "--proc-root",
        str(tmp_path / "proc"),  # no keepalived here unless a test puts one
        "--no-collector.conntable",
        *(["--write.enable"] if write else []),
        *extra,
    ]
    (tmp_path / "proc").mkdir(exist_ok=True)
    args = build_parser().parse_args(argv)
    running = start(args, source if source is not None else SimSource(seed=1))
    servers = running.servers
    h = Harness(running, audit, state, servers[0].url, servers[1].url if len(servers) > 1 else None)
    deadline = time.monotonic() + 10
    while running.poller.latest is None:
        assert time.monotonic() < deadline, "the exporter never polled"
        time.sleep(0.01)
    return h


WEB = ServiceKey.tcp("203.0.113.10", 80)


def key_json(skey: ServiceKey = WEB) -> dict[str, Any]:
    return codec.service_key_to_dict(skey)


def dest_json(addr: str = "192.0.2.11", port: int = 8080) -> dict[str, Any]:
    return {"address": addr, "port": port}


def dkey(addr: str = "192.0.2.11", port: int = 8080) -> DestKey:
    return DestKey(AF_INET, addr, port)
