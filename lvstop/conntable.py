"""The connection table, read off the poller's tick: streaming aggregation of ip_vs_conn lines.

Reading /proc/net/ip_vs_conn can be slow (quadratic on kernels before 6.14), so a read has a time
budget and a summary that was cut short says so (`partial`). Parsing is lazy: the text is counted
in chunks by columns (numpy: field edges, each entry's key and client as rows of bytes, found by hash
among those already seen); /proc's file is read in blocks of whole lines, so an entry costs no str
at all. Hex is decoded only once per distinct (protocol, vaddr, vport, daddr, dport, state) key, and
a client is checked once (a regex for the forms /proc prints, parse_addr for anything else), never
per line. Fields no aggregate needs (client port beyond the template test, expiry, PE data) are
decoded only for the entries kept for display. A chunk that is not well formed is counted line by
line, which names the line of an error.

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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from itertools import islice
from operator import itemgetter
from types import MappingProxyType
from typing import Any

import numpy as np

from lvstop import gcpolicy
from lvstop.errors import LvstopError, ParseError, SourceError
from lvstop.model import (
    ConnEntry,
    DestKey,
    IssueKind,
    Protocol,
    Service,
    ServiceKey,
    ServiceRows,
    Table,
    address_text,
)
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
        self.keys = _Registry()
        self.client_reg = _Registry()

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
            found = _lookup(keys, [(idx, cols.key_rows(idx, w)) for idx, w in cols.key_classes()])
            if found is None:
                return False
            kid, is_new, new_first, parts = found
            values: list[list[Any]] = []
            for i, template in zip(
                cols.line[new_first].tolist(), cols.template[new_first].tolist(), strict=True
            ):
                k = key_of(chunk.line(i).split())  # spelt as lines() spells it (spaces may differ)
                counts = self.tcounts if template else self.counts
                e = counts.get(k)
                if e is None:
                    res = table._resolve(k, template, filters)
                    e = counts[k] = [res[2], 0, res]
                values.append(e)
            if values:
                kid[is_new] += keys.add(parts, values, [e[0] for e in values])
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
                cid = self._client_ids(cols, np.flatnonzero(ok & ~cols.template))
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

    def _client_ids(self, cols: _Cols, entries: np.ndarray) -> np.ndarray | None:
        """The number of each of these entries' clients among those seen by columns; a new one is
        checked first (raises ValueError as lines() would). None on a hash collision."""
        reg = self.client_reg
        found = _lookup(
            reg, [(idx, cols.client_rows(entries[idx], w)) for idx, w in cols.client_classes(entries)]
        )
        if found is None:
            return None
        cid, is_new, _, parts = found
        if len(parts):
            texts: list[str] = [""] * sum(len(rows) for rows, _ in parts)
            for rows, places in parts:
                for raw, i in zip(
                    rows.view(f"S{rows.shape[1] * 8}").ravel().tolist(), places.tolist(), strict=True
                ):
                    texts[i] = raw.decode("ascii")
            for c in texts:
                if c not in self.clients and not _USUAL_ADDR.fullmatch(c):
                    parse_addr(c)  # validated once per distinct client
            cid[is_new] += reg.add(parts, texts, [True] * len(texts))
        return cid

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
        rows = cols.client_rows(idx, _CLIENT_CLASSES[-1])
        first, group = _groups(rows)
        texts = [raw.decode("ascii") for raw in rows[first].view(f"S{_MAX_CLIENT}").ravel().tolist()]
        of_line[:] = len(texts)
        of_line[idx] = group
        return texts, of_line


class _Registry:
    """Distinct rows of u64 words, numbered in order of first appearance, each with a value, a count
    and (for keys) whether it passes the filter. A row's width (in words) is part of what it is: a
    chunk's rows find their numbers by hash in an open-addressing table (linear probing, at most a
    quarter full), checked word for word."""

    def __init__(self) -> None:
        self._rows: dict[int, np.ndarray] = {}  # the rows of each width, each its own width wide
        self._used: dict[int, int] = {}  # how many of them
        self._width = np.zeros(64, dtype=np.intp)  # by number: the row's width, its place among
        self._pos = np.zeros(64, dtype=np.intp)  # those of its width, its hash
        self._hash = np.zeros(64, dtype=np.uint64)
        self._slots = np.full(256, -1, dtype=np.intp)  # numbers by hash, -1 free
        self.values: list[Any] = []
        self.count = np.zeros(0, dtype=np.int64)
        self.ok = np.zeros(0, dtype=bool)

    def _home(self, h: np.ndarray) -> np.ndarray:
        # Fibonacci hashing: the top bits of h * _MIX depend on all of h (a one-word row is its hash)
        return ((h * _MIX) >> np.uint64(65 - len(self._slots).bit_length())).astype(np.intp)

    def find(self, rows: np.ndarray) -> np.ndarray | None:
        """The number of each row, -1 for rows never seen; None if a hash matched another row."""
        if not self.values:
            return np.full(len(rows), -1, dtype=np.intp)
        h = _hash(rows)
        slot, mask = self._home(h), len(self._slots) - 1
        num = self._slots[slot]  # most rows: found, or known to be new, at their first slot
        used = num >= 0
        same = used & (self._hash[num] == h)
        ids = np.where(same, num, -1)
        todo = np.flatnonzero(used & ~same)
        while len(todo):  # the table has free slots: every probe sequence ends
            slot[todo] = (slot[todo] + 1) & mask
            num = self._slots[slot[todo]]
            used = num >= 0
            same = used & (self._hash[num] == h[todo])
            ids[todo[same]] = num[same]
            todo = todo[used & ~same]
        hit = np.flatnonzero(ids >= 0)
        got, w = ids[hit], rows.shape[1]
        if len(hit) and not (
            np.all(self._width[got] == w) and np.array_equal(self._rows[w][self._pos[got]], rows[hit])
        ):
            return None
        return ids

    def _place(self, numbers: np.ndarray) -> None:
        """Put `numbers` (not in the table yet) in their slots."""
        slot, mask = self._home(self._hash[numbers]), len(self._slots) - 1
        todo = np.arange(len(numbers))
        while len(todo):
            s = slot[todo]
            _, first = np.unique(s, return_index=True)  # one number per free slot per round
            first = first[self._slots[s[first]] < 0]
            self._slots[s[first]] = numbers[todo[first]]
            todo = np.delete(todo, first)
            slot[todo] = (slot[todo] + 1) & mask

    def add(self, parts: list[tuple[np.ndarray, np.ndarray]], values: list[Any], ok: list[bool]) -> int:
        """Number new distinct rows: `parts` are rows of one width each and their places among
        `values` (numbered in that order). Returns the first new number."""
        n, k = len(self.values), len(values)
        self._width, self._pos, self._hash = (_room(a, n + k) for a in (self._width, self._pos, self._hash))
        for rows, places in parts:
            w = rows.shape[1]
            used = self._used.get(w, 0)
            store = self._rows[w] = _room(self._rows.get(w, np.zeros((64, w), np.uint64)), used + len(rows))
            store[used : used + len(rows)] = rows
            self._used[w] = used + len(rows)
            self._width[n + places] = w
            self._pos[n + places] = np.arange(used, used + len(rows))
            self._hash[n + places] = _hash(rows)
        if 4 * (n + k) > len(self._slots):  # a quarter full at most: probes stay short
            size = len(self._slots)
            while 4 * (n + k) > size:
                size *= 2
            self._slots = np.full(size, -1, dtype=np.intp)
            self._place(np.arange(n + k))
        else:
            self._place(np.arange(n, n + k))
        self.values += values
        self.count = np.concatenate([self.count, np.zeros(k, dtype=np.int64)])
        self.ok = np.concatenate([self.ok, np.array(ok, dtype=bool)])
        return n


def _room(a: np.ndarray, n: int) -> np.ndarray:
    """`a` (its first rows in use), or a copy of it with room for `n` rows: doubling, so a chunk's few
    new rows do not copy all the others."""
    if n <= len(a):
        return a
    out = np.zeros((max(2 * len(a), n), *a.shape[1:]), dtype=a.dtype)
    out[: len(a)] = a
    return out


def _lookup(
    reg: _Registry, parts: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]] | None:
    """Entries found in `reg` by their rows (`parts`: entry indexes and their rows, one width each).
    Returns each entry's number, or for an entry whose row is new the place of its row among the new
    ones (numbered in order of first appearance); which entries are new; the first entry of each new
    row; and the new rows with their places, for _Registry.add. None on a hash collision."""
    n = sum(len(idx) for idx, _ in parts)
    ids, is_new = np.empty(n, dtype=np.intp), np.zeros(n, dtype=bool)
    news = []
    for idx, rows in parts:
        found = reg.find(rows)
        if found is None:
            return None
        ids[idx] = found
        miss = np.flatnonzero(found < 0)
        if len(miss):  # only rows never seen are grouped: after the first chunks, few
            first, group = _groups(rows[miss])
            news.append((idx[miss], group, idx[miss[first]], rows[miss[first]]))
    if not news:
        return ids, is_new, np.zeros(0, dtype=np.intp), []
    firsts = np.concatenate([f for _, _, f, _ in news])
    order = np.argsort(firsts, kind="stable")
    place = np.empty_like(order)
    place[order] = np.arange(len(order))
    out, at = [], 0
    for entries, group, f, rows in news:
        p = place[at : at + len(f)]
        at += len(f)
        ids[entries] = p[group]
        is_new[entries] = True
        out.append((rows, p))
    return ids, is_new, firsts[order], out


# ASCII whitespace as str.split() sees it
_WS = np.zeros(256, dtype=bool)
_WS[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True
_WS_BYTES = _WS.astype(np.uint8).tobytes()  # for bytes.translate: 3x faster than indexing _WS
_MIX = np.uint64(0x9E3779B97F4A7C15)
# Rows in classes of widths (u64 words) by length: a row always has the same width, so it always
# hashes alike, and short rows (IPv4) cost no padding to the longest.
_KEY_CLASSES = (7, 16, 26)  # template flag, protocol (4), span: IPv4 keys, IPv6, up to _MAX_KEY
_CLIENT_CLASSES = (1, 6)  # an IPv4 client, any other up to _MAX_CLIENT
_MAX_KEY = 8 * _KEY_CLASSES[-1] - 5  # bytes from vaddr to state (or origin): IPv6 needs 3 x 39 + 27
_MAX_CLIENT = 8 * _CLIENT_CLASSES[-1]
_WINDOW = 8 * _KEY_CLASSES[-1]  # the widest row


def _classes(length: np.ndarray, classes: tuple[int, ...]) -> Iterator[tuple[np.ndarray, int]]:
    """The indexes of the rows of each class (rows of `length` bytes) and its width in words."""
    low = -1
    for words in classes:
        idx = np.flatnonzero((length > low) & (length <= 8 * words))
        low = 8 * words
        if len(idx):
            yield idx, words


@dataclass(frozen=True, slots=True)
class _Cols:
    """A chunk's entries (its non-blank lines) as columns: where their fields are in the text."""

    windows: np.ndarray  # the text's sliding_window_view (_WINDOW bytes): a row is one copy
    line: np.ndarray  # per entry: its index in the chunk
    template: np.ndarray  # per entry: client port 0000
    p_start: np.ndarray  # the protocol
    p_len: np.ndarray
    k_start: (
        np.ndarray
    )  # from vaddr to state (origin): one span, the kernel printing its fields one space apart
    k_len: np.ndarray
    c_start: np.ndarray  # the client
    c_len: np.ndarray

    def key_classes(self) -> Iterator[tuple[np.ndarray, int]]:
        return _classes(self.k_len + 5, _KEY_CLASSES)

    def key_rows(self, idx: np.ndarray, words: int) -> np.ndarray:
        """The keys of entries `idx`: template flag, protocol, span, zero padded to `words` u64."""
        rows = np.zeros((len(idx), 8 * words), dtype=np.uint8)
        rows[:, 0] = self.template[idx]
        rows[:, 1:5] = _rows(self.windows, self.p_start[idx], self.p_len[idx], 4)
        rows[:, 5:] = _rows(self.windows, self.k_start[idx], self.k_len[idx], 8 * words - 5)
        return rows.view(np.uint64)

    def client_classes(self, entries: np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
        """_classes of the clients of `entries` (indexes into `entries`)."""
        return _classes(self.c_len[entries], _CLIENT_CLASSES)

    def client_rows(self, idx: np.ndarray, words: int) -> np.ndarray:
        return _rows(self.windows, self.c_start[idx], self.c_len[idx], 8 * words).view(np.uint64)


def _rows(windows: np.ndarray, start: np.ndarray, length: np.ndarray, width: int) -> np.ndarray:
    """(n, width) uint8: each row the `length` bytes from `start`, zero padded. `windows` is the text's
    sliding_window_view: a row is one copy, not `width` lookups."""
    out = windows[start, :width]
    out *= np.arange(width) < length[:, None]  # 1.5x faster than out[mask] = 0
    return out


def _hash(words: np.ndarray) -> np.ndarray:
    """One u64 per row of u64 words."""
    h = words[:, 0].copy()
    for c in range(1, words.shape[1]):
        h ^= words[:, c]
        h *= _MIX
    return h


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
            np.cumsum(
                np.fromiter(map(len, self._lines), dtype=np.int64, count=self.n)[:-1] + 1, out=starts[1:]
            )
        return starts


def _columns(chunk: _Chunk | list[str], widths: frozenset[int], sync: bool) -> _Cols | None:
    """The chunk as columns; None unless every line is ASCII with a field count of `widths` (or blank),
    no NUL byte (rows are zero padded) and no field longer than the kernel ever prints."""
    if isinstance(chunk, list):
        chunk = _Chunk(chunk)
    buf = chunk.text()
    if buf is None or b"\0" in buf:
        return None
    a = np.frombuffer(buf + bytes(_WINDOW), dtype=np.uint8)  # zeros after: every window is whole
    windows = np.lib.stride_tricks.sliding_window_view(a, _WINDOW)
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
    k_start = tstart[base + 3]
    k_len = tend[base + (8 if sync else 7)] - k_start
    c_start, c_len = tstart[base + 1], tend[base + 1] - tstart[base + 1]
    if int(p_len.max()) > 4 or int(k_len.max()) > _MAX_KEY or int(c_len.max()) > _MAX_CLIENT:
        return None
    cport = windows[tstart[base + 2], :5]  # "0000" and a blank after it: a template
    template = np.all(cport[:, :4] == 48, axis=1) & _WS[cport[:, 4]]
    return _Cols(windows, line, template, p_start, p_len, k_start, k_len, c_start, c_len)


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


def _column_keys(table: Table, i: int) -> frozenset[DestKey]:
    """The dest keys of service `i` of `table`, from its columns."""
    lo, hi = int(table.starts[i]), int(table.starts[i + 1])
    d = table.dests
    return frozenset(
        DestKey(f, address_text(f, a), p)
        for f, a, p in zip(
            d.family[lo:hi].tolist(), d.addr[lo:hi].tolist(), d.port[lo:hi].tolist(), strict=True
        )
    )


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
        # The services as rows without their dests, and their dest keys when first needed: from the
        # snapshot's columns when it has them (no Dest rows: 24 MB at 100k dests), else from the rows.
        if isinstance(services, ServiceRows):
            table = services.table
            self._services: Sequence[Service] = table.services
            self._keys_of: Callable[[int], frozenset[DestKey]] = lambda i: _column_keys(table, i)
        else:
            rows = self._services = tuple(services or ())
            self._keys_of = lambda i: frozenset(d.key for d in rows[i].dests)
        self._dest_keys: dict[int, frozenset[DestKey]] = {}
        self._vip: dict[tuple[Protocol, int, str, int], int] = {}  # -> the service's index
        self._fwm: dict[tuple[int, int], int] = {}
        self._fwm_by_dest: dict[DestKey, list[int]] | None = None  # made when first needed
        # (protocol, vaddr, vport, daddr, dport) -> where it goes; templates apart (other rules)
        self._located: dict[tuple[str, ...], tuple[ServiceKey, DestKey, bool]] = {}
        self._tlocated: dict[tuple[str, ...], tuple[ServiceKey, DestKey, bool]] = {}
        self._addrs: dict[str, tuple[int, str]] = {}  # few distinct vaddrs and daddrs, many keys
        for i, s in enumerate(self._services):
            k = s.key
            if k.is_fwmark:
                self._fwm[(k.family, k.fwmark)] = i
            else:
                self._vip[(k.protocol, k.family, k.address, k.port)] = i

    def _dests(self, i: int) -> frozenset[DestKey]:
        keys = self._dest_keys.get(i)
        if keys is None:
            keys = self._dest_keys[i] = self._keys_of(i)
        return keys

    def _fwmark_owners(self, dkey: DestKey) -> list[int]:
        """The fwmark services that have this dest."""
        if self._fwm_by_dest is None:
            self._fwm_by_dest = defaultdict(list)
            for i in self._fwm.values():
                for d in self._dests(i):
                    self._fwm_by_dest[d].append(i)
        return self._fwm_by_dest.get(dkey, [])

    def _addr(self, text: str) -> tuple[int, str]:
        a = self._addrs.get(text)
        if a is None:
            a = self._addrs[text] = parse_addr(text)
        return a

    def _attribute(
        self, proto: str, vaddr: str, vport: str, dkey: DestKey, template: bool
    ) -> tuple[ServiceKey, int | None]:
        protocol = CONN_PROTOCOLS.get(proto)
        if protocol is None:
            raise ValueError(f"unknown protocol {proto!r}")
        family, address = self._addr(vaddr)
        if protocol is Protocol.NONE:
            mark = _fwmark_of(vaddr)
            svc = self._fwm.get((family, mark))
            return (self._services[svc].key if svc is not None else ServiceKey.mark(mark, family)), svc
        port = parse_hex(vport, 4)
        svc = self._vip.get((protocol, family, address, port))
        if svc is None:
            svc = self._vip.get((protocol, family, address, 0))
        if svc is None or not (template or _port_zero_match(dkey, self._dests(svc))):
            owners = [
                i
                for i in self._fwmark_owners(dkey) or self._fwmark_owners(_any_port(dkey))
                if self._services[i].key.family == family
            ]
            if len(owners) == 1:
                svc = owners[0]
        return (
            self._services[svc].key if svc is not None else ServiceKey(family, protocol, address, port)
        ), svc

    def _locate(
        self, proto: str, vaddr: str, vport: str, daddr: str, dport: str, template: bool
    ) -> tuple[ServiceKey, DestKey, bool]:
        dfamily, dest_address = self._addr(daddr)
        dkey = DestKey(dfamily, dest_address, parse_hex(dport, 4))
        skey, svc = self._attribute(proto, vaddr, vport, dkey, template)
        if svc is not None:
            dests = self._dests(svc)
            if template and dkey.port == 0:
                same = [d for d in dests if d.family == dkey.family and d.address == dkey.address]
                if len(same) == 1:
                    dkey = same[0]
            elif dkey not in dests and _any_port(dkey) in dests:
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
