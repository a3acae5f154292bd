"""What each IPVS sysctl and timeout means for traffic, worded for the value it has now: written once,
for the director view and for the warnings of a drain (Control), checked against the kernel's
Documentation/networking/ipvs-sysctl.rst."""

from __future__ import annotations

from lvstop.sources.procfs import ESTIMATOR_STOPPED

# name -> (meaning when 0, meaning when non-zero).
_SYSCTLS: dict[str, tuple[str, str]] = {
    "expire_nodest_conn": (
        "a weight-0 dest keeps its connections until they close; if the dest is deleted instead, "
        "their packets are dropped silently until the entries time out",
        "a weight-0 dest keeps its connections until they close; if the dest is deleted instead, "
        "each of its connections is expired when its next packet arrives and the client is told it is closed",
    ),
    "expire_quiescent_template": (
        "persistence templates keep sending returning clients to a weight-0 dest until they expire, "
        "so a drain of a persistent service takes at least the persistence timeout",
        "a template pointing at a weight-0 dest is expired when it would schedule a new connection, "
        "so returning clients move to live dests",
    ),
    "conn_reuse_mode": (
        "a new connection reusing a client port goes to the dest of the old one, even a weight-0 dest",
        "a new connection reusing a client port is scheduled afresh when safe (TCP in TIME_WAIT, NAT only; "
        "value 2 adds FIN_WAIT, for DR), so it can leave a weight-0 dest",
    ),
    "run_estimation": (
        "the kernel's estimation is suspended (its kthreads stop): kernel rates and counters stop moving; "
        "the first estimate after turning it back on is not accurate",
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
        "a NAT real server's packet with no connection entry is dropped without an ICMP error",
        "a NAT real server's packet with no connection entry gets an ICMP destination-unreachable back",
    ),
    "cache_bypass": (
        "packets with no available dest are dropped",
        "packets with no available dest go to their original (non-local) destination: transparent caches",
    ),
    "secure_tcp": (
        "the stricter TCP state table defense is off",
        "a stricter TCP state table is used; NAT waits for the full handshake before ESTABLISHED "
        "(1/2 automatic on low memory, 3 always)",
    ),
    "drop_entry": (
        "random entry dropping defense off",
        "entries in SYN-RECV are dropped at random to free memory (1/2 automatic on low memory, 3 always)",
    ),
    "drop_packet": (
        "packet dropping defense off",
        "1 packet in `rate` is dropped before forwarding "
        "(1/2 automatic on low memory, 3 always: am_droprate)",
    ),
    "schedule_icmp": (
        "ICMP without a connection is not scheduled",
        "ICMP packets are scheduled to dests like new connections",
    ),
    "ignore_tunneled": (
        "tunnelled packets of unknown protocols (ipip...) are load-balanced",
        "packets of unknown protocols (ipip...) are left alone by IPVS "
        "(no loops on a director that is a real server too)",
    ),
    "pmtu_disc": (
        "TUN dests: packets over the path MTU are fragmented, even with DF set",
        "packets with DF set over the path MTU are rejected with ICMP FRAG_NEEDED, whatever the forwarding",
    ),
    "snat_reroute": (
        "NAT replies are routed as if forwarded by the director",
        "NAT replies are re-routed as if they came from the director (matters with policy routing)",
    ),
    "sync_persist_mode": (
        "the sync daemon sends every connection",
        "for persistent services the sync daemon sends only the templates (backups may need sloppy_tcp)",
    ),
    "sync_version": (
        "sync messages use the original v0 format (for legacy backups)",
        "sync messages use the v1 format",
    ),
}

_SCALARS: dict[str, str] = {
    "am_droprate": "drop rate used by the always mode of the drop_packet defense",
    "amemthresh": "free-memory threshold (pages) below which the defenses switch on",
    "sync_threshold": "packets before a connection is first synced to the backup",
    "sync_period": "packets between resyncs of a connection",
    "sync_refresh_period": "seconds of timer change that resend an unchanged connection (0: by packets)",
    "sync_retries": "resends of a sync message, every sync_refresh_period/8 (0..3)",
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
