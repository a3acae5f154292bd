"""web-config.yml (exporter-toolkit's format: TLS, bcrypt basic-auth users) plus roles, and the rate limiter.

The file is read strictly, as exporter-toolkit reads it: an unknown key is an error, not a silent
downgrade. lvstop adds one top-level key, `roles`, mapping user names to reader, operator or admin.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import ipaddress
import re
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvstop.errors import LvstopError


class Role(enum.IntEnum):
    """Ordered: each role can do what the ones below it can."""

    READER = 1  # GET everything
    OPERATOR = 2  # drain, restore, set weight, ramps: all guarded
    ADMIN = 3  # also force past the guards


@dataclass(frozen=True, slots=True)
class Principal:
    user: str
    role: Role


@dataclass(frozen=True, slots=True)
class WebConfig:
    tls: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash
    roles: Mapping[str, Role] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    allowed_sans: frozenset[str] = frozenset()  # client certificates must carry one (empty: any)
    from_file: bool = False  # read from --web.config.file (which then must name users for writes)

    @property
    def auth(self) -> bool:
        return bool(self.users)


_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TOP_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users", "roles"}
_TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "prefer_server_cipher_suites",
    "client_allowed_sans",
}
# Go's names, which OpenSSL spells otherwise and Python cannot order by: refused rather than ignored.
_TLS_REFUSED = {"cipher_suites", "curve_preferences"}
_HTTP_KEYS = {"headers", "http2"}
# exporter-toolkit's http_server_config.headers: only these, with these values where it lists some.
_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")


def _yaml_load(text: str) -> Any:
    """PyYAML's safe load, refusing a key given twice (PyYAML keeps the last one: a user silently
    changed). Imported here: an exporter without --web.config.file never loads PyYAML."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given twice", key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep)

    return yaml.load(text, Loader=StrictLoader)


# $2a$/$2b$/$2y$, a two-digit cost, then 22 characters of salt and 31 of hash in bcrypt's base64.
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
# bcrypt reads the first 72 bytes; the bcrypt package (5.x) raises ValueError for longer passwords.
MAX_PASSWORD = 72


def _fail(path: Path, message: str) -> LvstopError:
    return LvstopError(f"{path}: {message}")


def _mapping(path: Path, value: object, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, f"{what} must be a mapping")
    return value


def _unknown(path: Path, doc: Mapping[str, Any], known: set[str], what: str) -> None:
    extra = sorted(set(doc) - known)
    if extra:
        raise _fail(path, f"unknown key(s) in {what}: {', '.join(map(str, extra))}")


def load_web_config(path: str | Path) -> WebConfig:
    """Read and check a web-config.yml; every problem is one LvstopError naming the file."""
    import yaml

    p = Path(path)
    try:
        doc = _yaml_load(p.read_text())
    except OSError as e:
        raise _fail(p, f"cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None)
        detail = f": {problem}" if problem and "given twice" in problem else ""
        raise _fail(p, f"not valid YAML{line}{detail}") from None
    doc = _mapping(p, doc, "the file")
    _unknown(p, doc, _TOP_KEYS, "the file")
    users = {}
    for user, hashed in _mapping(p, doc.get("basic_auth_users"), "basic_auth_users").items():
        m = _BCRYPT_HASH.fullmatch(hashed) if isinstance(hashed, str) else None
        if m is None or not 4 <= int(m.group(1)) <= 31:
            raise _fail(
                p,
                f"basic_auth_users.{user}: not a bcrypt hash ($2a$, $2b$ or $2y$, a cost 04..31, then 53 "
                "characters of salt and hash)",
            )
        users[str(user)] = hashed.encode()
    roles = {}
    for user, role in _mapping(p, doc.get("roles"), "roles").items():
        if str(user) not in users:
            raise _fail(p, f"roles.{user}: no such user in basic_auth_users")
        try:
            roles[str(user)] = Role[str(role).upper()]
        except KeyError:
            raise _fail(p, f"roles.{user}: role must be reader, operator or admin, not {role!r}") from None
    http = _mapping(p, doc.get("http_server_config"), "http_server_config")
    _unknown(p, http, _HTTP_KEYS, "http_server_config")
    headers = _headers(p, _mapping(p, http.get("headers"), "http_server_config.headers"))
    tls_doc = _mapping(p, doc.get("tls_server_config"), "tls_server_config")
    refused = sorted(_TLS_REFUSED & set(tls_doc))
    if refused:
        raise _fail(
            p,
            f"tls_server_config.{refused[0]} is not supported: lvstop-exporter cannot honour it (Python's "
            "ssl uses OpenSSL's defaults); remove it",
        )
    _unknown(p, tls_doc, _TLS_KEYS, "tls_server_config")
    sans = tls_doc.get("client_allowed_sans") or []
    if not isinstance(sans, list) or not all(isinstance(x, str) for x in sans):
        raise _fail(p, "tls_server_config.client_allowed_sans must be a list of names")
    if sans and tls_doc.get("client_auth_type") != "RequireAndVerifyClientCert":
        raise _fail(
            p, "tls_server_config.client_allowed_sans needs client_auth_type RequireAndVerifyClientCert"
        )
    tls = _tls_context(p, tls_doc) if tls_doc else None
    return WebConfig(tls, users, roles, headers, frozenset(sans), from_file=True)


def _headers(p: Path, doc: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for name, value in doc.items():
        allowed = _HEADERS.get(str(name))
        if allowed is None:
            raise _fail(p, f"http_server_config.headers: {name!r} cannot be set (only {', '.join(_HEADERS)})")
        if not isinstance(value, str) or not _HEADER_VALUE.fullmatch(value):
            raise _fail(p, f"http_server_config.headers.{name}: the value must be printable text on one line")
        if allowed and value not in allowed:
            raise _fail(p, f"http_server_config.headers.{name}: must be one of {', '.join(allowed)}")
        out[str(name)] = value
    return out


def san_allowed(cert: Mapping[str, Any] | None, allowed: frozenset[str]) -> bool:
    """Whether a verified client certificate (ssl's getpeercert()) names one of `allowed` in its SANs."""
    if not allowed:
        return True
    sans = (cert or {}).get("subjectAltName", ())
    return any(value in allowed for _kind, value in sans)


def web_config_changes(old: WebConfig, new: WebConfig) -> list[str]:
    """What a reload changed, for the log (never a password or a hash)."""
    out = []
    for what, users in (("added", new.users.keys() - old.users), ("removed", old.users.keys() - new.users)):
        if users:
            out.append(f"users {what}: {', '.join(sorted(users))}")
    changed = sorted(u for u in old.users.keys() & new.users if old.users[u] != new.users[u])
    if changed:
        out.append(f"passwords changed: {', '.join(changed)}")
    roles = sorted(u for u in new.users if old.roles.get(u) != new.roles.get(u) and u in old.users)
    if roles:
        out.append(f"roles changed: {', '.join(roles)}")
    if dict(old.headers) != dict(new.headers):
        out.append("headers changed")
    if new.tls is not None:
        out.append("TLS certificate and settings re-read")
    return out


def _tls_context(p: Path, doc: Mapping[str, Any]) -> ssl.SSLContext:
    def rel(key: str) -> str:
        # exporter-toolkit resolves relative paths against the config file's directory.
        return str((p.parent / str(doc[key])).resolve())

    if not doc.get("cert_file") or not doc.get("key_file"):
        raise _fail(p, "tls_server_config needs cert_file and key_file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(rel("cert_file"), rel("key_file"))
    except (OSError, ssl.SSLError) as e:
        raise _fail(p, f"cannot load cert_file/key_file: {e}") from None
    for key, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        if key in doc:
            if doc[key] not in _TLS_VERSIONS:
                raise _fail(p, f"tls_server_config.{key} must be one of {', '.join(_TLS_VERSIONS)}")
            setattr(ctx, attr, _TLS_VERSIONS[doc[key]])
    mode = doc.get("client_auth_type", "NoClientCert")
    if mode not in _CLIENT_AUTH:
        raise _fail(p, f"tls_server_config.client_auth_type must be one of {', '.join(_CLIENT_AUTH)}")
    ctx.verify_mode = _CLIENT_AUTH[mode]
    prefer = doc.get("prefer_server_cipher_suites", True)  # exporter-toolkit's default
    if type(prefer) is not bool:
        raise _fail(p, "tls_server_config.prefer_server_cipher_suites must be true or false")
    if prefer:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if doc.get("client_ca_file"):
        try:
            ctx.load_verify_locations(rel("client_ca_file"))
        except (OSError, ssl.SSLError) as e:
            raise _fail(p, f"cannot load client_ca_file: {e}") from None
    elif ctx.verify_mode != ssl.CERT_NONE:
        raise _fail(p, f"client_auth_type {mode} needs client_ca_file")
    return ctx


# Credentials not yet verified cost a bcrypt check (~100 ms of CPU): one a second per network, after a
# burst, and five a second from everywhere together (half a core at cost 10).
GUESS_RATE = 1.0
GUESS_BURST = 10
GUESS_RATE_ALL = 5.0
GUESS_BURST_ALL = 50


def network_of(client: str) -> str:
    """The network a client address counts against: /24 for IPv4, /64 for IPv6, one for all loopback.

    One host has many addresses in these (127.0.0.0/8, an IPv6 /64): one address each would be as many
    budgets as an attacker cares to take."""
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


class Throttled(Exception):
    """Too many unverified credentials from one client: retry after `wait` seconds."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"too many authentication attempts; retry in {wait:.0f} s")
        self.wait = wait


class Authenticator:
    """HTTP basic auth against bcrypt hashes; unknown users cost one bcrypt check like wrong passwords.

    Verified credentials are cached, so a scraper pays bcrypt once; every other check is rate limited
    per network (`guesses`, see network_of) and for all networks together (`all_guesses`), which keeps
    password guessing slow on every route, reads included, from one address or from many.
    """

    def __init__(
        self,
        config: WebConfig,
        anonymous_role: Role = Role.OPERATOR,
        guesses: RateLimiter | None = None,
        all_guesses: RateLimiter | None = None,
    ) -> None:
        self.config = config
        self.anonymous = Principal("anonymous", anonymous_role)
        self.guesses = guesses if guesses is not None else RateLimiter(GUESS_RATE, GUESS_BURST)
        self.all_guesses = (
            all_guesses if all_guesses is not None else RateLimiter(GUESS_RATE_ALL, GUESS_BURST_ALL)
        )
        # An unknown user costs what the dearest known one does: no timing tells them apart. Without
        # users nobody is checked: bcrypt is not even loaded.
        self._dummy = b""
        if config.auth:
            import bcrypt

            cost = max(int(h.split(b"$")[2]) for h in config.users.values())
            self._dummy = bcrypt.hashpw(b"lvstop-dummy", bcrypt.gensalt(cost))
        self._good: OrderedDict[tuple[str, bytes], None] = OrderedDict()  # verified credentials
        self._lock = threading.Lock()

    def check(self, authorization: str | None, client: str) -> Principal | None:
        """The principal for an Authorization header, or None when the credentials are missing or wrong.

        Raises Throttled when `client`'s network, or everyone, had too many unverified credentials checked."""
        if not self.config.auth:
            return self.anonymous
        import bcrypt  # loaded by __init__ already

        creds = _basic(authorization)
        if creds is None:
            return None
        user, password = creds
        # Cache verified pairs by a keyed digest so scrapes do not pay bcrypt each time.
        digest = hmac.new(self._dummy, password, hashlib.sha256).digest()
        with self._lock:
            if (user, digest) in self._good:
                self._good.move_to_end((user, digest))
                return self._principal(user)
        wait = self.guesses.allow(network_of(client)) or self.all_guesses.allow("")
        if wait > 0:
            raise Throttled(wait)
        hashed = self.config.users.get(user)
        if len(password) > MAX_PASSWORD:  # never valid: costs what a wrong password costs, and fails
            bcrypt.checkpw(password[:MAX_PASSWORD], self._dummy)
            return None
        ok = bcrypt.checkpw(password, hashed if hashed is not None else self._dummy) and hashed is not None
        if not ok:
            return None
        with self._lock:
            self._good[(user, digest)] = None
            while len(self._good) > 1024:
                self._good.popitem(last=False)
        return self._principal(user)

    def _principal(self, user: str) -> Principal:
        return Principal(user, self.config.roles.get(user, Role.READER))


def _basic(header: str | None) -> tuple[str, bytes] | None:
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = raw.partition(b":")
    if not sep:
        return None
    return user.decode("utf-8", "replace"), password


class RateLimiter:
    """A token bucket per key (a network, a user)."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic, max_clients: int = 10000
    ):
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max = max_clients
        self._lock = threading.Lock()

    def allow(self, client: str) -> float:
        """0 when the request may go on, else the seconds to wait before the next one will."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            wait = 0.0
            if tokens >= 1:
                tokens -= 1
            else:
                wait = (1 - tokens) / self.rate if self.rate > 0 else 3600.0
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
            return wait
