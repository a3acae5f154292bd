"""One line on what each IPVS sysctl and timeout means for traffic, worded for the value it has now."""

from __future__ import annotations

from lvstop.sources.procfs import ESTIMATOR_STOPPED

# name -> (meaning when 0, meaning when non-zero). Sources: Documentation/networking/ipvs-sysctl.rst.
_SYSCTLS: dict[str, tuple[str, str]] = {
    "expire_nodest_conn": (
        "packets of a deleted dest's connections are dropped until those entries time out; "
        "a weight-0 dest is not affected and keeps its connections",
        "a deleted dest's connections are expired on their next packet, so clients see a reset at once; "
        "a weight-0 dest is not affected",
    ),
    "expire_quiescent_template": (
        "persistence templates keep sending returning clients to a weight-0 dest until they expire, "
        "so a drain of a persistent service takes at least the persistence timeout",
        "templates pointing at a weight-0 dest are expired, so returning clients move to live dests",
    ),
    "conn_reuse_mode": (
        "a new connection reusing a client port stays on the old connection's dest, even if drained",
        "a new connection reusing a client port is rescheduled when safe (TIME_WAIT; bit 2 adds FIN_WAIT "
        "for DR), so it leaves a weight-0 dest",
    ),
    "run_estimation": (
        "the kernel's rate estimator is stopped: kernel rates read 0 and counters stop moving",
        "the kernel estimates rates every 2 s (EWMA); lvstop shows them as the smoothed rates",
    ),
    "conntrack": (
        "IPVS connections get no conntrack entries (cheaper; stateful firewall rules cannot see them)",
        "IPVS keeps conntrack entries for its connections, so stateful firewall/NAT rules see them",
    ),
    "sloppy_tcp": (
        "only a TCP SYN creates a connection: after a failover, established flows are dropped",
        "any TCP packet creates a connection: flows survive a failover to this director",
    ),
    "sloppy_sctp": (
        "only an SCTP INIT creates a connection",
        "any SCTP packet creates a connection: associations survive a failover",
    ),
    "backup_only": (
        "this director load-balances even while it runs a backup sync daemon",
        "while the backup sync daemon runs, this director does not load-balance (avoids DR/TUN loops)",
    ),
    "nat_icmp_send": (
        "no ICMP error is sent when a connection's dest is gone",
        "clients get an ICMP error when their connection's dest is gone",
    ),
    "cache_bypass": (
        "packets with no available dest are dropped",
        "packets with no available dest go to the original destination (transparent caches)",
    ),
    "secure_tcp": ("TCP state-timeout defense off", "TCP state-timeout defense on (1/2 automatic, 3 always)"),
    "drop_entry": (
        "random entry dropping defense off",
        "random entry dropping defense on (1/2 auto, 3 always)",
    ),
    "drop_packet": ("packet dropping defense off", "packet dropping defense on (1/2 auto, 3 always)"),
    "schedule_icmp": (
        "ICMP without a connection is not scheduled",
        "ICMP packets are scheduled to dests like new connections",
    ),
    "ignore_tunneled": (
        "tunnelled packets are load-balanced",
        "tunnelled packets are left alone by IPVS",
    ),
    "pmtu_disc": (
        "too-big packets are fragmented for TUN dests",
        "too-big packets for TUN dests are rejected with ICMP (path MTU discovery)",
    ),
    "snat_reroute": (
        "NAT replies keep their original route",
        "NAT replies are re-routed as if from the VIP (policy routing)",
    ),
    "sync_persist_mode": (
        "the sync daemon sends connections and templates as usual",
        "the sync daemon sends only persistence templates (less sync traffic)",
    ),
    "sync_version": ("sync messages use the old v0 format", "sync messages use the v1 format"),
}

_SCALARS: dict[str, str] = {
    "am_droprate": "drop rate used by the always mode of the drop_packet defense",
    "amemthresh": "free-memory threshold (pages) below which the defenses switch on",
    "sync_threshold": "packets before a connection is first synced to the backup",
    "sync_period": "packets between resyncs of a connection",
    "sync_refresh_period": "seconds between resyncs of a long-lived connection (0 = by packet count)",
    "sync_retries": "resend attempts of a sync message",
    "sync_qlen_max": "sync messages queued before the daemon drops new ones",
    "sync_sock_size": "sync socket buffer size (0 = system default)",
    "sync_ports": "sync threads/ports (more ports spread sync load over cores)",
    "est_nice": "nice value of the kernel's estimator threads",
}

TIMEOUTS: dict[str, str] = {
    "tcp": "an idle ESTABLISHED connection is forgotten after this (the client then gets a new dest)",
    "tcpfin": "a connection stays after a FIN for this long (holds a drained dest's inactive count)",
    "udp": "a UDP flow is kept this long after its last packet",
}


def est_cpulist(cpulist: str) -> str:
    """What net.ipv4.vs.est_cpulist (6.2+) means as it stands."""
    if not cpulist:
        return ESTIMATOR_STOPPED
    return f"the kernel's rate estimator kthreads may run on CPUs {cpulist} (est_nice sets their priority)"


def sysctl(name: str, value: int) -> str:
    """What `name=value` means for traffic; a plain description where the value is a quantity."""
    pair = _SYSCTLS.get(name)
    if pair is not None:
        return pair[1] if value else pair[0]
    return _SCALARS.get(name, "")
