"""One JSON line per write attempt: applied, unchanged, dry_run, rejected or failed."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from lvstop.errors import LvstopError

# Every line carries every field (null when it does not apply), so log queries need no guessing.
FIELDS = (
    "time",
    "actor",
    "source",
    "action",
    "outcome",
    "status",
    "service",
    "dest",
    "old",
    "requested",
    "verified",
    "force",
    "reason",
    "error",
)


def _open(path: str) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    except OSError as e:
        raise LvstopError(f"{path}: cannot open the audit log: {e.strerror}") from None


class AuditLog:
    """Appends to a file (fsync'd: the trail must survive a crash) or writes to a stream such as stderr."""

    def __init__(self, target: str | IO[str], clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.path = target if isinstance(target, str) else None
        self._fd: int | None = _open(target) if isinstance(target, str) else None
        self._stream: IO[str] | None = None if isinstance(target, str) else target

    def reopen(self) -> None:
        """Open the file by its name again (after logrotate moved it); LvstopError keeps the old one."""
        if self.path is None:
            return
        fd = _open(self.path)
        with self._lock:
            old, self._fd = self._fd, fd
        if old is not None:
            os.close(old)

    def write(self, **record: Any) -> dict[str, Any]:
        unknown = set(record) - set(FIELDS)
        if unknown:
            raise TypeError(f"unknown audit field(s): {sorted(unknown)}")
        line = {f: record.get(f) for f in FIELDS}
        if line["time"] is None:
            line["time"] = self._clock()
        text = json.dumps(line, separators=(",", ":")) + "\n"
        with self._lock:
            try:
                if self._fd is not None:
                    os.write(self._fd, text.encode())
                    os.fsync(self._fd)
                elif self._stream is not None:
                    self._stream.write(text)
                    self._stream.flush()
            except OSError as e:
                # The edit already happened (or was refused); say loudly that its trail is missing.
                print(
                    f"lvstop-exporter: cannot write the audit log: {e.strerror}: {text}",
                    end="",
                    file=sys.stderr,
                )
        return line

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
