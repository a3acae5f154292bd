"""Another director's state, read from its lvstop-exporter (GET {url}/api/v1/snapshot): `lvstop --connect`;
beside it, what the dashboard shows that a snapshot does not carry: the exporter's health checks
(GET {url}/api/v1/health) and which services keepalived or ldirectord manage (GET {url}/api/v1/managed).

The snapshot keeps the remote's mono_time: only differences of it mean anything, and those are the
remote's own poll intervals, so rates computed here come out as the remote measured them (reading the
same remote poll twice gives a zero interval, which the estimator ignores).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from email.message import Message
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from lvstop.codec import JsonReader, loads
from lvstop.errors import ControlError, ParseError, SourceError
from lvstop.model import DestKey, IssueKind, ServiceKey, Snapshot

if TYPE_CHECKING:
    from lvstop.control import ControlResult
    from lvstop.health.state import DestHealth, HealthMap
    from lvstop.managers import ManagedMap

PREVIEW_PATH = "/api/v1/preview"
HEALTH_PATH = "/api/v1/health"
MANAGED_PATH = "/api/v1/managed"
MAX_BYTES = 512 << 20  # a 100k-dest snapshot is ~60 MB of JSON; bounds the reply as sent and as decompressed


def basic_auth(url: str) -> dict[str, str]:
    """The Authorization header for the credentials in `url` (http://user:password@host), if any."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.username is None:
        return {}
    # Credentials from the URL go in a header, never into logs or error messages.
    cred = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    return {"Authorization": "Basic " + base64.b64encode(cred).decode()}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """urllib resends every header, Authorization included, to wherever a redirect points: follow none."""

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: Message, newurl: str
    ) -> urllib.request.Request | None:
        where = urlsplit(newurl).hostname or "the same host"
        raise urllib.error.HTTPError(
            req.full_url,
            code,
            f"{msg}, a redirect to {where} (not followed: give the exporter's own URL)",
            headers,
            fp,
        )


_OPENER = urllib.request.build_opener(_NoRedirect)


def urlopen(req: urllib.request.Request, timeout: float) -> Any:
    """urllib.request.urlopen that refuses redirects (the exporter's API never redirects)."""
    return _OPENER.open(req, timeout=timeout)


def gunzip(data: bytes, limit: int) -> bytes:
    """gzip.decompress that stops past `limit` bytes of output (a small reply can inflate to gigabytes)."""
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as e:
        raise ValueError(f"not valid gzip: {e}") from None
    if len(out) > limit:
        raise ValueError(f"more than {limit} bytes once decompressed")
    if not d.eof or d.unused_data:
        raise ValueError("truncated, or data after its end")
    return out


def edit_result(doc: object, where: str) -> ControlResult:
    """The EditResult of the exporter's write API (an edit's answer, or a preview's `result`)."""
    from lvstop.control import ControlResult

    try:
        r = JsonReader(doc, "")
        return ControlResult(
            r.text("action"),
            r.text("outcome"),
            r.service_key("service"),
            r.dest_key("dest"),
            r.integer("old"),
            r.integer("requested"),
            r.opt_integer("verified"),
            r.integer("active_conns", 0),
            r.texts("warnings"),
            r.opt_integer("previous"),
        )
    except ParseError as e:
        raise ControlError(f"{where}: unexpected reply: {e}", status=502) from None


def edit_preview(doc: Any, where: str) -> tuple[ControlResult | None, str | None, str | None]:
    """A POST /api/v1/preview answer as (dry-run result, guard refusal that force would pass, error)."""
    try:
        result, refused, error = doc["result"], doc["refused"], doc["error"]
        message = None if error is None else str(error["message"])
    except (KeyError, TypeError) as e:
        raise ControlError(f"{where}: unexpected reply ({e})", status=502) from None
    if (result is None) == (message is None) or not isinstance(refused, str | None):
        raise ControlError(f"{where}: unexpected reply (a result or an error, not both)", status=502)
    return (None if result is None else edit_result(result, where)), refused, message


class RemoteSource:
    name = "remote"

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL of an lvstop-exporter: {url!r}")
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if parts.port is not None:
            netloc += f":{parts.port}"
        self.base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self.url = f"{self.base}/api/v1/snapshot"
        self.timeout = timeout
        self._headers = {"Accept": "application/json", "Accept-Encoding": "gzip", **basic_auth(url)}

    def _get(self, url: str) -> bytes:
        """The body of GET `url`, decompressed; SourceError for anything but a 200 within MAX_BYTES."""
        req = urllib.request.Request(url, headers=self._headers)
        try:
            with urlopen(req, self.timeout) as resp:
                data: bytes = resp.read(MAX_BYTES + 1)
                encoding = resp.headers.get("Content-Encoding", "")
        except urllib.error.HTTPError as e:
            kind = {
                401: IssueKind.NO_PERMISSION,
                403: IssueKind.NO_PERMISSION,
                404: IssueKind.UNAVAILABLE,  # an exporter older than the route
                503: IssueKind.UNAVAILABLE,
            }
            raise SourceError(kind.get(e.code, IssueKind.IO), f"{url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise SourceError(IssueKind.IO, f"{url}: {reason}") from None
        if len(data) > MAX_BYTES:
            raise SourceError(IssueKind.MALFORMED, f"{url}: reply larger than {MAX_BYTES} bytes")
        if encoding == "gzip":
            try:
                data = gunzip(data, MAX_BYTES)
            except ValueError as e:
                raise SourceError(IssueKind.MALFORMED, f"{url}: gzip reply: {e}") from None
        return data

    def get_json(self, path: str) -> dict[str, Any]:
        """GET {url}{path}: a JSON object, or SourceError."""
        url = f"{self.base}{path}"
        try:
            doc = json.loads(self._get(url))
        except (ValueError, RecursionError) as e:
            raise SourceError(IssueKind.MALFORMED, f"{url}: not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise SourceError(IssueKind.MALFORMED, f"{url}: the reply is not a JSON object")
        return doc

    def read(self) -> Snapshot:
        data = self._get(self.url)
        try:
            snap = loads(data)  # every malformed reply (bad JSON, too deep, huge numbers) is a ParseError
        except ParseError as e:
            raise SourceError(IssueKind.MALFORMED, f"{self.url}: not an lvstop snapshot: {e}") from None
        return dataclasses.replace(snap, source=self.name, seq=0, total_instant=None)

    def conn_lines(self, sync: bool = False) -> Iterator[str]:
        raise SourceError(IssueKind.UNAVAILABLE, "a remote exporter does not serve its connection table")

    def close(self) -> None:
        """Nothing held between reads."""


def health_map_from_dict(doc: object) -> HealthMap:
    """GET /api/v1/health's `dests` as the dashboard reads health; ParseError naming the path of the
    first wrong value."""
    from lvstop.health.state import health_from_dict

    def entry(e: JsonReader) -> tuple[tuple[ServiceKey, DestKey], DestHealth]:
        return (e.service_key("service"), e.dest_key("dest")), health_from_dict(
            e.d.get("health"), e.path + ".health"
        )

    return dict(JsonReader(doc, "").items("dests", entry, required=True))


class RemoteHealth:
    """A remote exporter's health checks, for `lvstop --connect`: fetched in the poller's thread after
    each poll (`update`, a poller subscriber), read without I/O (`view`).

    view() is None while the exporter runs no checks, or is older than /api/v1/health: no Health columns
    then, as for a local director without --health.config. A failed fetch keeps the last view and says
    why in `error`."""

    def __init__(self, source: RemoteSource) -> None:
        self._source = source
        self._view: HealthMap | None = None
        self.error: str | None = None

    def update(self, snap: Snapshot | None = None) -> None:
        try:
            doc = self._source.get_json(HEALTH_PATH)
            self._view = health_map_from_dict(doc) if doc.get("checks") is True else None
            self.error = None
        except SourceError as e:
            if e.kind is IssueKind.UNAVAILABLE:  # an exporter older than the route: no checks to show
                self._view = None
            self.error = str(e)
        except ParseError as e:
            self.error = f"{self._source.base}{HEALTH_PATH}: unexpected reply: {e}"

    def view(self) -> HealthMap | None:
        return self._view


class RemoteManaged:
    """Which services of a remote director keepalived or ldirectord manage, for `lvstop --connect`:
    fetched in the poller's thread at most every CLAIMS_TTL seconds (`update`, a poller subscriber),
    read without I/O by calling it, as the dashboard calls lvstop.managers.ManagedLookup. A failed
    fetch keeps the last answer and says why in `error` (an exporter older than the route: none)."""

    def __init__(self, source: RemoteSource, clock: Callable[[], float] = time.monotonic) -> None:
        self._source = source
        self._clock = clock
        self._at: float | None = None
        self._managed: tuple[ManagedMap, tuple[str, ...]] = ({}, ())
        self.error: str | None = None

    def update(self, snap: Snapshot | None = None) -> None:
        from lvstop.managers import CLAIMS_TTL, managed_from_dict

        now = self._clock()
        if self._at is not None and self._at <= now < self._at + CLAIMS_TTL:
            return
        self._at = now
        try:
            self._managed = managed_from_dict(self._source.get_json(MANAGED_PATH))
            self.error = None
        except SourceError as e:
            self.error = str(e)
        except ParseError as e:
            self.error = f"{self._source.base}{MANAGED_PATH}: unexpected reply: {e}"

    def __call__(self) -> tuple[ManagedMap, tuple[str, ...]]:
        return self._managed
