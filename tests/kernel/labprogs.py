"""Small programs the lab runs inside its namespaces: real-server daemons and bounded traffic.

    python labprogs.py serve NAME SECONDS            HTTP :8080 and UDP :5353 (IPv4+IPv6), SCTP :9999
    python labprogs.py burst PLAN_JSON               one round of requests per plan entry, prints JSON
    python labprogs.py steady KIND HOST PORT RATE SECONDS [SRC]   fixed-rate requests, prints JSON
    python labprogs.py hold HOST PORT COUNT SECONDS     COUNT TCP connections held open (ActiveConn)

Every loop is bounded in count and time; every socket has a timeout.
"""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import sys
import threading
import time

HTTP_PORT = 8080
UDP_PORT = 5353
SCTP_PORT = 9999
IPPROTO_SCTP = 132


def serve(name: str, seconds: float) -> None:
    body = (name + "\n").encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class DualStack(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6

        def server_bind(self) -> None:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

    httpd = DualStack(("::", HTTP_PORT), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    def udp() -> None:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", UDP_PORT))
        while True:
            data, peer = s.recvfrom(2048)
            s.sendto(body + data[:64], peer)

    def sctp(s: socket.socket) -> None:
        while True:
            c, _ = s.accept()
            c.settimeout(3)
            try:
                c.recv(256)
                c.sendall(body)
            except OSError:
                pass
            c.close()

    threading.Thread(target=udp, daemon=True).start()
    try:
        sl = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_SCTP)
        sl.bind(("0.0.0.0", SCTP_PORT))
        sl.listen(16)
        threading.Thread(target=sctp, args=(sl,), daemon=True).start()
    except OSError as e:  # no SCTP in this kernel: the SCTP service is then listed but not exercised
        print(f"{name}: no SCTP listener: {e}", flush=True)
    print(f"{name} serving", flush=True)
    time.sleep(seconds)


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def request(kind: str, host: str, port: int, src: str | None = None, timeout: float = 3.0) -> str:
    """One request; returns the answering server's name or 'ERR:<reason>'."""
    try:
        if kind == "http":
            c = http.client.HTTPConnection(
                host, port, timeout=timeout, source_address=(src, 0) if src else None
            )
            try:
                c.request("GET", "/", headers={"Connection": "close"})
                return c.getresponse().read().decode().strip()
            finally:
                c.close()
        proto = {"udp": (socket.SOCK_DGRAM, 0), "sctp": (socket.SOCK_STREAM, IPPROTO_SCTP)}[kind]
        with socket.socket(_family(host), *proto) as s:
            s.settimeout(timeout)
            if src:
                s.bind((src, 0))
            s.connect((host, port))
            s.send(b"ping")
            return s.recv(256).decode().split("\n")[0]
    except OSError as e:
        return f"ERR:{type(e).__name__}"


def burst(plan: list[dict[str, object]], deadline_s: float = 240) -> dict[str, dict[str, int]]:
    """plan: [{"name", "kind", "host", "port", "count", "src"?}]; counts answers per server."""
    end = time.monotonic() + deadline_s
    out: dict[str, dict[str, int]] = {}
    for p in plan:
        res = out.setdefault(str(p["name"]), {})
        for _ in range(int(str(p["count"]))):
            if time.monotonic() > end:
                res["ERR:deadline"] = res.get("ERR:deadline", 0) + 1
                continue
            src = p.get("src")
            r = request(str(p["kind"]), str(p["host"]), int(str(p["port"])), str(src) if src else None)
            res[r] = res.get(r, 0) + 1
    return out


def steady(kind: str, host: str, port: int, rate: float, seconds: float, src: str | None) -> dict[str, int]:
    """Requests at a fixed rate (each on its own schedule slot, never catching up in a burst)."""
    t0 = time.monotonic()
    res: dict[str, int] = {}
    n = 0
    while (slot := t0 + n / rate) < t0 + seconds:
        now = time.monotonic()
        if slot > now:
            time.sleep(slot - now)
        elif now - slot > 1.0:
            n = int((now - t0) * rate)  # fell behind by over a second: skip slots rather than burst
            res["skipped"] = res.get("skipped", 0) + 1
            continue
        r = request(kind, host, port, src, timeout=1.0)
        res[r] = res.get(r, 0) + 1
        n += 1
    return res


def hold(host: str, port: int, count: int, seconds: float) -> None:
    socks = [socket.create_connection((host, port), timeout=3) for _ in range(count)]
    print(f"holding {len(socks)}", flush=True)
    time.sleep(seconds)


def main(argv: list[str]) -> None:
    cmd = argv[0]
    if cmd == "serve":
        serve(argv[1], float(argv[2]))
    elif cmd == "burst":
        print(json.dumps(burst(json.loads(argv[1]))))
    elif cmd == "steady":
        src = argv[6] if len(argv) > 6 else None
        print(json.dumps(steady(argv[1], argv[2], int(argv[3]), float(argv[4]), float(argv[5]), src)))
    elif cmd == "hold":
        hold(argv[1], int(argv[2]), int(argv[3]), float(argv[4]))
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
