"""The director view: sync daemons, timeouts, sysctls and what each means."""

from __future__ import annotations

from dataclasses import dataclass

from lvstop import explain
from lvstop.model import EXPLAINING_SYSCTLS, Snapshot
from lvstop.tui import units
from lvstop.tui.viewmodel.tones import GOOD, WARN


@dataclass(frozen=True, slots=True)
class Setting:
    section: str
    name: str
    value: str
    meaning: str
    tone: str = ""


def director_settings(snap: Snapshot | None) -> list[Setting]:
    if snap is None:
        return []
    out: list[Setting] = []
    if snap.daemons:
        for dm in snap.daemons:
            extra = ", ".join(
                f"{k} {v}"
                for k, v in (
                    ("maxlen", dm.maxlen),
                    ("group", dm.group or dm.group6),
                    ("port", dm.port),
                    ("ttl", dm.ttl),
                )
                if v
            )
            out.append(
                Setting(
                    "Sync daemons",
                    dm.state.name.lower(),
                    f"{dm.mcast_ifn} syncid {dm.syncid}",
                    (
                        "sends connection state to the backup"
                        if dm.state.name == "MASTER"
                        else "receives connection state from the master"
                    )
                    + (f" ({extra})" if extra else ""),
                    GOOD,
                )
            )
    else:
        out.append(
            Setting(
                "Sync daemons",
                "none",
                "-",
                "no connection sync: a failover drops every established connection",
                WARN,
            )
        )
    if snap.timeouts is not None:
        for name in ("tcp", "tcpfin", "udp"):
            seconds = getattr(snap.timeouts, name)
            out.append(
                Setting("Timeouts", name, f"{seconds}s ({units.duration(seconds)})", explain.TIMEOUTS[name])
            )
    names = [n for n in EXPLAINING_SYSCTLS if n in snap.sysctls]
    names += sorted(n for n in snap.sysctls if n not in EXPLAINING_SYSCTLS)
    for n in names:
        meaning = explain.sysctl(n, snap.sysctls[n])
        if n == "run_estimation" and snap.est_cpulist == "":
            meaning = explain.est_cpulist("")  # the switch says on, but no kthread runs
        out.append(Setting("Sysctls (net.ipv4.vs)", n, str(snap.sysctls[n]), meaning))
    if snap.est_cpulist is not None:
        shown, tone = (snap.est_cpulist, "") if snap.est_cpulist else ("(empty)", WARN)
        out.append(
            Setting(
                "Sysctls (net.ipv4.vs)", "est_cpulist", shown, explain.est_cpulist(snap.est_cpulist), tone
            )
        )
    if snap.version or snap.conn_tab_size:
        out.append(
            Setting(
                "IPVS",
                "version",
                snap.version or "-",
                f"connection hash table of {snap.conn_tab_size} buckets" if snap.conn_tab_size else "",
            )
        )
    return out
