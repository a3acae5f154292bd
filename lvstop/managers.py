"""What keepalived and ldirectord manage: their configurations parsed into the services they own.

Both put their own weights back: keepalived on a reload or restart, and when its checker sees a real
server come up (with inhibit_on_failure it sets a failing server's weight to 0, else it removes the server
and adds it back); ldirectord likewise (quiescent=yes: weight 0, else removed). lvstop warns on an edit of
a service they manage and says how the edit will be undone. Parsing is pure: files are read through a
`read` callable, so a manager in another mount namespace is read through /proc/PID/root.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from lvstop.codec import JsonReader, dest_key_to_dict, service_key_to_dict
from lvstop.errors import ParseError
from lvstop.model import AF_INET, AF_INET6, DestKey, Protocol, ServiceKey, normalize_address
from lvstop.sources.netns import netns_path

if TYPE_CHECKING:
    from lvstop.control import WeightManagers

KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
LDIRECTORD_CONF = "/etc/ha.d/ldirectord.cf"
_PROTOCOLS = {"TCP": Protocol.TCP, "UDP": Protocol.UDP, "SCTP": Protocol.SCTP}
_MAX_INCLUDE_DEPTH = 8

Reader = Callable[[str], str]
Lister = Callable[[str], list[str]]


@dataclass(frozen=True, slots=True)
class ManagedService:
    """One service a manager's configuration owns."""

    manager: str  # keepalived | ldirectord
    key: ServiceKey
    block: str  # the configuration's own words: "virtual_server 203.0.113.10 80", "virtual=203.0.113.10:80"
    where: str  # file:line of that block
    weights: Mapping[DestKey, int] = field(default_factory=lambda: MappingProxyType({}))
    keeps_failed: bool = False  # inhibit_on_failure / quiescent=yes: a failing server stays at weight 0

    def undo(self, dest: DestKey | None = None) -> str:
        """How this manager will undo a weight lvstop sets."""
        configured = self.weights.get(dest) if dest is not None else None
        back = f"weight {configured}" if configured is not None else "its configured weight"
        on_fail = (
            "sets a failing server to weight 0 and back when it recovers"
            if self.keeps_failed
            else "removes a failing server and adds it back at its configured weight when it recovers"
        )
        return f"{self.manager} puts {back} back on a reload or restart, and {on_fail}"


# --------------------------------------------------------------------------------------------- keepalived


@dataclass
class _Stmt:
    words: list[str]
    where: tuple[str, int]
    children: list[_Stmt] | None = None


def _tokens(text: str, path: str) -> Iterator[tuple[list[str], int]]:
    """Words of each line with braces split out; '#' and '!' start comments anywhere."""
    for n, line in enumerate(text.splitlines(), 1):
        for mark in ("#", "!"):
            line = line.split(mark, 1)[0]
        words = line.replace("{", " { ").replace("}", " } ").split()
        if words:
            yield words, n


def _statements(text: str, path: str) -> list[_Stmt]:
    root: list[_Stmt] = []
    stack: list[list[_Stmt]] = [root]
    for words, n in _tokens(text, path):
        cur: list[str] = []
        for w in [*words, "\n"]:
            if w == "{":
                if cur:
                    stack[-1].append(_Stmt(cur, (path, n)))
                    cur = []
                elif not stack[-1] or stack[-1][-1].children is not None:
                    raise ParseError("'{' opens no block", source=path, line=n)
                block = stack[-1][-1]
                block.children = []
                stack.append(block.children)
            elif w == "}":
                if cur:
                    stack[-1].append(_Stmt(cur, (path, n)))
                    cur = []
                if len(stack) == 1:
                    raise ParseError("'}' closes no block", source=path, line=n)
                stack.pop()
            elif w == "\n":
                if cur:
                    stack[-1].append(_Stmt(cur, (path, n)))
            else:
                cur.append(w)
    if len(stack) > 1:
        raise ParseError("a block is not closed ('}' missing)", source=path)
    return root


def _expand_includes(stmts: list[_Stmt], read: Reader, listdir: Lister, depth: int) -> list[_Stmt]:
    out: list[_Stmt] = []
    for s in stmts:
        if s.words[0] == "include" and s.children is None:
            path, line = s.where
            if len(s.words) != 2:
                raise ParseError("include takes one file name or pattern", source=path, line=line)
            if depth >= _MAX_INCLUDE_DEPTH:
                raise ParseError("includes nested too deep (a loop?)", source=path, line=line)
            pattern = os.path.join(os.path.dirname(path), s.words[1])
            for f in _glob(pattern, listdir):
                out += _expand_includes(_statements(read(f), f), read, listdir, depth + 1)
            continue
        if s.children is not None:
            s.children = _expand_includes(s.children, read, listdir, depth)
        out.append(s)
    return out


def _glob(pattern: str, listdir: Lister) -> list[str]:
    """Files matching a pattern whose wildcards are in its last part (keepalived's usual `conf.d/*.conf`)."""
    directory, name = os.path.split(pattern)
    if not any(c in name for c in "*?["):
        return [pattern]
    try:
        names = listdir(directory)
    except OSError:
        return []
    return [os.path.join(directory, n) for n in sorted(names) if fnmatch.fnmatchcase(n, name)]


def _addr(text: str, where: tuple[str, int]) -> tuple[int, str]:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ParseError(f"not an IP address: {text!r}", source=where[0], line=where[1]) from None
    return (AF_INET6 if ip.version == 6 else AF_INET), str(ip)


def _port(text: str, where: tuple[str, int]) -> int:
    if text.isdigit() and int(text) < 65536:
        return int(text)
    raise ParseError(f"not a port: {text!r}", source=where[0], line=where[1])


def _range(text: str, where: tuple[str, int]) -> list[tuple[int, str]]:
    """keepalived's `192.0.2.1-10` (last IPv4 byte) or `2001:db8::1-a` (last IPv6 group, hex)."""
    base, sep, last = text.rpartition("-")
    if not sep or ("." not in base and ":" not in base):
        return [_addr(text, where)]
    family, first = _addr(base, where)
    ip = ipaddress.ip_address(first)
    try:
        end = int(last, 16 if family == AF_INET6 else 10)
    except ValueError:
        raise ParseError(f"not an address range: {text!r}", source=where[0], line=where[1]) from None
    low = int(ip) & (0xFFFF if family == AF_INET6 else 0xFF)
    if not low <= end <= (0xFFFF if family == AF_INET6 else 0xFF):
        raise ParseError(f"address range runs backwards or over: {text!r}", source=where[0], line=where[1])
    return [(family, str(ipaddress.ip_address(int(ip) + i))) for i in range(end - low + 1)]


def _value(s: _Stmt, key: str) -> str | None:
    for c in s.children or ():
        if c.words[0] == key:
            if len(c.words) < 2:
                raise ParseError(f"{key} needs a value", source=c.where[0], line=c.where[1])
            return c.words[1]
    return None


def _flag(s: _Stmt, key: str) -> bool:
    return any(c.words[0] == key for c in s.children or ())


def _group_keys(group: _Stmt, protocol: Protocol, fwmark_family: int) -> list[ServiceKey]:
    keys: list[ServiceKey] = []
    for c in group.children or ():
        if c.words[0] == "fwmark":
            keys.append(ServiceKey.mark(_port(c.words[1], c.where) if len(c.words) > 1 else 0, fwmark_family))
        elif len(c.words) >= 2:
            port = _port(c.words[1], c.where)
            keys += [ServiceKey(f, protocol, a, port) for f, a in _range(c.words[0], c.where)]
        else:
            raise ParseError(
                f"unexpected in a group: {' '.join(c.words)}", source=c.where[0], line=c.where[1]
            )
    return keys


def parse_keepalived(path: str, read: Reader, listdir: Lister = os.listdir) -> list[ManagedService]:
    """The services keepalived's configuration at `path` (includes followed) manages."""
    stmts = _expand_includes(_statements(read(path), path), read, listdir, 0)
    groups = {s.words[1]: s for s in stmts if s.words[0] == "virtual_server_group" and len(s.words) > 1}
    out: list[ManagedService] = []
    for s in stmts:
        if s.words[0] != "virtual_server":
            continue
        where = s.where
        protocol = _PROTOCOLS.get((_value(s, "protocol") or "TCP").upper())
        if protocol is None:
            raise ParseError(f"unknown protocol {_value(s, 'protocol')!r}", source=where[0], line=where[1])
        family = AF_INET6 if (_value(s, "ip_family") or "inet") == "inet6" else AF_INET
        args = s.words[1:]
        if args[:1] == ["group"] and len(args) == 2:
            if args[1] not in groups:
                raise ParseError(f"no virtual_server_group {args[1]!r}", source=where[0], line=where[1])
            keys = _group_keys(groups[args[1]], protocol, family)
        elif args[:1] == ["fwmark"] and len(args) == 2:
            keys = [ServiceKey.mark(_port(args[1], where), family)]
        elif len(args) == 2:
            fam, addr = _addr(args[0], where)
            keys = [ServiceKey(fam, protocol, addr, _port(args[1], where))]
        else:
            raise ParseError(f"cannot read virtual_server {' '.join(args)}", source=where[0], line=where[1])
        weights: dict[DestKey, int] = {}
        inhibit = _flag(s, "inhibit_on_failure")
        for r in s.children or ():
            if r.words[0] in ("real_server", "sorry_server") and len(r.words) >= 3:
                fam, addr = _addr(r.words[1], r.where)
                dkey = DestKey(fam, addr, _port(r.words[2], r.where))
                w = _value(r, "weight")
                weights[dkey] = _port(w, r.where) if w is not None else 1
                inhibit = inhibit or _flag(r, "inhibit_on_failure")
        block = " ".join(s.words)
        text_where = f"{where[0]}:{where[1]}"
        out += [
            ManagedService("keepalived", k, block, text_where, MappingProxyType(weights), inhibit)
            for k in keys
        ]
    return out


# --------------------------------------------------------------------------------------------- ldirectord


def _hostport(text: str, where: tuple[str, int]) -> tuple[int, str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ParseError(f"expected address:port, got {text!r}", source=where[0], line=where[1])
    host = host.strip("[]")
    if not port.isdigit():
        try:
            port = str(socket.getservbyname(port))
        except OSError:
            raise ParseError(f"unknown port {port!r}", source=where[0], line=where[1]) from None
    family, addr = _addr(host, where)
    return family, normalize_address(family, addr), _port(port, where)


def parse_ldirectord(path: str, read: Reader) -> list[ManagedService]:
    """The services of an ldirectord.cf: `virtual=` blocks (indented lines belong to the last one)."""
    quiescent_default = True  # ldirectord's default
    blocks: list[tuple[str, tuple[str, int], dict[str, list[tuple[str, tuple[str, int]]]]]] = []
    for n, raw in enumerate(read(path).splitlines(), 1):
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        name, sep, value = line.strip().partition("=")
        if not sep:
            raise ParseError(f"expected name=value, got {line.strip()!r}", source=path, line=n)
        name, value = name.strip(), value.strip()
        if line[0] in " \t":
            if not blocks:
                raise ParseError(f"{name}= is indented but follows no virtual=", source=path, line=n)
            blocks[-1][2].setdefault(name, []).append((value, (path, n)))
        elif name == "virtual":
            blocks.append((value, (path, n), {}))
        elif name == "quiescent":
            quiescent_default = value.lower() == "yes"
    out: list[ManagedService] = []
    for value, where, opts in blocks:
        proto = (opts.get("protocol", [("tcp", where)])[0][0]).lower()
        if value.isdigit():
            reals = [r.split()[0] for r, _ in opts.get("real", [])]
            key = ServiceKey.mark(int(value), AF_INET6 if any(r.startswith("[") for r in reals) else AF_INET)
        else:
            protocol = _PROTOCOLS.get(proto.upper())
            if protocol is None:
                raise ParseError(f"unknown protocol {proto!r}", source=where[0], line=where[1])
            fam, addr, port = _hostport(value, where)
            key = ServiceKey(fam, protocol, addr, port)
        weights: dict[DestKey, int] = {}
        for real, rwhere in opts.get("real", []):
            parts = real.split()
            fam, addr, port = (
                _hostport(parts[0], rwhere) if ":" in parts[0] else (*_addr(parts[0], rwhere), 0)
            )
            weights[DestKey(fam, addr, port)] = _port(parts[2], rwhere) if len(parts) > 2 else 1
        quiescent = (
            opts.get("quiescent", [("yes" if quiescent_default else "no", where)])[0][0].lower() == "yes"
        )
        out.append(
            ManagedService(
                "ldirectord",
                key,
                f"virtual={value}",
                f"{where[0]}:{where[1]}",
                MappingProxyType(weights),
                quiescent,
            )
        )
    return out


# --------------------------------------------------------------------------------------------- discovery


def config_path(name: str, cmdline: list[str]) -> str:
    """The configuration file a running manager was started with (its command line), else its default."""
    args = cmdline[1:]
    if name == "keepalived":
        for i, a in enumerate(args):
            if a in ("-f", "--use-file") and i + 1 < len(args):
                return args[i + 1]
            if a.startswith("--use-file="):
                return a.split("=", 1)[1]
            if a.startswith("-f") and len(a) > 2:
                return a[2:]
        return KEEPALIVED_CONF
    # ldirectord [options] [configfile] {start|stop|...}; run as `perl /usr/sbin/ldirectord ...`
    words = [a for a in args if not a.startswith("-") and not a.endswith("ldirectord")]
    files = [a for a in words if a not in ("start", "stop", "restart", "reload", "status", "force-reload")]
    if files:
        f = files[0]
        return f if "/" in f else os.path.join("/etc/ha.d", f)
    return LDIRECTORD_CONF


def in_root(root: str, path: str) -> str:
    """`path` as seen from a process whose root is `root` (/proc/PID/root): its mount namespace."""
    return os.path.join(root, path.lstrip("/"))


def managed_services(name: str, pid: int, proc_root: str = "/proc") -> list[ManagedService]:
    """What the running manager `pid` manages, read from its configuration inside its mount namespace.

    Raises OSError (unreadable) or ParseError (malformed): the caller says so and warns generically.
    """
    with open(os.path.join(proc_root, str(pid), "cmdline"), "rb") as f:
        raw = f.read()
    cmdline = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    root = os.path.join(proc_root, str(pid), "root")
    path = config_path(name, cmdline)

    def read(p: str) -> str:
        with open(in_root(root, p), encoding="utf-8", errors="replace") as f:
            return f.read()

    def listdir(d: str) -> list[str]:
        return os.listdir(in_root(root, d))

    if name == "keepalived":
        return parse_keepalived(path, read, listdir)
    return parse_ldirectord(path, read)


def _parent(pid: int, proc_root: str) -> int | None:
    try:
        with open(os.path.join(proc_root, str(pid), "stat"), encoding="ascii", errors="replace") as f:
            return int(f.read().rpartition(")")[2].split()[1])  # after "(comm)": state, ppid
    except (OSError, ValueError, IndexError):
        return None


def _netns_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def claims(
    running: tuple[tuple[str, int], ...], proc_root: str = "/proc", netns: str | None = None
) -> list[tuple[str, int, list[ManagedService] | str]]:
    """(name, pid, what it manages or why its configuration could not be read) of each running manager
    of the IPVS of network namespace `netns` (None: ours); keepalived's checker children are left out,
    their parent speaks for them."""
    here = _netns_id(netns_path(netns) if netns else os.path.join(proc_root, "self", "ns", "net"))
    pids = {pid for _, pid in running}
    out: list[tuple[str, int, list[ManagedService] | str]] = []
    for name, pid in running:
        if _parent(pid, proc_root) in pids:
            continue
        theirs = _netns_id(os.path.join(proc_root, str(pid), "ns", "net"))
        if here is not None and theirs is not None and here != theirs:
            continue  # it manages another namespace's IPVS
        try:
            out.append((name, pid, managed_services(name, pid, proc_root)))
        except (OSError, ParseError) as e:
            out.append((name, pid, str(e)))
    return out


Claim = tuple[int, ManagedService]  # a running manager's pid, and its block that names the service


def by_service(
    found: list[tuple[str, int, list[ManagedService] | str]],
) -> tuple[dict[ServiceKey, tuple[Claim, ...]], list[str]]:
    """claims() per service: the running managers' blocks that name it; and one line per manager whose
    configuration could not be read (it may manage any service)."""
    owned: dict[ServiceKey, tuple[Claim, ...]] = {}
    unread: list[str] = []
    for name, pid, what in found:
        if isinstance(what, str):
            unread.append(f"{name} (pid {pid}) is running and its configuration could not be read ({what})")
            continue
        for m in what:
            owned[m.key] = (*owned.get(m.key, ()), (pid, m))
    return owned, unread


ManagedMap = Mapping[ServiceKey, tuple[Claim, ...]]
CLAIMS_TTL = 30.0  # seconds between re-reads of the managers' configurations (a reload keeps its pid)


class ManagedLookup:
    """claims() per service, re-read at most every CLAIMS_TTL seconds and at once when the running
    managers change: for the dashboard (on a feed's builder thread) and the exporter's /api/v1/managed.
    It reads /proc and the managers' files."""

    def __init__(
        self,
        netns: str | None = None,
        running: WeightManagers | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from lvstop.control import WeightManagers  # control imports this module

        self.netns = netns
        self.running = running if running is not None else WeightManagers()
        self._clock = clock
        self._cache: tuple[tuple[tuple[str, int], ...], float, ManagedMap, tuple[str, ...]] | None = None
        self._lock = threading.Lock()

    def __call__(self) -> tuple[ManagedMap, tuple[str, ...]]:
        """(service -> the blocks that name it, a line per manager whose configuration is unreadable)."""
        with self._lock:
            running = self.running()
            now = self._clock()
            cache = self._cache
            if cache is None or cache[0] != running or not cache[1] <= now < cache[1] + CLAIMS_TTL:
                owned, unread = (
                    by_service(claims(running, self.running.proc_root, self.netns)) if running else ({}, [])
                )
                cache = self._cache = (running, now, owned, tuple(unread))
            return cache[2], cache[3]


def managed_to_dict(owned: ManagedMap, unread: tuple[str, ...]) -> dict[str, Any]:
    """GET /api/v1/managed: the services keepalived or ldirectord manage, and the managers whose
    configuration could not be read (they may manage any service)."""
    return {
        "services": [
            {
                "service": service_key_to_dict(key),
                "managers": [
                    {
                        "manager": m.manager,
                        "pid": pid,
                        "block": m.block,
                        "where": m.where,
                        "keeps_failed": m.keeps_failed,
                        "weights": [{"dest": dest_key_to_dict(d), "weight": w} for d, w in m.weights.items()],
                    }
                    for pid, m in found
                ],
            }
            for key, found in owned.items()
        ],
        "unread": list(unread),
    }


def managed_from_dict(doc: object) -> tuple[ManagedMap, tuple[str, ...]]:
    """managed_to_dict's form back (a remote exporter's /api/v1/managed); ParseError naming the path
    of the first value that is not what managed_to_dict writes."""
    r = JsonReader(doc, "")
    return dict(r.items("services", _read_claims)), r.texts("unread")


def _read_claims(r: JsonReader) -> tuple[ServiceKey, tuple[Claim, ...]]:
    key = r.service_key("service")

    def claim(m: JsonReader) -> Claim:
        weights = {w.dest_key("dest"): w.integer("weight") for w in m.items("weights", lambda w: w)}
        manager = ManagedService(
            m.text("manager"),
            key,
            m.text("block"),
            m.text("where"),
            MappingProxyType(weights),
            m.boolean("keeps_failed"),
        )
        return m.integer("pid"), manager

    return key, r.items("managers", claim)


def edit_warnings(
    running: tuple[tuple[str, int], ...],
    skey: ServiceKey,
    dkey: DestKey,
    proc_root: str = "/proc",
    netns: str | None = None,
) -> tuple[str, ...]:
    """Warnings for an edit of `dkey` in `skey` (in the IPVS of network namespace `netns`, None: ours): one
    per running manager of that namespace that manages that service, and one per manager whose
    configuration cannot be read, since it may."""
    out: list[str] = []
    for name, pid, owned in claims(running, proc_root, netns):
        if isinstance(owned, str):
            out.append(
                f"{name} (pid {pid}) is running and its configuration could not be read ({owned}): "
                "it may manage this service and put its own weight back"
            )
            continue
        out += [
            f"{name} (pid {pid}) manages {skey} ({m.block}, {m.where}): {m.undo(dkey)}"
            for m in owned
            if m.key == skey
        ]
    return tuple(out)
