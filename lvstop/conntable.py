"""The connection table, read off the poller's tick: streaming aggregation of ip_vs_conn lines.

Reading /proc/net/ip_vs_conn can be slow (quadratic on kernels before 6.14), so a read has a time
budget and a summary that was cut short says so (`partial`). Parsing is lazy: each line is split
once; hex is decoded only once per distinct (protocol, vaddr, vport, daddr, dport, state) key, and
a client is checked once (a regex for the forms /proc prints, parse_addr for anything else), never
per line. Fields no aggregate needs (client port beyond the template test, expiry, PE data) are
decoded only for the entries kept for display.

Attribution of an entry to a service (the table shows what the packet carried, not the service):
1. a persistence template of a fwmark service has protocol IP and the mark as vaddr (the kernel
   builds it from htonl(fwmark)): it belongs to that FWM service;
2. otherwise (protocol, vaddr, vport), or (protocol, vaddr, 0) for port-zero services, names the
   virtual service when its dests include the entry's dest (or the entry is a template);
3. otherwise fwmark traffic shows the packet's own vaddr:vport: the entry goes to the one fwmark
   service of its family whose dests include the entry's dest;
4. otherwise a service matched in step 2 keeps it (its dest was removed), and failing that it is
   keyed by what the kernel printed and counted in `unattributed`.
Templates of fwmark and port-zero services print dest port 0; they are tied to the service's one
dest with that address when there is exactly one.
"""

from __future__ import annotations

import heapq
import logging
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from itertools import islice
from operator import itemgetter
from types import MappingProxyType
from typing import Any

import numpy as np

from lvstop import gcpolicy
from lvstop.errors import LvstopError, ParseError, SourceError
from lvstop.model import ConnEntry, DestKey, IssueKind, Protocol, Service, ServiceKey
from lvstop.sources import Source
from lvstop.sources.procfs import (
    CONN_ORIGINS,
    CONN_PROTOCOLS,
    IP_VS_CONN,
    IP_VS_CONN_SYNC,
    ConnFile,
    conn_layout,
    parse_addr,
    parse_conn_line,
    parse_hex,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_ENTRIES = 500
DEFAULT_TOP_CLIENTS = 20
_CHUNK = 512  # lines of the first chunk: about 9 kernel reads of one page each; the budget is checked
_BIG_CHUNK = 16384  # after each chunk, and chunks double up to this (4x more: same CPU, 40 MB more peak)
_BLOCK = 1 << 15  # the same in bytes, for a file read in blocks (ConnFile): 32 KiB, ~440 IPv4 lines,
_BIG_BLOCK = 1 << 20  # doubling up to 1 MiB, ~14k IPv4 lines
_MIN_COLUMNAR = 64  # smaller chunks go line by line: numpy's fixed costs would outweigh the lines
# TCP and SCTP count ESTABLISHED as active (kernels before 3.x spelled SCTP's "ESTABISHED").
ACTIVE_STATES = frozenset(("ESTABLISHED", "ESTABISHED"))
# The forms /proc prints (%08X, uncompressed %pI6), which parse_addr surely accepts: checking a new
# client against this is 5x (IPv4) to 19x (IPv6) cheaper than parse_addr, whose IPv6Address() made
# most of the cost of big reads with many distinct IPv6 clients (the demo at 500 x 10).
_USUAL_ADDR = re.compile(r"[0-9A-Fa-f]{8}|[0-9A-Fa-f]{4}(?::[0-9A-Fa-f]{4}){7}")


def _client_ip(text: str) -> IPv4Address | IPv6Address:
    """ip_address(parse_addr(text)[1]), without formatting and parsing the usual forms again."""
    if not _USUAL_ADDR.fullmatch(text):
        return ip_address(parse_addr(text)[1])
    return IPv4Address(int(text, 16)) if len(text) == 8 else IPv6Address(int(text.replace(":", ""), 16))


@dataclass(frozen=True, slots=True)
class ConnFilter:
    """Which entries a summary covers; None matches everything. State and protocol ignore case."""

    service: ServiceKey | None = None
    dest: DestKey | None = None
    client_prefix: IPv4Network | IPv6Network | None = None
    state: str | None = None
    protocol: str | None = None  # as the table prints it: TCP, UDP, SCTP, IP

    def matches_key(self, service: ServiceKey, dest: DestKey, protocol: str, state: str) -> bool:
        return (
            (self.service is None or self.service == service)
            and (self.dest is None or self.dest == dest)
            and (self.state is None or self.state.upper() == state.upper())
            and (self.protocol is None or self.protocol.upper() == protocol.upper())
        )


@dataclass(frozen=True, slots=True)
class ConnCounts:
    """Entries of one service, one dest or the whole table."""

    states: Mapping[str, int]  # connection entries by state; templates not included
    templates: int = 0  # persistence templates (what netlink calls PersistConn)
    origins: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))  # LOCAL/SYNC, _sync only

    @property
    def conns(self) -> int:
        return sum(self.states.values())

    @property
    def active(self) -> int:
        return sum(n for s, n in self.states.items() if s in ACTIVE_STATES)

    @property
    def inactive(self) -> int:
        return self.conns - self.active


@dataclass(frozen=True, slots=True)
class ConnSummary:
    """What one read of the connection table found (the matching entries only, when filtered)."""

    overall: ConnCounts
    by_service: Mapping[ServiceKey, ConnCounts]  # in order of first appearance in the table
    by_dest: Mapping[tuple[ServiceKey, DestKey], ConnCounts]
    top_clients: tuple[tuple[str, int], ...]  # (client address, entries), most first; templates not counted
    distinct_clients: int
    total: int  # entries read, matching or not
    matched: int  # entries that passed the filter, templates included
    unattributed: int | None  # matched entries of no known service; None when services were not given
    entries: tuple[ConnEntry, ...]  # the first matching entries, in table order, for display
    partial: bool  # the time budget stopped the read before the end of the table
    read_seconds: float
    sync: bool  # read from ip_vs_conn_sync (origins counted)
    filters: ConnFilter | None
    mono_time: float  # clock() when the read started


class _Acc:
    """Mutable counts while aggregating."""

    __slots__ = ("origins", "states", "templates")

    def __init__(self) -> None:
        self.states: dict[str, int] = {}  # plain dicts: frozen behind a proxy without a copy
        self.origins: dict[str, int] = {}
        self.templates = 0

    def add(self, other: _Acc) -> None:
        self.templates += other.templates
        for mine, theirs in ((self.states, other.states), (self.origins, other.origins)):
            for name, n in theirs.items():
                mine[name] = mine.get(name, 0) + n

    def freeze(self) -> ConnCounts:
        return ConnCounts(MappingProxyType(self.states), self.templates, MappingProxyType(self.origins))


# A resolved table key: service, dest, passes the filter, attributed to a known service.
_Resolved = tuple[ServiceKey, DestKey, bool, bool]


def _fwmark_of(vaddr: str) -> int:
    # The template's vaddr is the union nf_inet_addr {.ip = htonl(fwmark)}: its first 32 bits.
    return int(vaddr.replace(":", "")[:8], 16)


def _any_port(dkey: DestKey) -> DestKey:
    return DestKey(dkey.family, dkey.address, 0)


def _port_zero_match(dkey: DestKey, dests: frozenset[DestKey]) -> bool:
    """A dest configured with port 0 (fwmark, port-zero services) serves whatever port the packet had."""
    return dkey in dests or _any_port(dkey) in dests


class _Reading:
    """What one summarize() has counted so far, and the two ways of counting a chunk of lines: line by
    line (any input; the errors name their line), and by columns (numpy; well-formed chunks only)."""

    def __init__(self, table: ConnTable, filters: ConnFilter | None, src: str) -> None:
        self.table = table
        self.filters = filters
        self.src = src
        # table key -> [passes the filter, entries, resolution], in order of first appearance
        self.counts: dict[tuple[str, ...], list[Any]] = {}
        self.tcounts: dict[tuple[str, ...], list[Any]] = {}
        self.clients: dict[str, int] = {}  # in order of first appearance too: it breaks top-N ties
        self.client_ok: dict[str, bool] = {}
        self.prefix = filters.client_prefix if filters else None
        self.kept: list[tuple[str, int]] = []
        self.keep = table.max_entries
        self.total = 0
        # what chunks counted by columns have seen: keys (-> their entries) and clients (-> texts)
        self.keys = _Registry(_KEY_WORDS)
        self.client_reg = _Registry(_CLIENT_WORDS)

    def lines(
        self, chunk: list[str], first: int, widths: frozenset[int], key_of: Callable[[list[str]], Any]
    ) -> None:
        """Count `chunk` (its first line is line `first`) one line at a time."""
        counts, tcounts, clients, client_ok = self.counts, self.tcounts, self.clients, self.client_ok
        resolve, filters, prefix, src = self.table._resolve, self.filters, self.prefix, self.src
        kept, usual, count_clients = self.kept, _USUAL_ADDR.fullmatch, self.table.detail
        # Line numbers only matter on errors and for kept entries: chunk.index() finds them
        # (an identical earlier line would have failed or been kept first).
        for line in chunk:
            f = line.split()
            if len(f) not in widths:
                if not f:
                    self.total -= 1  # a blank line is no entry
                    continue
                raise ParseError(
                    f"expected {' or '.join(map(str, sorted(widths)))} fields, got {len(f)}",
                    source=src,
                    line=first + chunk.index(line),
                )
            k = key_of(f)
            template = f[2] == "0000"
            table = tcounts if template else counts
            e = table.get(k)
            if e is None:
                try:
                    res = resolve(k, template, filters)
                    e = table[k] = [res[2], 0, res]
                except ValueError as err:
                    raise ParseError(str(err), source=src, line=first + chunk.index(line)) from None
            if not e[0]:
                continue
            c = f[1]
            try:
                if prefix is not None:
                    ok = client_ok.get(c)
                    if ok is None:
                        ok = client_ok[c] = _client_ip(c) in prefix
                    if not ok:
                        continue
                e[1] += 1
                if count_clients and not template:
                    n = clients.get(c)
                    if n is None:
                        if not usual(c):
                            parse_addr(c)  # validated once per distinct client
                        n = 0
                    clients[c] = n + 1
            except ValueError as err:
                raise ParseError(str(err), source=src, line=first + chunk.index(line)) from None
            if self.keep:
                kept.append((line, first + chunk.index(line)))
                self.keep -= 1
        self.total += len(chunk)

    def columns(
        self,
        chunk: _Chunk,
        first: int,
        widths: frozenset[int],
        key_of: Callable[[list[str]], Any],
        sync: bool,
    ) -> bool:
        """Count `chunk` as lines() would, by columns; False when the chunk is not of the well-formed
        kind this handles (nothing counted: lines() counts it), or holds an error (lines() says where).
        Counts gather in arrays until flush(); only keys and clients never seen before cost Python."""
        cols = _columns(chunk, widths, sync)
        if cols is None:
            return False
        table, filters, prefix = self.table, self.filters, self.prefix
        keys = self.keys
        try:
            # 1. the chunk's keys: known ones by hash, new ones resolved in order of first appearance
            kids = keys.find(cols.key_rows)
            if kids is None:
                return False
            new = np.flatnonzero(kids < 0)
            found: list[list[Any]] = []
            for i, template in zip(
                cols.key_first[new].tolist(), cols.key_template[new].tolist(), strict=True
            ):
                k = key_of(chunk.line(i).split())  # spelt as lines() spells it (spaces may differ)
                counts = self.tcounts if template else self.counts
                e = counts.get(k)
                if e is None:
                    res = table._resolve(k, template, filters)
                    e = counts[k] = [res[2], 0, res]
                found.append(e)
            if found:
                kids[new] = keys.add(cols.key_rows[new], found, [e[0] for e in found])
            kid = kids[cols.key_of_line]
            ok = keys.ok[kid]
            # 2. the client prefix, once per distinct client
            if prefix is not None:
                texts, of_line = self._distinct_clients(cols, ok)
                client_ok = self.client_ok
                good = []
                for c in texts:
                    v = client_ok.get(c)
                    if v is None:
                        v = client_ok[c] = _client_ip(c) in prefix
                    good.append(v)
                ok &= np.array([*good, False], dtype=bool)[of_line]
            # 3. the clients counted: new ones checked once
            cid: np.ndarray | None = None
            if table.detail:
                cid = self._client_ids(cols.client[np.flatnonzero(ok & ~cols.template)])
                if cid is None:
                    return False
        except ValueError:
            return False  # lines() finds the line and says what is wrong with it
        # 4. nothing can fail from here on: count
        keys.count += np.bincount(kid[ok], minlength=len(keys.count))
        if cid is not None:
            self.client_reg.count += np.bincount(cid, minlength=len(self.client_reg.count))
        if self.keep:
            for i in cols.line[np.flatnonzero(ok)[: self.keep]].tolist():
                self.kept.append((chunk.line(i), first + i))
                self.keep -= 1
        self.total += len(cols.line)
        return True

    def _client_ids(self, rows: np.ndarray) -> np.ndarray | None:
        """Each row's number among the clients seen by columns; a new one is checked first (raises
        ValueError as lines() would). None on a hash collision (then lines() counts the chunk)."""
        reg = self.client_reg
        if not len(rows):
            return np.zeros(0, dtype=np.intp)
        first, group = _groups(rows.view(np.uint64))
        distinct = _fixed(rows[first], _CLIENT_WORDS)
        ids = reg.find(distinct)
        if ids is None:
            return None
        new = np.flatnonzero(ids < 0)
        if len(new):
            raws = rows[first[new]].view(f"S{rows.shape[1]}").ravel().tolist()
            texts = [raw.decode("ascii") for raw in raws]
            for c in texts:
                if c not in self.clients and not _USUAL_ADDR.fullmatch(c):
                    parse_addr(c)  # validated once per distinct client
            ids[new] = reg.add(distinct[new], texts, [True] * len(texts))
        out: np.ndarray = ids[group]
        return out

    def flush(self) -> None:
        """Counts gathered by columns into the dicts lines() counts in (in order of first appearance)."""
        for e, n in zip(self.keys.values, self.keys.count.tolist(), strict=True):
            e[1] += n
        self.keys.count[:] = 0
        clients = self.clients
        for c, n in zip(self.client_reg.values, self.client_reg.count.tolist(), strict=True):
            if n:
                clients[c] = clients.get(c, 0) + n
        self.client_reg.count[:] = 0

    def _distinct_clients(self, cols: _Cols, mask: np.ndarray) -> tuple[list[str], np.ndarray]:
        """The distinct clients of the entries in `mask`, in order of first appearance, and each
        entry's number among them (len(texts) for entries outside `mask`)."""
        idx = np.flatnonzero(mask)
        of_line = np.zeros(len(mask), dtype=np.intp)
        if not len(idx):
            return [], of_line
        rows = cols.client[idx]
        first, group = _groups(rows.view(np.uint64))
        texts = [raw.decode("ascii") for raw in rows[first].view(f"S{rows.shape[1]}").ravel().tolist()]
        of_line[:] = len(texts)
        of_line[idx] = group
        return texts, of_line


class _Registry:
    """Distinct rows of a fixed number of u64 words, numbered in order of first appearance, each with
    a value, a count and (for keys) whether it passes the filter. A chunk's rows find their numbers
    by hash (a sorted array and searchsorted), checked word for word."""

    def __init__(self, words: int) -> None:
        self._rows = np.zeros((64, words), dtype=np.uint64)  # rows[:n] in use: room to grow in place
        self.order = np.zeros(0, dtype=np.intp)  # numbers by hash
        self.sorted = np.zeros(0, dtype=np.uint64)  # their hashes
        self.values: list[Any] = []
        self.count = np.zeros(0, dtype=np.int64)
        self.ok = np.zeros(0, dtype=bool)

    def find(self, rows: np.ndarray) -> np.ndarray | None:
        """The number of each row, -1 for rows never seen; None if a hash matched another row."""
        ids = np.full(len(rows), -1, dtype=np.intp)
        if not len(self.sorted):
            return ids
        h = _hash(rows)
        pos = np.minimum(np.searchsorted(self.sorted, h), len(self.sorted) - 1)
        hit = self.sorted[pos] == h
        ids[hit] = self.order[pos[hit]]
        if not np.array_equal(self._rows[ids[hit]], rows[hit]):
            return None
        return ids

    def add(self, rows: np.ndarray, values: list[Any], ok: list[bool]) -> np.ndarray:
        """Number new distinct rows; returns their numbers."""
        n, k = len(self.values), len(values)
        if n + k > len(self._rows):  # doubling: a chunk's few new rows do not copy all the others
            grown = np.zeros((max(2 * len(self._rows), n + k), self._rows.shape[1]), dtype=np.uint64)
            grown[:n] = self._rows[:n]
            self._rows = grown
        self._rows[n : n + k] = rows
        h = _hash(rows)
        by_hash = np.argsort(h, kind="stable")
        at = np.searchsorted(self.sorted, h[by_hash], side="right")  # merged in: no sort of them all
        self.sorted = np.insert(self.sorted, at, h[by_hash])
        self.order = np.insert(self.order, at, n + by_hash)
        self.values += values
        self.count = np.concatenate([self.count, np.zeros(k, dtype=np.int64)])
        self.ok = np.concatenate([self.ok, np.array(ok, dtype=bool)])
        return np.arange(n, n + k)


# ASCII whitespace as str.split() sees it
_WS = np.zeros(256, dtype=bool)
_WS[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True
_WS_BYTES = _WS.astype(np.uint8).tobytes()  # for bytes.translate: 3x faster than indexing _WS
_MIX = np.uint64(0x9E3779B97F4A7C15)
_MAX_KEY = 200  # bytes from vaddr to state (or origin): IPv6 needs 3 x 39 + 27; longer goes line by line
_MAX_CLIENT = 48
_KEY_WORDS = (1 + 4 + _MAX_KEY + 7) // 8  # a key as the registry keeps it: flag, protocol, span
_CLIENT_WORDS = _MAX_CLIENT // 8


@dataclass(frozen=True, slots=True)
class _Cols:
    """A chunk's entries (its non-blank lines) as columns."""

    line: np.ndarray  # per entry: its index in the chunk
    template: np.ndarray  # per entry: client port 0000
    key_of_line: np.ndarray  # per entry: its key's number; keys numbered in order of first appearance
    key_first: np.ndarray  # per key: the chunk index of its first entry
    key_template: np.ndarray  # per key
    key_rows: np.ndarray  # per key: its bytes (template flag, protocol, vaddr to state), _KEY_WORDS u64
    client: np.ndarray  # per entry: the client's text, zero padded to whole u64 words (uint8 rows)


def _rows(windows: np.ndarray, start: np.ndarray, length: np.ndarray, width: int) -> np.ndarray:
    """(n, width) uint8: each row the `length` bytes from `start`, zero padded. `windows` is the text's
    sliding_window_view: a row is one copy, not `width` lookups."""
    out = windows[start, :width]
    out[np.arange(width) >= length[:, None]] = 0
    return out


def _padded(parts: list[np.ndarray]) -> np.ndarray:
    """Byte columns side by side, zero padded to whole u64 words: (n, 8k) uint8, contiguous."""
    n = len(parts[0])
    pad = -sum(p.shape[1] for p in parts) % 8
    return np.ascontiguousarray(np.concatenate([*parts, np.zeros((n, pad), dtype=np.uint8)], axis=1))


def _hash(words: np.ndarray) -> np.ndarray:
    """One u64 per row of u64 words."""
    h = words[:, 0].copy()
    for c in range(1, words.shape[1]):
        h ^= words[:, c]
        h *= _MIX
    return h


def _fixed(rows: np.ndarray, words: int) -> np.ndarray:
    """uint8 rows zero padded to `words` u64 words: (n, words) u64."""
    out = np.zeros((len(rows), words * 8), dtype=np.uint8)
    out[:, : rows.shape[1]] = rows
    return out.view(np.uint64)


def _groups(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equal rows grouped: (first row of each group, group of each row), groups numbered in order of
    first appearance. Grouped by a hash of the words, checked exactly (a collision sorts the rows)."""
    h = _hash(words)
    _, first, inv = np.unique(h, return_index=True, return_inverse=True)
    if not np.array_equal(words, words[first[inv]]):  # two different rows, one hash
        rows = np.ascontiguousarray(words).view(np.dtype((np.void, words.shape[1] * 8))).ravel()
        _, first, inv = np.unique(rows, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inv.ravel()]


def _keys(
    windows: np.ndarray,
    template: np.ndarray,
    p_start: np.ndarray,
    p_len: np.ndarray,
    k_start: np.ndarray,
    k_len: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The entries' keys grouped: (first entry of each key, key of each entry, each key's bytes as
    _KEY_WORDS u64), keys numbered in order of first appearance. IPv4 keys (short) and the others are
    grouped apart, each in rows of its own width: equal keys have equal lengths."""
    firsts, groups, rows = [], [], []
    short = k_len <= 48  # an IPv4 key, sync origin included
    for idx in (np.flatnonzero(short), np.flatnonzero(~short)):
        if not len(idx):
            continue
        width = int(k_len[idx].max())
        keys = np.zeros((len(idx), (5 + width + 7) // 8 * 8), dtype=np.uint8)
        keys[:, 0] = template[idx]
        keys[:, 1:5] = _rows(windows, p_start[idx], p_len[idx], 4)
        keys[:, 5 : 5 + width] = _rows(windows, k_start[idx], k_len[idx], width)
        first, group = _groups(keys.view(np.uint64))
        firsts.append(idx[first])
        groups.append((idx, group + sum(len(f) for f in firsts[:-1])))
        rows.append(_fixed(keys[first], _KEY_WORDS))
    first = np.concatenate(firsts)
    order = np.argsort(first, kind="stable")  # both kinds together, in order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    key_of_line = np.empty(len(k_len), dtype=np.intp)
    for idx, group in groups:
        key_of_line[idx] = rank[group]
    return first[order], key_of_line, np.concatenate(rows)[order]


class _Chunk:
    """Lines to count: a list of them (any source), or a block of whole lines of a ConnFile (bytes:
    not made into str objects unless a line is kept, names a new key or must be counted by lines())."""

    def __init__(self, lines: list[str] | None, block: bytes = b"") -> None:
        self._lines = lines
        self._block = block
        self._starts: np.ndarray | None = None  # of the block's lines, once _columns has found them
        self.n = len(lines) if lines is not None else block.count(b"\n") + (not block.endswith(b"\n"))

    def lines(self) -> list[str]:
        """The lines as a text file gives them (newline included but on a file's unended last line)."""
        if self._lines is None:
            parts = self._block.decode("ascii").split("\n")
            self._lines = [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
        return self._lines

    def line(self, i: int) -> str:
        if self._lines is not None or self._starts is None:
            return self.lines()[i]
        end = int(self._starts[i + 1]) if i + 1 < self.n else len(self._block)
        return self._block[int(self._starts[i]) : end].decode("ascii")

    def text(self) -> bytes | None:
        """The lines as ASCII, each ended by a newline (lines apart: a line's own newlines are
        whitespace in it); None if not ASCII."""
        if self._lines is None:
            return self._block if self._block.endswith(b"\n") else self._block + b"\n"
        text = "\n".join(self._lines)
        return text.encode("ascii") + b"\n" if text.isascii() else None

    def starts(self, text: np.ndarray) -> np.ndarray:
        """Where each line starts in text() (as uint8)."""
        starts = np.zeros(self.n, dtype=np.int64)
        if self._lines is None:
            starts[1:] = np.flatnonzero(text == 10)[:-1] + 1
            self._starts = starts
        else:
            np.cumsum(np.fromiter(map(len, self._lines), dtype=np.int64, count=self.n)[:-1] + 1, out=starts[1:])
        return starts


def _columns(chunk: _Chunk, widths: frozenset[int], sync: bool) -> _Cols | None:
    """The chunk as columns; None unless every line is ASCII with a field count of `widths` (or blank)
    and no field is longer than the kernel ever prints."""
    buf = chunk.text()
    if buf is None:
        return None
    a = np.frombuffer(buf + bytes(_MAX_KEY), dtype=np.uint8)  # zeros after: every window is whole
    windows = np.lib.stride_tricks.sliding_window_view(a, _MAX_KEY)
    starts = chunk.starts(a[: len(buf)])
    ws = np.frombuffer(buf.translate(_WS_BYTES), dtype=np.int8)
    # fields start (-1) and end (+1) by turns, the text ending in a blank: [start, end)
    edges = np.flatnonzero(np.diff(ws, prepend=np.int8(1)))
    tstart, tend = edges[0::2], edges[1::2]
    ntok = np.diff(np.searchsorted(tstart, starts), append=len(tstart))  # fields per line
    blank = ntok == 0
    if not np.all(np.isin(ntok, list(widths)) | blank):
        return None
    line = np.flatnonzero(~blank)
    if not len(line):
        return None  # blank lines only
    base = (np.cumsum(ntok) - ntok)[line]  # each entry's first field
    p_start, p_len = tstart[base], tend[base] - tstart[base]
    # from vaddr to state (origin): one span, as the kernel prints its fields one space apart
    k_start = tstart[base + 3]
    k_len = tend[base + (8 if sync else 7)] - k_start
    c_start, c_len = tstart[base + 1], tend[base + 1] - tstart[base + 1]
    k_width, c_width = int(k_len.max()), int(c_len.max())
    if int(p_len.max()) > 4 or k_width > _MAX_KEY or c_width > _MAX_CLIENT:
        return None
    cport = windows[tstart[base + 2], :5]  # "0000" and a blank after it: a template
    template = np.all(cport[:, :4] == 48, axis=1) & _WS[cport[:, 4]]
    first, key_of_line, key_rows = _keys(windows, template, p_start, p_len, k_start, k_len)
    return _Cols(
        line=line,
        template=template,
        key_of_line=key_of_line,
        key_first=line[first],
        key_template=template[first],
        key_rows=key_rows,
        client=_padded([_rows(windows, c_start, c_len, c_width)]),
    )


def _line_chunks(it: Iterator[str]) -> tuple[str | None, Iterator[_Chunk]]:
    """The header line and chunks of the lines after it, growing to _BIG_CHUNK lines: the budget is
    checked early, big tables go in bulk."""

    def chunks() -> Iterator[_Chunk]:
        size = _CHUNK
        while lines := list(islice(it, size)):
            yield _Chunk(lines)
            size = min(size * 2, _BIG_CHUNK)

    return next(it, None), chunks()


def _blocks(f: ConnFile) -> tuple[str | None, Iterator[_Chunk]]:
    """_line_chunks() for a file read in blocks (no str per line: 0.4 s less per 1M lines)."""
    block = f.block(_BLOCK)
    cut = block.find(b"\n") + 1 or len(block)

    def chunks() -> Iterator[_Chunk]:
        rest, size = block[cut:], _BLOCK * 2
        if rest:
            yield _Chunk(None, rest)
        while rest := f.block(size):
            yield _Chunk(None, rest)
            size = min(size * 2, _BIG_BLOCK)

    return (block[:cut].decode("ascii") if block else None), chunks()


class ConnTable:
    """Aggregates ip_vs_conn(_sync) text against the known services (see the module doc)."""

    def __init__(
        self,
        services: Iterable[Service] | None = None,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        top_clients: int = DEFAULT_TOP_CLIENTS,
        detail: bool = True,
    ) -> None:
        """`detail=False` sums per service only: no per-dest counts, no clients (neither counted nor
        checked), no kept entries (the exporter's case: at 100k dests they are most of a read's memory)."""
        self.max_entries = max_entries if detail else 0
        self.top_clients = top_clients
        self.detail = detail
        self._known = services is not None
        self._vip: dict[tuple[Protocol, int, str, int], Service] = {}
        self._fwm: dict[tuple[int, int], Service] = {}
        self._fwm_by_dest: defaultdict[DestKey, list[Service]] = defaultdict(list)
        self._dests: dict[ServiceKey, frozenset[DestKey]] = {}
        # (protocol, vaddr, vport, daddr, dport) -> where it goes; templates apart (other rules)
        self._located: dict[tuple[str, ...], tuple[ServiceKey, DestKey, bool]] = {}
        self._tlocated: dict[tuple[str, ...], tuple[ServiceKey, DestKey, bool]] = {}
        self._addrs: dict[str, tuple[int, str]] = {}  # few distinct vaddrs and daddrs, many keys
        for s in services or ():
            k = s.key
            self._dests[k] = frozenset(d.key for d in s.dests)
            if k.is_fwmark:
                self._fwm[(k.family, k.fwmark)] = s
                for d in s.dests:
                    self._fwm_by_dest[d.key].append(s)
            else:
                self._vip[(k.protocol, k.family, k.address, k.port)] = s

    def _addr(self, text: str) -> tuple[int, str]:
        a = self._addrs.get(text)
        if a is None:
            a = self._addrs[text] = parse_addr(text)
        return a

    def _attribute(
        self, proto: str, vaddr: str, vport: str, dkey: DestKey, template: bool
    ) -> tuple[ServiceKey, Service | None]:
        protocol = CONN_PROTOCOLS.get(proto)
        if protocol is None:
            raise ValueError(f"unknown protocol {proto!r}")
        family, address = self._addr(vaddr)
        if protocol is Protocol.NONE:
            mark = _fwmark_of(vaddr)
            svc = self._fwm.get((family, mark))
            return (svc.key if svc else ServiceKey.mark(mark, family)), svc
        port = parse_hex(vport, 4)
        svc = self._vip.get((protocol, family, address, port)) or self._vip.get(
            (protocol, family, address, 0)
        )
        if svc is None or not (template or _port_zero_match(dkey, self._dests[svc.key])):
            owners = [
                s
                for s in self._fwm_by_dest.get(dkey, ()) or self._fwm_by_dest.get(_any_port(dkey), ())
                if s.key.family == family
            ]
            if len(owners) == 1:
                svc = owners[0]
        return (svc.key if svc else ServiceKey(family, protocol, address, port)), svc

    def _locate(
        self, proto: str, vaddr: str, vport: str, daddr: str, dport: str, template: bool
    ) -> tuple[ServiceKey, DestKey, bool]:
        dfamily, dest_address = self._addr(daddr)
        dkey = DestKey(dfamily, dest_address, parse_hex(dport, 4))
        skey, svc = self._attribute(proto, vaddr, vport, dkey, template)
        if svc is not None:
            if template and dkey.port == 0:
                same = [d for d in svc.dests if d.family == dkey.family and d.address == dkey.address]
                if len(same) == 1:
                    dkey = same[0].key
            elif dkey not in self._dests[svc.key] and _any_port(dkey) in self._dests[svc.key]:
                dkey = _any_port(dkey)  # a dest with port 0 takes the packet's own port
        return skey, dkey, svc is not None

    def _resolve(self, k: tuple[str, ...], template: bool, filters: ConnFilter | None) -> _Resolved:
        if len(k) == 7 and k[6] not in CONN_ORIGINS:  # refused as parse_conn_line (the TUI) does
            raise ValueError(f"unknown origin {k[6]!r}")
        # Keys differ mostly by state (and origin): locate each 5-tuple once.
        located = self._tlocated if template else self._located
        where = k[:5]
        loc = located.get(where)
        if loc is None:
            proto, vaddr, vport, daddr, dport = where
            loc = located[where] = self._locate(proto, vaddr, vport, daddr, dport, template)
        skey, dkey, attributed = loc
        ok = filters is None or filters.matches_key(skey, dkey, k[0], k[5])
        return skey, dkey, ok, attributed

    def summarize(
        self,
        lines: Iterable[str],
        *,
        sync: bool,
        budget_s: float | None,
        filters: ConnFilter | None,
        clock: Callable[[], float] = time.monotonic,
        source: str | None = None,
    ) -> ConnSummary:
        """Aggregate the table text (header line first). Stops after `budget_s` seconds (partial)."""
        src = source or (IP_VS_CONN_SYNC if sync else IP_VS_CONN)
        start = clock()
        it = iter(lines)
        try:
            return self._summarize(it, sync, budget_s, filters, clock, src, start)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # release the kernel file early when the budget stopped the read

    def _summarize(
        self,
        it: Iterator[str],
        sync: bool,
        budget_s: float | None,
        filters: ConnFilter | None,
        clock: Callable[[], float],
        src: str,
        start: float,
    ) -> ConnSummary:
        r = _Reading(self, filters, src)
        partial = False
        header, chunks = _blocks(it) if isinstance(it, ConnFile) else _line_chunks(it)
        if header is not None:
            is_sync, widths = conn_layout(header, source=src)
            if is_sync != sync:
                raise ParseError(
                    f"header is that of {'ip_vs_conn_sync' if is_sync else 'ip_vs_conn'} but sync={sync}",
                    source=src,
                    line=1,
                )
            key_of = itemgetter(0, 3, 4, 5, 6, 7, 8) if sync else itemgetter(0, 3, 4, 5, 6, 7)
            first = 2  # line number of the chunk's first line
            for chunk in chunks:
                if not (chunk.n >= _MIN_COLUMNAR and r.columns(chunk, first, widths, key_of, sync)):
                    r.flush()  # lines() adds to the dicts: what columns counted goes in first
                    r.lines(chunk.lines(), first, widths, key_of)
                first += chunk.n
                if budget_s is not None and clock() - start > budget_s:
                    partial = bool(it.block(1)) if isinstance(it, ConnFile) else next(it, None) is not None
                    break
        r.flush()
        return self._build(
            r.counts,
            r.tcounts,
            r.clients,
            r.kept,
            r.total,
            partial,
            sync,
            filters,
            src,
            start,
            clock() - start,
        )

    def _build(
        self,
        counts: Mapping[tuple[str, ...], list[Any]],
        tcounts: Mapping[tuple[str, ...], list[Any]],
        clients: Mapping[str, int],
        kept: list[tuple[str, int]],
        total: int,
        partial: bool,
        sync: bool,
        filters: ConnFilter | None,
        src: str,
        start: float,
        seconds: float,
    ) -> ConnSummary:
        by_dest: defaultdict[tuple[ServiceKey, DestKey], _Acc] = defaultdict(_Acc)
        unattributed = matched = 0
        for table, template in ((counts, False), (tcounts, True)):
            for k, (_, n, (skey, dkey, _, attributed)) in table.items():
                if not n:
                    continue
                matched += n
                unattributed += 0 if attributed else n
                acc = by_dest[(skey, dkey)]
                if template:
                    acc.templates += n
                else:
                    acc.states[k[5]] = acc.states.get(k[5], 0) + n
                if sync:
                    acc.origins[k[6]] = acc.origins.get(k[6], 0) + n
        # services and the whole table from the dests: fewer of them than table keys
        overall = _Acc()
        by_service: defaultdict[ServiceKey, _Acc] = defaultdict(_Acc)
        for (skey, _), acc in by_dest.items():
            for into in (overall, by_service[skey]):
                into.add(acc)
        top = heapq.nlargest(self.top_clients, clients.items(), key=itemgetter(1))
        entries = tuple(parse_conn_line(line, lineno, sync, source=src) for line, lineno in kept)
        return ConnSummary(
            overall=overall.freeze(),
            by_service=MappingProxyType({k: v.freeze() for k, v in by_service.items()}),
            by_dest=MappingProxyType({k: v.freeze() for k, v in by_dest.items()} if self.detail else {}),
            top_clients=tuple((parse_addr(c)[1], n) for c, n in top),
            distinct_clients=len(clients),
            total=total,
            matched=matched,
            unattributed=unattributed if self._known else None,
            entries=entries,
            partial=partial,
            read_seconds=seconds,
            sync=sync,
            filters=filters,
            mono_time=start,
        )


class ConnTableReader:
    """Reads a source's connection table every `interval` seconds in its own thread.

    Prefers ip_vs_conn_sync (origins LOCAL/SYNC counted) and falls back to ip_vs_conn when the
    source says it has no _sync file (SourceError UNAVAILABLE). `services` returns the services
    known now (e.g. from the poller's latest snapshot) for attributing fwmark traffic.
    """

    def __init__(
        self,
        source: Source,
        interval: float = 10.0,
        budget_s: float = 1.0,
        *,
        services: Callable[[], Iterable[Service] | None] | None = None,
        filters: ConnFilter | None = None,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        detail: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.detail = detail  # see ConnTable
        self.interval = interval
        self.budget_s = budget_s
        self.filters = filters  # read once per refresh; assign to change what the next read covers
        self.max_entries = max_entries
        self.last_error: str | None = None
        self._services = services
        self._clock = clock
        self._latest: ConnSummary | None = None
        self._subscribers: list[Callable[[ConnSummary], None]] = []
        self._read_lock = threading.Lock()  # reads never overlap (thread and refresh_now callers)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def latest(self) -> ConnSummary | None:
        return self._latest

    def subscribe(self, cb: Callable[[ConnSummary], None]) -> Callable[[], None]:
        """Call `cb` (from the reader's thread) with every new summary. Returns the unsubscribe."""
        self._subscribers.append(cb)

        def unsubscribe() -> None:
            if cb in self._subscribers:
                self._subscribers.remove(cb)

        return unsubscribe

    def _lines(self) -> tuple[Iterator[str], bool]:
        try:
            return self.source.conn_lines(sync=True), True
        except SourceError as e:
            if e.kind is not IssueKind.UNAVAILABLE:
                raise
        return self.source.conn_lines(sync=False), False

    def refresh_now(self) -> ConnSummary:
        """Read the table now (blocking). Errors are kept in last_error and raised; latest stays."""
        with self._read_lock:
            try:
                known = self._services() if self._services is not None else None
                table = ConnTable(known, max_entries=self.max_entries, detail=self.detail)
                lines, sync = self._lines()
                with gcpolicy.paused():  # a dict entry per distinct line key, no cycles (lvstop.gcpolicy)
                    summary = table.summarize(
                        lines, sync=sync, budget_s=self.budget_s, filters=self.filters, clock=self._clock
                    )
            except LvstopError as e:
                self.last_error = str(e)
                raise
            self.last_error = None
            self._latest = summary
        for cb in list(self._subscribers):
            try:
                cb(summary)
            except Exception:  # one broken consumer must not stop the reads for the others
                log.exception("connection table subscriber failed")
        return summary

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh_now()
            except LvstopError:
                pass  # kept in last_error; the next tick tries again
            except Exception as e:  # a bug must not silently end the reads: say it, keep going
                log.exception("connection table read failed")
                self.last_error = f"internal error: {e!r}"
            self._stop.wait(self.interval)

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="lvstop-conntable", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread; a read under way finishes first (its budget bounds the wait)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
