"""Opens a source by name. Source modules are imported only when asked for, so `lvstop list --source
demo` never loads pyroute2 and a missing optional piece only matters to the kind that needs it.

Kinds: netlink, proc, demo, replay, remote, and `auto` (the default): netlink, falling back to /proc
when the kernel refuses netlink for lack of CAP_NET_ADMIN. /proc is world-readable but knows less
(no counters, rates, thresholds...), and the fallback says so through `warn`.

lvstop never loads ip_vs, and asking generic netlink for the IPVS family would: the kernel then runs
request_module() for it. So netlink is only opened when /proc/net/ip_vs shows the module is there (the
module is global; every namespace has the file while it is loaded); otherwise one clear NO_IPVS error.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, cast

from lvstop.errors import ControlError, SourceError
from lvstop.model import Dest, DestKey, IssueKind, ServiceKey, Snapshot
from lvstop.sources import Source

if TYPE_CHECKING:
    from lvstop.control import WeightTarget

KINDS = ("auto", "netlink", "proc", "demo", "replay", "remote")

READ_ONLY_MESSAGE = "read-only: lvstop reads /proc because it lacks CAP_NET_ADMIN; weight edits need it"

NO_IPVS_MESSAGE = (
    "ip_vs is not loaded: this kernel has no IPVS state to show (no {path}); lvstop never loads it, "
    "'modprobe ip_vs' or the first ipvsadm/keepalived rule does"
)


def open_source(
    kind: str = "auto",
    *,
    netns: str | None = None,
    proc_root: str = "/proc",
    replay: str | None = None,
    connect: str | None = None,
    seed: int = 1,
    warn: Callable[[str], None],
    clock: Callable[[], float] = time.time,
    conns_only: bool = False,
) -> Source:
    """A ready source of the given kind. Raises SourceError when it cannot be opened at all and
    ValueError for a kind it does not know or a missing replay path / URL (caller's mistakes).
    `clock` drives the demo director (tests give it a fake one). `conns_only`: the source is read
    for its connection table alone, which auto and netlink read from /proc itself (no netlink command
    lists connections): /proc is opened then, so `lvstop list -c` loads no netlink code (another
    namespace still needs netlink's thread there)."""
    if netns is not None and kind in ("auto", "netlink"):
        _require_netns(netns)  # the user's mistake first, before what the kernel lacks
    if kind in ("auto", "netlink", "proc") and not os.path.isdir(proc_root):
        raise ValueError(f"--proc-root {proc_root}: no such directory")  # not "ip_vs is not loaded"
    if conns_only and kind in ("auto", "netlink") and netns is None:
        kind = "proc"
    if kind == "auto":
        return _open_auto(netns, proc_root, warn)
    if kind == "netlink":
        _require_ip_vs(proc_root)
        from lvstop.sources.netlink import NetlinkSource

        source: Source = NetlinkSource(netns=netns, proc_root=proc_root)
        return source
    if kind == "proc":
        if conns_only:
            _require_ip_vs(proc_root)  # the same error as netlink's when ip_vs is not loaded
        if netns is not None:
            raise ValueError(
                "the proc source reads the namespace of its --proc-root (use /proc/PID of a process "
                "inside it), not --netns"
            )
        from lvstop.sources.procfs import ProcSource

        source = ProcSource(root=proc_root)
        return source
    if kind == "demo":
        from lvstop.sources.sim import SimSource

        source = SimSource(seed=seed, clock=clock)
        return source
    if kind == "replay":
        if not replay:
            raise ValueError("the replay source needs a recording (--replay FILE)")
        from lvstop.sources.replay import ReplaySource

        source = ReplaySource(replay)
        return source
    if kind == "remote":
        if not connect:
            raise ValueError("the remote source needs an exporter URL (--connect URL)")
        from lvstop.sources.remote import RemoteSource

        source = RemoteSource(connect)
        return source
    raise ValueError(f"unknown source {kind!r} (choose from {', '.join(KINDS)})")


def _require_netns(netns: str) -> None:
    from lvstop.sources.netns import netns_path, open_netns

    os.close(open_netns(netns_path(netns)))


def _require_ip_vs(proc_root: str) -> None:
    path = os.path.join(proc_root, "net", "ip_vs")
    if not os.path.exists(path):
        raise SourceError(IssueKind.NO_IPVS, NO_IPVS_MESSAGE.format(path=path))


def _proc_after(error: SourceError, proc_root: str, warn: Callable[[str], None]) -> Source:
    """The /proc source standing in for netlink after the kernel refused it with `error`."""
    from lvstop.sources.procfs import ProcSource

    warn(f"netlink: {error}; reading {os.path.join(proc_root, 'net', 'ip_vs')} instead")
    return ProcSource(root=proc_root)


def _open_auto(netns: str | None, proc_root: str, warn: Callable[[str], None]) -> Source:
    _require_ip_vs(proc_root)
    from lvstop.sources.netlink import NetlinkSource

    try:
        netlink = NetlinkSource(netns=netns, proc_root=proc_root)
    except SourceError as e:
        # /proc shows the reader's own namespace: it cannot stand in for another one.
        if netns is not None or e.kind is not IssueKind.NO_PERMISSION:
            raise
        return AutoSource(_proc_after(e, proc_root, warn), proc_root, warn)
    return netlink if netns is not None else AutoSource(netlink, proc_root, warn)


class AutoSource:
    """netlink until the kernel refuses it for lack of CAP_NET_ADMIN, then /proc for good.

    Netlink only learns about permissions on its first request, hence a wrapper rather than a probe
    at open time (a probe would cost a whole extra read). `active` is the source in use (a ProcSource
    from the start when netlink was refused at open); `netlink` the NetlinkSource, None once /proc
    took over: writes go through write_target(), which refuses them from then on.
    """

    def __init__(self, first: Source, proc_root: str, warn: Callable[[str], None]) -> None:
        self.active: Source = first
        self.name = first.name
        self.netlink: Source | None = None if self.read_only else first
        self._proc_root = proc_root
        self._warn = warn

    def read(self) -> Snapshot:
        try:
            return self.active.read()
        except SourceError as e:
            if self.name == "proc" or e.kind is not IssueKind.NO_PERMISSION:
                raise
            self.active.close()
            self.active = _proc_after(e, self._proc_root, self._warn)
            self.name = self.active.name
            self.netlink = None
        return self.active.read()

    @property
    def read_only(self) -> bool:
        """Reading /proc: weight edits need the CAP_NET_ADMIN whose lack made us fall back."""
        return self.name == "proc"

    def conn_lines(self, sync: bool = False) -> Iterator[str]:
        return self.active.conn_lines(sync)

    def close(self) -> None:
        self.active.close()


class AutoWrites:
    """Weight edits through `target` while `auto` reads netlink; refused (503) once it reads /proc.

    Checked on every call, as the fallback happens on a read, after the write path was built.
    """

    def __init__(self, auto: AutoSource, target: WeightTarget | None) -> None:
        self.auto = auto
        self._target = target

    def _live(self) -> WeightTarget:
        if self._target is None or self.auto.read_only:
            raise ControlError(READ_ONLY_MESSAGE, status=503)
        return self._target

    def read(self) -> Snapshot:
        return self._live().read()

    def get_dest(self, skey: ServiceKey, dkey: DestKey) -> Dest | None:
        return self._live().get_dest(skey, dkey)

    def set_dest(self, skey: ServiceKey, dest: Dest) -> None:
        self._live().set_dest(skey, dest)


def write_target(source: Source) -> WeightTarget | None:
    """What a Control in this process writes through for `source`; None for read-only kinds."""
    if isinstance(source, AutoSource):
        return AutoWrites(source, _as_target(source.netlink))
    return _as_target(source)


def _as_target(source: Source | None) -> WeightTarget | None:
    """`source` itself if it has the write primitives (NetlinkSource, SimSource)."""
    if source is None or not (hasattr(source, "get_dest") and hasattr(source, "set_dest")):
        return None
    return cast("WeightTarget", source)
