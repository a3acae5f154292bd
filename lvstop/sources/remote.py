"""Another director's state, read from its lvstop-exporter (GET {url}/api/v1/snapshot): `lvstop --connect`.

The snapshot keeps the remote's mono_time: only differences of it mean anything, and those are the
remote's own poll intervals, so rates computed here come out as the remote measured them (reading the
same remote poll twice gives a zero interval, which the estimator ignores).
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit, urlunsplit

from lvstop.codec import snapshot_from_dict
from lvstop.errors import ParseError, SourceError
from lvstop.model import IssueKind, Snapshot

MAX_BYTES = 512 << 20  # a 100k-dest snapshot is ~60 MB of JSON


class RemoteSource:
    name = "remote"

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL of an lvstop-exporter: {url!r}")
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if parts.port is not None:
            netloc += f":{parts.port}"
        base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self.url = f"{base}/api/v1/snapshot"
        self.timeout = timeout
        self._headers = {"Accept": "application/json", "Accept-Encoding": "gzip"}
        if parts.username is not None:
            # Credentials from the URL go in a header, never into logs or error messages.
            cred = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(cred).decode()

    def read(self) -> Snapshot:
        req = urllib.request.Request(self.url, headers=self._headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = resp.read(MAX_BYTES + 1)
                encoding = resp.headers.get("Content-Encoding", "")
        except urllib.error.HTTPError as e:
            kind = {401: IssueKind.NO_PERMISSION, 403: IssueKind.NO_PERMISSION, 503: IssueKind.UNAVAILABLE}
            raise SourceError(
                kind.get(e.code, IssueKind.IO), f"{self.url}: HTTP {e.code} {e.reason}"
            ) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise SourceError(IssueKind.IO, f"{self.url}: {reason}") from None
        if len(data) > MAX_BYTES:
            raise SourceError(IssueKind.MALFORMED, f"{self.url}: reply larger than {MAX_BYTES} bytes")
        try:
            if encoding == "gzip":
                data = gzip.decompress(data)
            snap = snapshot_from_dict(json.loads(data))
        except (OSError, EOFError, ValueError) as e:  # gzip, JSON (incl. UnicodeDecodeError)
            raise SourceError(IssueKind.MALFORMED, f"{self.url}: not an lvstop snapshot: {e}") from None
        except ParseError as e:
            raise SourceError(IssueKind.MALFORMED, f"{self.url}: {e}") from None
        return dataclasses.replace(snap, source=self.name, seq=0, total_instant=None)

    def conn_lines(self, sync: bool = False) -> Iterator[str]:
        raise SourceError(IssueKind.UNAVAILABLE, "a remote exporter does not serve its connection table")

    def close(self) -> None:
        """Nothing held between reads."""
