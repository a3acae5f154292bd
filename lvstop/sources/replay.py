"""Recordings: gzip-compressed JSON lines, one snapshot per line (lvstop.codec), and their replay.

Recorder flushes the gzip stream after every snapshot, so a recording cut short by a crash still
replays up to its last complete line. ReplaySource keeps the decompressed lines in memory and
decodes a snapshot when it is read, so opening a long recording is quick; a line that does not
decode raises ParseError naming the file and its line number, once: the next read plays on after it.
`damage` says what was found wrong so far; `check()` decodes every line to find all of it.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import zlib
from collections.abc import Iterator
from types import TracebackType
from typing import IO

from lvstop import codec
from lvstop.errors import ParseError, SourceError
from lvstop.model import IssueKind, Snapshot


class Recorder:
    """Appends snapshots to a new recording at `path`. An existing file is replaced only with
    `overwrite` (else FileExistsError). Raises OSError when the file cannot be created or written."""

    def __init__(self, path: str | os.PathLike[str], *, overwrite: bool = True) -> None:
        self.path = os.fspath(path)
        # OSError (with the file name) is left to the caller: the CLI reports it as a bad file.
        # x: refused atomically if the file exists
        opened = gzip.open(self.path, "wt" if overwrite else "xt", encoding="utf-8")  # noqa: SIM115 (kept open)
        self._f: IO[str] | None = opened
        self.count = 0

    def write(self, snapshot: Snapshot) -> None:
        if self._f is None:
            raise ValueError(f"recorder for {self.path} is closed")
        self._f.write(codec.dumps(snapshot) + "\n")
        self._f.flush()  # a sync flush: everything written so far survives a crash
        self.count += 1

    def close(self) -> None:
        if self._f is not None:
            f, self._f = self._f, None
            f.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _read_lines(path: str) -> tuple[list[bytes], bool]:
    """The complete lines of a gzip file, and whether it ended early (crash while recording)."""
    lines: list[bytes] = []
    truncated = False
    try:
        with gzip.open(path, "rb") as f:
            try:
                for line in f:
                    lines.append(line)
            except EOFError:  # stream cut short: keep what decompressed
                truncated = True
    except gzip.BadGzipFile as e:
        raise ParseError(f"not a gzip-compressed recording ({e})", source=path) from None
    except zlib.error as e:
        raise ParseError(f"corrupt gzip data after line {len(lines)} ({e})", source=path) from None
    except OSError as e:
        raise SourceError(IssueKind.IO, f"cannot read {path}: {e.strerror or e}") from None
    if lines and not lines[-1].endswith(b"\n"):  # a partly written last line
        lines.pop()
        truncated = True
    return lines, truncated


class ReplaySource:
    """Plays a recording back as a source: each read() returns the next snapshot; at the end it keeps
    returning the last one and `finished` is True. `seek(i)` makes snapshot i the next one read."""

    name = "replay"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lines, self.truncated = _read_lines(self.path)
        if not self._lines:
            raise ParseError("no snapshots in the recording", source=self.path)
        first = self._decode(0)  # fail now, not on the first read, if this is no recording at all
        self.cadence = self._cadence(first)
        self._next = 0
        self._last: Snapshot | None = None
        self._bad: dict[int, str] = {}  # line number -> why it does not decode

    def __len__(self) -> int:
        return len(self._lines)

    @property
    def position(self) -> int:
        """Index of the snapshot the next read() returns (len(self) once finished)."""
        return self._next

    @property
    def finished(self) -> bool:
        return self._next >= len(self._lines)

    def seek(self, index: int) -> None:
        if not 0 <= index < len(self._lines):
            raise IndexError(f"snapshot {index} is outside the recording (0..{len(self._lines) - 1})")
        self._next = index

    def _decode(self, index: int) -> Snapshot:
        try:
            snap = codec.loads(self._lines[index])
        except ParseError as e:
            raise ParseError(e.reason, source=self.path, line=index + 1) from None
        return dataclasses.replace(snap, source=self.name)

    def _cadence(self, first: Snapshot) -> float | None:
        """Seconds between the first two recorded snapshots: the pace to play at. None if unknown."""
        if len(self._lines) < 2:
            return None
        try:
            second = self._decode(1)
        except ParseError:
            return None
        step = second.mono_time - first.mono_time
        return step if step > 0 else None

    @property
    def damage(self) -> list[str]:
        """What is wrong with the recording, as far as it has been read (or checked)."""
        out = [f"{self.path}:{line}: {why}: skipped" for line, why in sorted(self._bad.items())]
        if self.truncated:
            out.append(
                f"{self.path}: cut short after line {len(self._lines)} (the recording was interrupted): "
                "what followed is lost"
            )
        return out

    def check(self) -> list[str]:
        """Decode every line (slow on long recordings) and return all the damage."""
        for i in range(len(self._lines)):
            if i + 1 not in self._bad:
                try:
                    self._decode(i)
                except ParseError as e:
                    self._bad[i + 1] = e.reason
        return self.damage

    def read(self) -> Snapshot:
        if self._next < len(self._lines):
            index = self._next
            self._next += 1  # past a bad line too: the next read plays on after it
            try:
                self._last = self._decode(index)
            except ParseError as e:
                self._bad[index + 1] = e.reason
                raise
        if self._last is None:
            raise SourceError(IssueKind.UNAVAILABLE, f"replay of {self.path} is closed")
        return self._last

    def conn_lines(self, sync: bool = False) -> Iterator[str]:
        raise SourceError(IssueKind.UNAVAILABLE, "a recording holds no connection table")

    def close(self) -> None:
        self._lines = self._lines[:0]
