"""Network namespaces by name or path: found and checked before anything enters them.

A name is one `ip netns add` made under /var/run/netns; a path is any namespace file (/proc/PID/ns/net).
Kept apart from netlink.py so that a command checks `--netns` without loading the netlink code.
"""

from __future__ import annotations

import errno
import fcntl
import os

from lvstop.errors import SourceError
from lvstop.model import IssueKind

NETNS_RUN_DIR = "/var/run/netns"


def netns_path(netns: str) -> str:
    """A name under /var/run/netns (as `ip netns` makes them) or a path such as /proc/PID/ns/net."""
    return netns if "/" in netns else os.path.join(NETNS_RUN_DIR, netns)


NS_GET_NSTYPE = 0xB703  # ioctl on a namespace file: its CLONE_NEW* type (Linux 4.11+)
_NS_TYPES = {
    0x40000000: "network",
    0x00020000: "mount",
    0x02000000: "cgroup",
    0x04000000: "uts",
    0x08000000: "ipc",
    0x10000000: "user",
    0x20000000: "pid",
    0x00000080: "time",
}


def open_netns(path: str) -> int:
    """An fd of the network namespace file `path`, or SourceError saying why not: no such namespace or a
    file that is not a network namespace (MALFORMED: exit 5), not allowed to open it (NO_PERMISSION)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SourceError(
            IssueKind.MALFORMED, f"no network namespace {path} (`ip netns list` shows the names)"
        ) from None
    except OSError as e:
        raise SourceError(os_error_kind(e), f"cannot open network namespace {path}: {e.strerror}") from None
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.ENOTTY, errno.EINVAL):
            raise SourceError(os_error_kind(e), f"cannot inspect {path}: {e.strerror}") from None
        raise SourceError(
            IssueKind.MALFORMED,
            f"{path} is not a namespace file (network namespaces: /var/run/netns/NAME, /proc/PID/ns/net)",
        ) from None
    if kind != 0x40000000:  # CLONE_NEWNET; setns would fail with an EINVAL that says nothing
        os.close(fd)
        what = _NS_TYPES.get(kind, f"type {kind:#x}")
        raise SourceError(IssueKind.MALFORMED, f"{path} is a {what} namespace, not a network namespace")
    return fd


def os_error_kind(e: OSError) -> IssueKind:
    return IssueKind.NO_PERMISSION if e.errno in (errno.EPERM, errno.EACCES) else IssueKind.IO


def enter_netns(netns: str) -> None:
    """Moves the calling thread into `netns` (a name or a path); setns(2) moves only the caller."""
    from pyroute2 import netns as pyroute2_netns  # slow import (~0.1 s): only when a namespace is asked for

    path = netns_path(netns)
    fd = open_netns(path)
    try:
        pyroute2_netns.setns(fd, flags=0)  # an fd, never a name: pyroute2 would create a missing name
    except OSError as e:
        need = " (entering a network namespace needs CAP_SYS_ADMIN)" if e.errno == errno.EPERM else ""
        raise SourceError(
            os_error_kind(e), f"cannot enter network namespace {path}: {e.strerror}{need}"
        ) from None
    finally:
        os.close(fd)
