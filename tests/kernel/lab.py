"""The IPVS lab: two directors, a client and three real servers, each a network namespace.

Everything lives in namespaces named `lvt-*`, so the lab also runs on a real director without touching
its own IPVS table (IPVS state is per network namespace). Documentation address ranges only:
  VIPs 203.0.113.0/24 and 2001:db8:113::/64, clients 198.51.100.0/25 and 2001:db8:c1::/64,
  real servers 192.0.2.0/24 and 2001:db8:2::/64, the sync link 198.51.100.248/29.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROGS = HERE / "labprogs.py"
PREFIX = "lvt-"
MASTER, BACKUP, CLIENT = PREFIX + "dm", PREFIX + "db", PREFIX + "cli"
# The kernel refuses a sync daemon while a service has dests of another family (and vice versa), so
# the mixed-family tunnel service lives on a third director without a daemon.
MIXED = PREFIX + "dx"
DIRECTORS = (MASTER, BACKUP, MIXED)
SERVERS = tuple(f"{PREFIX}rs{i}" for i in (1, 2, 3))
RS4 = {ns: f"192.0.2.1{i}" for i, ns in enumerate(SERVERS, 1)}
RS6 = {ns: f"2001:db8:2::1{i}" for i, ns in enumerate(SERVERS, 1)}
CLIENT_SOURCES = ("198.51.100.2", "198.51.100.3", "198.51.100.4", "198.51.100.5")
CLIENT_SOURCES6 = ("2001:db8:c1::2", "2001:db8:c1::3")
VIPS4 = tuple(f"203.0.113.{i}" for i in range(10, 18))
VIPS6 = ("2001:db8:113::10", "2001:db8:113::12", "2001:db8:113::13")
SYNC_ID = 7
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "sh", "mh", "sed", "nq", "fo", "ovf", "lblc", "lblcr", "dh")
IPVS_MODULES = ("ip_vs", *(f"ip_vs_{s}" for s in SCHEDULERS), "ip_vs_pe_sip")
NET_MODULES = ("veth", "bridge", "dummy", "sch_ingress", "cls_flower", "act_skbedit", "sctp")
# Real servers need these to decapsulate tunnelled traffic; loading them creates fallback devices
# (tunl0, gre0) in every namespace, the root one included, so a real director loads them only on request.
TUNNEL_MODULES = ("ipip", "fou", "ip_gre")
LIFETIME_S = 1500  # servers and holders outlive any tier run, and die on their own


def rs_rules(vip: str, proto: str, port: int, dests: Sequence[tuple[str, str]], extra: str = "") -> list[str]:
    """dests: (address[:port], dest options) pairs."""
    svc = f"{proto} {vip}:{port}"
    return [f"-A {svc} {extra}".rstrip(), *(f"-a {svc} -r {d} {o}".rstrip() for d, o in dests)]


def _nat(port: int, weights: Sequence[int] = (1, 1, 1), opts: str = "") -> list[tuple[str, str]]:
    return [
        (f"{a}:{port}", f"-m -w {w} {opts}".rstrip()) for a, w in zip(RS4.values(), weights, strict=False)
    ]


def service_rules() -> list[str]:
    """The services of both directors, in `ipvsadm -R` syntax (one source of truth for the lab)."""
    r: list[str] = []
    v = "203.0.113.10"
    r += rs_rules(
        v,
        "-t",
        80,
        [
            (f"{RS4[SERVERS[0]]}:8080", "-m -w 1 -x 1000 -y 100"),
            (f"{RS4[SERVERS[1]]}:8080", "-m -w 1"),
            (f"{RS4[SERVERS[2]]}:8080", "-m -w 1 -x 50"),
        ],
        "-s rr",
    )
    r += rs_rules(v, "-t", 81, _nat(8080, (1, 2, 3)), "-s wrr")
    for port, sched in zip(
        range(82, 93),
        (
            "lc",
            "wlc",
            "sh -b sh-fallback,sh-port",
            "mh -b mh-fallback,mh-port",
            "sed",
            "nq",
            "fo",
            "ovf",
            "lblc",
            "lblcr",
            "dh",
        ),
        strict=True,
    ):
        r += rs_rules(
            v, "-t", port, _nat(8080, (1, 2, 3), "-x 200 -y 20" if sched == "ovf" else ""), f"-s {sched}"
        )
    r += rs_rules(v, "-t", 93, _nat(8080, (5, 0, 3)), "-s rr -b flag-1,flag-3")
    r += rs_rules(v, "-t", 443, _nat(8080, (1, 1)), "-s wlc -p 120 -M 255.255.255.0")
    # per-client persistence: port 0 service, dests without a port keep the client's destination port
    r += rs_rules("203.0.113.14", "-t", 0, [(a, "-m -w 1") for a in list(RS4.values())[:2]], "-s rr -p 60")
    r += rs_rules("203.0.113.11", "-t", 8080, [(f"{a}:8080", "-g -w 1") for a in RS4.values()], "-s rr")
    r += rs_rules(
        "203.0.113.13", "-t", 8080, [(f"{a}:8080", "-i -w 2 -x 500 -y 50") for a in RS4.values()], "-s wrr"
    )
    r += rs_rules(
        "203.0.113.15",
        "-t",
        8080,
        [
            (f"{RS4[SERVERS[0]]}:8080", "-i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum"),
            (f"{RS4[SERVERS[1]]}:8080", "-i -w 1 --tun-type gue --tun-port 6080 --tun-csum"),
            (f"{RS4[SERVERS[2]]}:8080", "-i -w 1 --tun-type gue --tun-port 6080 --tun-remcsum"),
        ],
        "-s rr",
    )
    r += rs_rules(
        "203.0.113.16",
        "-t",
        8080,
        [
            (f"{RS4[SERVERS[1]]}:8080", "-i -w 1 --tun-type gre --tun-csum"),
            (f"{RS4[SERVERS[2]]}:8080", "-i -w 1 --tun-type gre --tun-nocsum"),
        ],
        "-s rr",
    )
    r += rs_rules(v, "-u", 53, _nat(5353), "-s rr")
    r += rs_rules(v, "-u", 54, _nat(5353), "-s rr -o")
    r += rs_rules(v, "-u", 5060, _nat(5060), "-s rr -p 30 --pe sip")
    r += rs_rules(v, "--sctp-service", 9999, _nat(9999), "-s rr")
    # rs1 serves only FWM 1, rs2 only FWM 2, rs3 both: the connection table (which shows no mark) can
    # name the fwmark service of rs1's and rs2's entries, not of rs3's
    rs1, rs2, rs3 = RS4.values()
    r += ["-A -f 1 -s wlc", f"-a -f 1 -r {rs1}:8080 -m -w 1", f"-a -f 1 -r {rs3}:8080 -m -w 2"]
    r += ["-A -f 2 -s rr -p 30", f"-a -f 2 -r {rs2}:8080 -m -w 1", f"-a -f 2 -r {rs3}:8080 -m -w 1"]
    r += ["-A -f 3 -6 -s rr", *(f"-a -f 3 -6 -r [{a}]:8080 -m -w 1" for a in RS6.values())]
    v6 = "[2001:db8:113::10]"
    r += rs_rules(
        v6,
        "-t",
        80,
        [(f"[{a}]:8080", f"-m -w {w}") for a, w in zip(RS6.values(), (3, 2, 1), strict=True)],
        "-s wrr",
    )
    r += rs_rules(v6, "-u", 53, [(f"[{a}]:5353", "-m -w 1") for a in RS6.values()], "-s rr")
    r += rs_rules(v6, "-t", 443, [(f"[{a}]:8080", "-m -w 1") for a in RS6.values()], "-s sh -p 30 -M 64")
    return r


def mixed_rules() -> list[str]:
    """An IPv6 service tunnelled to an IPv4 and an IPv6 real server, and an IPv4 one to an IPv6 server."""
    return [
        *rs_rules(
            "[2001:db8:113::13]",
            "-t",
            8080,
            [
                (f"{RS4[SERVERS[1]]}:8080", "-i -w 1"),
                (f"[{RS6[SERVERS[2]]}]:8080", "-i -w 4 -x 9 -y 3"),
            ],
            "-s rr",
        ),
        *rs_rules("203.0.113.13", "-u", 53, [(f"[{RS6[SERVERS[0]]}]:5353", "-i -w 1")], "-s wlc"),
    ]


# (name, kind, host, port, count, source): a burst covering every service that can carry traffic here
def traffic_plan(tunnels: bool, sctp: bool) -> list[dict[str, object]]:
    plan: list[dict[str, object]] = []

    def add(
        name: str, kind: str, host: str, port: int, count: int, srcs: Sequence[str | None] = (None,)
    ) -> None:
        for s in srcs:
            plan.append({"name": name, "kind": kind, "host": host, "port": port, "count": count, "src": s})

    add("tcp-rr", "http", "203.0.113.10", 80, 6, CLIENT_SOURCES[:2])
    for port in range(81, 94):
        add(f"tcp-{port}", "http", "203.0.113.10", port, 4, CLIENT_SOURCES[:2])
    add("persist-mask", "http", "203.0.113.10", 443, 4, CLIENT_SOURCES)
    add("persist-port0", "http", "203.0.113.14", 8080, 4, CLIENT_SOURCES[:2])
    add("dr", "http", "203.0.113.11", 8080, 4, CLIENT_SOURCES[:2])
    add("udp", "udp", "203.0.113.10", 53, 4, CLIENT_SOURCES[:2])
    add("udp-ops", "udp", "203.0.113.10", 54, 4, CLIENT_SOURCES[:1])
    add("fwm1", "http", "203.0.113.12", 80, 4, CLIENT_SOURCES[:2])
    # persistent fwmark NAT keeps the client's destination port (the template has port 0): ask for :8080
    add("fwm2-persist", "http", "203.0.113.17", 8080, 4, CLIENT_SOURCES[:3])
    add("fwm3-v6", "http", "2001:db8:113::12", 80, 4, CLIENT_SOURCES6)
    add("tcp6", "http", "2001:db8:113::10", 80, 6, CLIENT_SOURCES6)
    add("udp6", "udp", "2001:db8:113::10", 53, 4, CLIENT_SOURCES6)
    add("persist6", "http", "2001:db8:113::10", 443, 4, CLIENT_SOURCES6)
    if tunnels:
        add("tun-ipip", "http", "203.0.113.13", 8080, 6, CLIENT_SOURCES[:2])
        add("tun-gue", "http", "203.0.113.15", 8080, 6, CLIENT_SOURCES[:1])
        add("tun-gre", "http", "203.0.113.16", 8080, 4, CLIENT_SOURCES[:1])
    if sctp:
        add("sctp", "sctp", "203.0.113.10", 9999, 4, CLIENT_SOURCES[:2])
    return plan


class LabError(Exception):
    pass


def run(
    argv: Sequence[str],
    *,
    ns: str | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    full = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
    p = subprocess.run(full, input=input, capture_output=True, text=True, timeout=timeout, check=False)
    if check and p.returncode:
        raise LabError(f"{' '.join(full)} -> {p.returncode}: {p.stderr.strip() or p.stdout.strip()}")
    return p


def sh(ns: str | None, script: str, timeout: float = 120) -> None:
    """Run a shell script (one command a line, stop at the first failure) inside a namespace."""
    run(["sh", "-ec", script], ns=ns, timeout=timeout)


def ipvs_available() -> str | None:
    """None when this kernel can do IPVS (loaded or loadable), else why not."""
    if Path("/proc/net/ip_vs").exists() or Path("/sys/module/ip_vs").exists():
        return None
    p = subprocess.run(["modprobe", "-n", "ip_vs"], capture_output=True, text=True, check=False)
    return None if p.returncode == 0 else f"no ip_vs module for kernel {os.uname().release}"


@dataclass
class Lab:
    """A running lab. `pid[ns]` is a process inside each namespace (for /proc/PID/net views)."""

    workdir: Path
    tunnels: bool
    sctp: bool
    pid: dict[str, int] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    traffic: dict[str, dict[str, int]] = field(default_factory=dict)
    setup_seconds: float = 0.0

    # --- helpers the tests use ---
    def ipvsadm(self, *args: str, ns: str = MASTER) -> str:
        return run(["ipvsadm", *args], ns=ns).stdout

    def proc_root(self, ns: str) -> str:
        return f"/proc/{self.pid[ns]}"

    def in_ns(
        self, ns: str, argv: Sequence[str], timeout: float = 120, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run(argv, ns=ns, timeout=timeout, check=check, input=input)

    def python(self, ns: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run([sys.executable, *args], ns=ns, timeout=timeout)

    def burst(self, plan: list[dict[str, object]], timeout: float = 300) -> dict[str, dict[str, int]]:
        out = self.python(CLIENT, str(PROGS), "burst", json.dumps(plan), timeout=timeout).stdout
        return dict(json.loads(out))

    def start_steady(
        self, kind: str, host: str, port: int, rate: float, seconds: float, src: str | None = None
    ) -> subprocess.Popen[str]:
        argv = [
            "ip",
            "netns",
            "exec",
            CLIENT,
            sys.executable,
            str(PROGS),
            "steady",
            kind,
            host,
            str(port),
            str(rate),
            str(seconds),
            *([src] if src else []),
        ]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def _spawn(self, ns: str, argv: Sequence[str], log: str) -> int:
        with open(self.workdir / log, "wb") as f:
            p = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv],
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.procs.append(p)
        return p.pid

    # --- build and tear down ---
    def build(self) -> None:
        t0 = time.monotonic()
        teardown_namespaces()
        modules = [*IPVS_MODULES, *NET_MODULES, *(TUNNEL_MODULES if self.tunnels else ())]
        for m in modules:
            p = subprocess.run(["modprobe", m], capture_output=True, text=True, check=False)
            if p.returncode and m == "sctp":
                self.sctp = False  # SCTP service is still defined and listed, just not exercised
            elif p.returncode:
                raise LabError(f"modprobe {m}: {p.stderr.strip()}")
        for ns in (*DIRECTORS, CLIENT, *SERVERS):
            run(["ip", "netns", "add", ns])
            # IPv6 addresses must be usable at once: no duplicate address detection in the lab
            sh(
                ns,
                "ip link set lo up\n"
                "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0\n"
                "sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0",
            )
        self._wire()
        for ns in DIRECTORS:
            self.pid[ns] = self._spawn(ns, ["sleep", str(LIFETIME_S)], f"holder-{ns}.log")
        for ns in SERVERS:
            self.pid[ns] = self._spawn(
                ns, [sys.executable, str(PROGS), "serve", ns, str(LIFETIME_S)], f"serve-{ns}.log"
            )
        rules = "\n".join(service_rules()) + "\n"
        for ns in (MASTER, BACKUP):
            run(["ipvsadm", "-R"], ns=ns, input=rules)
        run(["ipvsadm", "-R"], ns=MIXED, input="\n".join(mixed_rules()) + "\n")
        run(
            ["ipvsadm", "--start-daemon", "master", "--mcast-interface", "sync0", "--syncid", str(SYNC_ID)],
            ns=MASTER,
        )
        run(
            ["ipvsadm", "--start-daemon", "backup", "--mcast-interface", "sync0", "--syncid", str(SYNC_ID)],
            ns=BACKUP,
        )
        # a second daemon with every parameter off its default, so each field is checked for real
        run(
            [
                "ipvsadm",
                "--start-daemon",
                "master",
                "--mcast-interface",
                "sync0",
                "--syncid",
                "9",
                "--sync-maxlen",
                "1000",
                "--mcast-group",
                "224.0.0.90",
                "--mcast-port",
                "8850",
                "--mcast-ttl",
                "2",
            ],
            ns=BACKUP,
        )
        self._wait_servers()
        self.setup_seconds = time.monotonic() - t0

    def _wire(self) -> None:
        vips = "\n".join(
            [
                *(f"ip addr add {v}/32 dev vip0" for v in VIPS4),
                *(f"ip addr add {v}/128 dev vip0 nodad" for v in VIPS6),
            ]
        )
        sh(
            MASTER,
            f"""
sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
sysctl -qw net.ipv4.conf.all.accept_local=1 net.ipv4.conf.default.accept_local=1
ip link add vip0 type dummy
ip link set vip0 up
{vips}
ip link add cli0 type veth peer name eth0 netns {CLIENT}
ip addr add 198.51.100.1/25 dev cli0
ip addr add 2001:db8:c1::1/64 dev cli0 nodad
ip link set cli0 up
ip link add br-rs type bridge
ip addr add 192.0.2.1/24 dev br-rs
ip addr add 2001:db8:2::1/64 dev br-rs nodad
ip link set br-rs up
ip link add sync0 type veth peer name sync0 netns {BACKUP}
ip addr add 198.51.100.249/29 dev sync0
ip link set sync0 up
tc qdisc add dev cli0 clsact
tc filter add dev cli0 ingress protocol ip flower dst_ip 203.0.113.12 action skbedit mark 1
tc filter add dev cli0 ingress protocol ip flower dst_ip 203.0.113.17 action skbedit mark 2
tc filter add dev cli0 ingress protocol ipv6 flower dst_ip 2001:db8:113::12 action skbedit mark 3
""",
        )
        sh(BACKUP, "ip addr add 198.51.100.250/29 dev sync0\nip link set sync0 up")
        srcs = "\n".join(
            [
                *(f"ip addr add {a}/25 dev eth0" for a in CLIENT_SOURCES),
                *(f"ip addr add {a}/64 dev eth0 nodad" for a in CLIENT_SOURCES6),
            ]
        )
        sh(
            CLIENT,
            f"""
{srcs}
ip link set eth0 up
ip route add default via 198.51.100.1
ip -6 route add default via 2001:db8:c1::1
""",
        )
        for ns in SERVERS:
            run(
                ["ip", "link", "add", "rs-" + ns[-3:], "type", "veth", "peer", "name", "eth0", "netns", ns],
                ns=MASTER,
            )
            sh(MASTER, f"ip link set rs-{ns[-3:]} master br-rs up")
            tun = ""
            if self.tunnels:
                # ipip and GUE arrive on the fallback tunl0, GRE on gre0; the VIPs live there
                tun = """
ip link set tunl0 up
ip addr add 203.0.113.13/32 dev tunl0
ip addr add 203.0.113.15/32 dev tunl0
ip fou add port 6080 gue
ip link set gre0 up
ip addr add 203.0.113.16/32 dev gre0
sysctl -qw net.ipv4.conf.tunl0.rp_filter=0 net.ipv4.conf.gre0.rp_filter=0
"""
            sh(
                ns,
                f"""
sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
ip addr add {RS4[ns]}/24 dev eth0
ip addr add {RS6[ns]}/64 dev eth0 nodad
ip link set eth0 up
ip route add default via 192.0.2.1
ip -6 route add default via 2001:db8:2::1
ip addr add 203.0.113.11/32 dev lo
{tun}""",
            )

    def _wait_servers(self, deadline_s: float = 120) -> None:
        # bash's /dev/tcp: no interpreter to start per probe (seconds each under TCG)
        probe = " && ".join(f"(exec 3<>/dev/tcp/{a}/8080)" for a in RS4.values())
        script = f"until {probe}; do [ $SECONDS -gt {deadline_s} ] && exit 1; sleep 0.5; done 2>/dev/null"
        if run(["bash", "-c", script], ns=MASTER, check=False, timeout=deadline_s + 30).returncode:
            logs = {ns: (self.workdir / f"serve-{ns}.log").read_text() for ns in SERVERS}
            raise LabError(f"real servers did not listen within {deadline_s}s: {logs}")

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        teardown_namespaces()
        shutil.rmtree(self.workdir, ignore_errors=True)


def teardown_namespaces() -> None:
    """Remove every lab namespace (the daemons and the IPVS tables in them go with it)."""
    netns_dir = Path("/run/netns")
    for ns in sorted(p.name for p in netns_dir.glob(PREFIX + "*")) if netns_dir.is_dir() else ():
        run(["ipvsadm", "--stop-daemon", "master"], ns=ns, check=False)
        run(["ipvsadm", "--stop-daemon", "backup"], ns=ns, check=False)
        run(["ip", "netns", "del", ns], check=False)


def build_lab(*, tunnels: bool) -> Lab:
    lab = Lab(Path(tempfile.mkdtemp(prefix="lvstop-lab-")), tunnels=tunnels, sctp=True)
    try:
        lab.build()
    except BaseException:
        lab.close()
        raise
    return lab
