"""The health-check configuration: one YAML file, a list of checks under `checks:`.

```yaml
checks:
  - service: "TCP 203.0.113.10:443"   # ipvsadm-style; "FWM 1"; "*" for every service
    dest: 192.0.2.11                  # optional: one real server (ADDR, ADDR:PORT, [V6]:PORT)
    type: https                       # tcp | http | https | dns | exec | agent
    path: /healthz
    expect_status: [200, 204]
    interval: 2s
```

Parsing is pure: text in, `HealthConfig` out. Every refusal (an unknown key, a bad value, an unknown
type) is one `HealthConfigError` naming the file, the line and the key, which the commands turn into
one line on stderr and exit status 2. Defaults (documented in the README): interval 5 s, timeout 2 s,
fall 3, rise 2 (HAProxy's: one lucky answer from a flapping server does not put it back), jitter a
tenth of the interval. Acting (`act`, `sorry_server`, `slow_start`) is off unless `act: true` or
`--health.act` turns it on; lvstop/health/act.py decides what it does.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lvstop.errors import LvstopError
from lvstop.model import AF_INET, AF_INET6, Protocol, ServiceKey, normalize_address

TYPES = ("tcp", "http", "https", "dns", "exec", "agent")
DEFAULT_INTERVAL = 5.0
DEFAULT_TIMEOUT = 2.0
DEFAULT_FALL = 3
DEFAULT_RISE = 2
MAX_DURATION = 86400.0
DNS_TYPES = ("A", "AAAA", "CNAME", "NS", "PTR", "TXT", "MX", "SOA")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_COMMON = (
    "service",
    "dest",
    "type",
    "name",
    "interval",
    "timeout",
    "fall",
    "rise",
    "jitter",
    "port",
    "source",
    "act",
    "sorry_server",
    "slow_start",
)
_BY_TYPE: dict[str, tuple[str, ...]] = {
    "tcp": (),
    "http": ("method", "path", "host", "expect_status", "expect_body", "expect_body_regex"),
    "https": (
        "method",
        "path",
        "host",
        "expect_status",
        "expect_body",
        "expect_body_regex",
        "tls_verify",
        "tls_ca",
    ),
    "dns": ("query", "qtype", "transport", "expect"),
    "exec": ("command",),
    "agent": ("send",),
}


class HealthConfigError(LvstopError):
    """A configuration the checks cannot run with: `file:line: key 'k': why`."""

    def __init__(self, file: str, line: int, key: str | None, reason: str) -> None:
        self.file, self.line, self.key, self.reason = file, line, key, reason
        where = f"{file}:{line}: " if line else f"{file}: "
        where += f"key '{key}': " if key else ""
        super().__init__(f"health config {where}{reason}")


@dataclass(frozen=True, slots=True)
class DestMatch:
    """`dest:` of a check: an address, and a port when given (0: any port)."""

    family: int
    address: str
    port: int = 0


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """One entry of `checks:`, validated; `line` is where it starts in the file."""

    type: str
    service: ServiceKey | None  # None: every service ("*")
    line: int
    name: str = ""
    dest: DestMatch | None = None
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    fall: int = DEFAULT_FALL
    rise: int = DEFAULT_RISE
    jitter: float = DEFAULT_INTERVAL / 10
    port: int = 0  # 0: the dest's own port (agent: required, the agent's port)
    source: str | None = None  # local address the probes leave from
    # acting (--health.act): None follows the flag
    act: bool | None = None
    sorry_server: DestMatch | None = None  # a dest of `service` kept at weight 0, raised when all are down
    slow_start: float = 0.0  # seconds a restore ramps over (0: the whole weight at once)
    # http / https
    method: str = "GET"
    path: str = "/"
    host: str | None = None
    expect_status: frozenset[int] = field(default_factory=lambda: frozenset(range(200, 400)))
    expect_body: str | None = None
    expect_body_regex: re.Pattern[str] | None = None
    tls_verify: bool = True
    tls_ca: str | None = None
    # dns
    query: str = ""
    qtype: str = "A"
    transport: str | None = None  # udp | tcp; None: the service's protocol (udp unless TCP)
    expect: tuple[str, ...] = ()
    # exec
    command: tuple[str, ...] = ()
    # agent
    send: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.type

    def acts(self, flag: bool) -> bool:
        """Whether this check drains and restores, given --health.act."""
        return flag if self.act is None else self.act


@dataclass(frozen=True, slots=True)
class HealthConfig:
    file: str
    checks: tuple[CheckSpec, ...]

    @property
    def sorry_servers(self) -> dict[ServiceKey, DestMatch]:
        """Per service, the sorry server its checks name (parse() refused two different ones)."""
        return {c.service: c.sorry_server for c in self.checks if c.service and c.sorry_server}


def load(path: str) -> HealthConfig:
    """Reads and parses `path`; a file that cannot be read is refused like a bad one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise HealthConfigError(path, 0, None, f"cannot read: {reason}") from None
    return parse(text, path)


def parse(text: str, file: str = "<health config>") -> HealthConfig:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise HealthConfigError(file, mark.line + 1 if mark else 0, None, f"not YAML: {problem}") from None
    if root is None:
        raise HealthConfigError(file, 1, None, "empty file: expected a mapping with a 'checks:' list")
    top = _mapping(file, root, None)
    for key, (knode, _) in top.items():
        if key != "checks":
            raise HealthConfigError(file, _line(knode), key, "unknown key (the file holds 'checks:' only)")
    if "checks" not in top:
        raise HealthConfigError(file, _line(root), "checks", "missing: a list of checks")
    knode, seq = top["checks"]
    if not isinstance(seq, yaml.SequenceNode) or not seq.value:
        raise HealthConfigError(file, _line(knode), "checks", "expected a non-empty list of checks")
    checks = tuple(_check(file, item) for item in seq.value)
    sorry: dict[ServiceKey, CheckSpec] = {}
    for spec, item in zip(checks, seq.value, strict=True):
        if spec.service is None or spec.sorry_server is None:
            continue
        first = sorry.setdefault(spec.service, spec)
        if first.sorry_server != spec.sorry_server:
            node = _mapping(file, item, "checks")["sorry_server"][1]
            raise HealthConfigError(
                file, _line(node), "sorry_server", f"{spec.service} has another one on line {first.line}"
            )
    return HealthConfig(file, checks)


# --- one check ----------------------------------------------------------------------------------


def _check(file: str, node: yaml.Node) -> CheckSpec:
    entries = _mapping(file, node, "checks")
    if "type" not in entries:
        raise HealthConfigError(file, _line(node), "type", f"missing (one of {', '.join(TYPES)})")
    tnode = entries["type"][1]
    kind = _str(file, tnode, "type")
    if kind not in TYPES:
        raise HealthConfigError(
            file, _line(tnode), "type", f"unknown type {kind!r} (one of {', '.join(TYPES)})"
        )
    allowed = _COMMON + _BY_TYPE[kind]
    for key, (knode, _) in entries.items():
        if key not in allowed:
            raise HealthConfigError(
                file, _line(knode), key, f"unknown key for a {kind} check (known: {', '.join(allowed)})"
            )
    if "service" not in entries:
        raise HealthConfigError(file, _line(node), "service", 'missing (e.g. "TCP 203.0.113.10:443" or "*")')
    values: dict[str, Any] = {"type": kind, "line": _line(node)}
    for key, (_, vnode) in entries.items():
        if key != "type":
            values[key] = _value(file, key, vnode, kind)
    spec = CheckSpec(**values)
    if "jitter" not in values:
        spec = dataclasses.replace(spec, jitter=spec.interval / 10)
    _cross_check(file, spec, entries)
    return spec


def _cross_check(file: str, spec: CheckSpec, entries: dict[str, tuple[yaml.Node, yaml.Node]]) -> None:
    def refuse(key: str, reason: str) -> None:
        node = entries[key][1] if key in entries else None
        raise HealthConfigError(file, _line(node) if node is not None else spec.line, key, reason)

    if spec.jitter >= spec.interval:
        refuse("jitter", f"must be shorter than the interval ({spec.interval:g} s)")
    if spec.type == "agent" and not spec.port:
        refuse("port", "an agent check needs the agent's port")
    if spec.type == "dns" and not spec.query:
        refuse("query", "a dns check needs the name to query")
    if spec.type == "exec" and not spec.command:
        refuse("command", "an exec check needs a command")
    if spec.expect_body is not None and spec.expect_body_regex is not None:
        refuse("expect_body_regex", "give expect_body or expect_body_regex, not both")
    if spec.method == "HEAD" and (spec.expect_body is not None or spec.expect_body_regex is not None):
        refuse("method", "a HEAD answer has no body to match expect_body against")
    if spec.tls_ca is not None and not spec.tls_verify:
        refuse("tls_ca", "tls_ca is for verification, which tls_verify: false turns off")
    if spec.transport == "udp" and spec.service is not None and spec.service.protocol is Protocol.TCP:
        refuse("transport", "udp against a TCP service")
    if spec.sorry_server is not None and spec.service is None:
        refuse("sorry_server", 'a sorry server belongs to one service, not to "*"')
    for key in ("sorry_server", "slow_start"):
        if key in entries and spec.act is False:
            refuse(key, "only a check that acts uses it (act: false here)")
    if spec.source is not None and spec.dest is not None:
        family = AF_INET6 if ":" in spec.source else AF_INET
        if family != spec.dest.family:
            refuse("source", f"address family differs from dest {spec.dest.address}")


def _value(file: str, key: str, node: yaml.Node, kind: str) -> Any:
    parse = _PARSERS[key]
    try:
        return parse(file, key, node)
    except ValueError as e:
        raise HealthConfigError(file, _line(node), key, str(e)) from None


# --- value parsers: (file, key, node) -> value; ValueError carries the reason ------------------


def _service(file: str, key: str, node: yaml.Node) -> ServiceKey | None:
    text = _str(file, node, key).strip()
    if text == "*":
        return None
    return parse_service(text)


def parse_service(text: str) -> ServiceKey:
    """ipvsadm's service syntax: `TCP ADDR:PORT`, `UDP [V6]:PORT`, `SCTP ...`, `FWM N` (`FWM N IPv6`)."""
    parts = text.split()
    proto = parts[0].upper() if parts else ""
    if proto == "FWM":
        v6 = len(parts) == 3 and parts[2].lower() == "ipv6"
        if len(parts) not in (2, 3) or (len(parts) == 3 and not v6):
            raise ValueError(f"expected 'FWM MARK' or 'FWM MARK IPv6', not {text!r}")
        if not parts[1].isdigit() or not 0 < int(parts[1]) <= 0xFFFFFFFF:
            raise ValueError(f"fwmark must be 1 to 4294967295, not {parts[1]!r}")
        return ServiceKey.mark(int(parts[1]), AF_INET6 if v6 else AF_INET)
    if proto not in ("TCP", "UDP", "SCTP") or len(parts) != 2:
        raise ValueError(f'expected "TCP|UDP|SCTP ADDR:PORT", "FWM MARK" or "*", not {text!r}')
    family, address, port = _hostport(parts[1], need_port=True)
    return ServiceKey(family, Protocol[proto], address, port)


def _hostport(text: str, *, need_port: bool) -> tuple[int, str, int]:
    host, port = text, ""
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or (text[close + 1 :] and text[close + 1 : close + 2] != ":"):
            raise ValueError(f"expected [IPv6-address]:port, not {text!r}")
        host, port = text[1:close], text[close + 2 :]
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address (host names are not resolved)") from None
    if need_port and not port:
        raise ValueError(f"{text!r} has no port")
    if port and (not port.isdigit() or not 0 < int(port) <= 0xFFFF):
        raise ValueError(f"port must be 1 to 65535 in {text!r}")
    family = AF_INET6 if address.version == 6 else AF_INET
    return family, normalize_address(family, host), int(port or 0)


def _dest(file: str, key: str, node: yaml.Node) -> DestMatch:
    family, address, port = _hostport(_str(file, node, key).strip(), need_port=False)
    return DestMatch(family, address, port)


def _duration(file: str, key: str, node: yaml.Node) -> float:
    value = _scalar(file, node, key, (str, int, float))
    text = str(value)
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f"expected a duration such as 2s, 500ms or 1m, not {text!r}")
    seconds = float(m.group(1)) * _UNIT[m.group(2)]
    if not 0 < seconds <= MAX_DURATION:
        raise ValueError(f"must be above 0 and at most 24h, not {text!r}")
    return seconds


def _jitter(file: str, key: str, node: yaml.Node) -> float:
    value = _scalar(file, node, key, (str, int, float))
    return 0.0 if str(value).strip() in ("0", "0s", "0ms", "0.0") else _duration(file, key, node)


def _count(file: str, key: str, node: yaml.Node) -> int:
    value = _int(file, node, key)
    if not 1 <= value <= 100:
        raise ValueError(f"must be 1 to 100, not {value}")
    return value


def _port(file: str, key: str, node: yaml.Node) -> int:
    value = _int(file, node, key)
    if not 0 < value <= 0xFFFF:
        raise ValueError(f"must be 1 to 65535, not {value}")
    return value


def _address(file: str, key: str, node: yaml.Node) -> str:
    text = _str(file, node, key).strip()
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None
    return normalize_address(AF_INET6 if address.version == 6 else AF_INET, text)


def _text(file: str, key: str, node: yaml.Node) -> str:
    text = _str(file, node, key)
    if not text or "\n" in text or "\r" in text:
        raise ValueError("must be one non-empty line")
    return text


def _payload(file: str, key: str, node: yaml.Node) -> str:
    text = _str(file, node, key)
    if not 0 < len(text) <= 1024:
        raise ValueError("must be 1 to 1024 characters")
    return text


def _name(file: str, key: str, node: yaml.Node) -> str:
    text = _text(file, key, node)
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", text):
        raise ValueError(f"letters, digits, '_', '.', '-' only (at most 40), not {text!r}")
    return text


def _method(file: str, key: str, node: yaml.Node) -> str:
    text = _str(file, node, key).upper()
    if text not in ("GET", "HEAD"):
        raise ValueError(f"GET or HEAD, not {text!r}")
    return text


def _path(file: str, key: str, node: yaml.Node) -> str:
    text = _text(file, key, node)
    if not text.startswith("/") or any(c.isspace() for c in text):
        raise ValueError(f"must start with '/' and hold no spaces, not {text!r}")
    return text


def _statuses(file: str, key: str, node: yaml.Node) -> frozenset[int]:
    items = node.value if isinstance(node, yaml.SequenceNode) else [node]
    if not items:
        raise ValueError("expected a status, a range such as 200-299, or a list of them")
    codes: set[int] = set()
    for item in items:
        text = str(_scalar(file, item, key, (str, int)))
        lo, _, hi = text.partition("-")
        if not lo.strip().isdigit() or (hi and not hi.strip().isdigit()):
            raise ValueError(f"expected a status such as 200 or a range such as 200-299, not {text!r}")
        first, last = int(lo), int(hi or lo)
        if not 100 <= first <= last <= 599:
            raise ValueError(f"statuses are 100 to 599, low to high, not {text!r}")
        codes.update(range(first, last + 1))
    return frozenset(codes)


def _regex(file: str, key: str, node: yaml.Node) -> re.Pattern[str]:
    text = _str(file, node, key)
    try:
        return re.compile(text)
    except re.error as e:
        raise ValueError(f"not a regular expression: {e}") from None


def _flag(file: str, key: str, node: yaml.Node) -> bool:
    value: bool = _scalar(file, node, key, bool)
    return value


def _qtype(file: str, key: str, node: yaml.Node) -> str:
    text = _str(file, node, key).upper()
    if text not in DNS_TYPES:
        raise ValueError(f"one of {', '.join(DNS_TYPES)}, not {text!r}")
    return text


def _transport(file: str, key: str, node: yaml.Node) -> str:
    text = _str(file, node, key).lower()
    if text not in ("udp", "tcp"):
        raise ValueError(f"udp or tcp, not {text!r}")
    return text


def _query(file: str, key: str, node: yaml.Node) -> str:
    text = _text(file, key, node).rstrip(".")
    labels = text.split(".")
    if len(text) > 253 or any(not 0 < len(label) <= 63 for label in labels):
        raise ValueError(f"not a domain name: {text!r}")
    return text


def _strings(file: str, key: str, node: yaml.Node) -> tuple[str, ...]:
    items = node.value if isinstance(node, yaml.SequenceNode) else [node]
    values = tuple(str(_scalar(file, item, key, (str, int))) for item in items)
    if not values:
        raise ValueError("expected at least one value")
    return values


def _command(file: str, key: str, node: yaml.Node) -> tuple[str, ...]:
    if isinstance(node, yaml.SequenceNode):
        argv = tuple(str(_scalar(file, item, key, (str, int))) for item in node.value)
    else:
        try:
            argv = tuple(shlex.split(_str(file, node, key)))
        except ValueError as e:
            raise ValueError(f"cannot split into words: {e}") from None
    if not argv or not argv[0]:
        raise ValueError("an empty command")
    return argv


_PARSERS: dict[str, Callable[[str, str, yaml.Node], Any]] = {
    "service": _service,
    "dest": _dest,
    "name": _name,
    "interval": _duration,
    "timeout": _duration,
    "fall": _count,
    "rise": _count,
    "jitter": _jitter,
    "port": _port,
    "source": _address,
    "method": _method,
    "path": _path,
    "host": _text,
    "expect_status": _statuses,
    "expect_body": _text,
    "expect_body_regex": _regex,
    "tls_verify": _flag,
    "tls_ca": _text,
    "query": _query,
    "qtype": _qtype,
    "transport": _transport,
    "expect": _strings,
    "command": _command,
    "send": _payload,
    "act": _flag,
    "sorry_server": _dest,
    "slow_start": _duration,
}


# --- YAML node helpers --------------------------------------------------------------------------

_CONSTRUCTOR = yaml.SafeLoader(b"")


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _mapping(file: str, node: yaml.Node, key: str | None) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        what = f"an entry of '{key}'" if key else "the file"
        raise HealthConfigError(file, _line(node), key, f"{what} must be a mapping (key: value)")
    entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for knode, vnode in node.value:
        name = knode.value if isinstance(knode, yaml.ScalarNode) else None
        if not isinstance(name, str):
            raise HealthConfigError(file, _line(knode), None, "keys must be plain names")
        if name in entries:
            raise HealthConfigError(file, _line(knode), name, "given twice")
        entries[name] = (knode, vnode)
    return entries


def _scalar(file: str, node: yaml.Node, key: str, kinds: type | tuple[type, ...]) -> Any:
    """The node's value as YAML's safe loader types it, refused unless it is one of `kinds`."""
    if not isinstance(node, yaml.ScalarNode):
        raise HealthConfigError(file, _line(node), key, "expected a single value, not a list or mapping")
    value = _CONSTRUCTOR.construct_object(node)
    wanted = kinds if isinstance(kinds, tuple) else (kinds,)
    if isinstance(value, bool):  # a bool is an int in Python, but `port: yes` is a mistake, not port 1
        if bool in wanted:
            return value
    elif isinstance(value, int | float) and str in wanted and not set(wanted) & {int, float}:
        return node.value  # `expect_body: 200` means the text
    elif isinstance(value, wanted):
        return value
    names = " or ".join(_KIND_NAMES[k] for k in wanted)
    raise HealthConfigError(file, _line(node), key, f"expected {names}, not {node.value!r}")


def _str(file: str, node: yaml.Node, key: str) -> str:
    return str(_scalar(file, node, key, str))


def _int(file: str, node: yaml.Node, key: str) -> int:
    return int(_scalar(file, node, key, int))


_KIND_NAMES = {str: "text", int: "a whole number", float: "a number", bool: "true or false"}
