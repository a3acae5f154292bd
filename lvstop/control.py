"""The one write path: weight edits, drains and restores, whoever asks (TUI key, HTTP API, CLI).

Every edit is a read-modify-write of the whole dest (SET_DEST resets whatever it does not carry), then a
read-back that must match. Guards refuse edits that would black-hole a service; drains remember the
previous weight in a state file that survives restarts and is shared by every lvstop process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Protocol

from lvstop import explain

# Keys as JSON (the API, the drain state) are codec's; re-exported for the write path's users.
from lvstop.codec import JsonReader
from lvstop.codec import dest_key_from_dict as dest_key_from_dict
from lvstop.codec import dest_key_to_dict as dest_key_to_dict
from lvstop.codec import service_key_from_dict as service_key_from_dict
from lvstop.codec import service_key_to_dict as service_key_to_dict
from lvstop.errors import ControlError, LvstopError, ParseError, SourceError
from lvstop.events import DRAIN_CLOSED, Event, EventLog
from lvstop.managers import edit_warnings
from lvstop.model import Dest, DestKey, Service, ServiceKey, Snapshot

MAX_WEIGHT = 65535
DEFAULT_DRAIN_STATE = "/var/lib/lvstop/drains.json"
# Processes that own IPVS weights and put their own back (health checks, config reloads).
WEIGHT_MANAGERS = ("keepalived", "ldirectord")
# Dest fields SET_DEST carries; all must read back as written.
_CONFIG_FIELDS = ("fwd", "weight", "u_threshold", "l_threshold", "tun_type", "tun_port", "tun_flags")


class WeightTarget(Protocol):
    """What Control needs from NetlinkSource or SimSource."""

    def read(self) -> Snapshot: ...

    def get_dest(self, skey: ServiceKey, dkey: DestKey) -> Dest | None: ...

    def set_dest(self, skey: ServiceKey, dest: Dest) -> None: ...


class EditError(ControlError):
    """A refused or failed edit; `old` is the weight Control saw, when it got that far."""

    def __init__(self, message: str, *, status: int, old: int | None = None) -> None:
        super().__init__(message, status=status)
        self.old = old


# Why a dest is drained: an operator's drain stays until an operator restores it; health restores only
# its own (lvstop/health/act.py).
CAUSES = ("operator", "health")


@dataclass(frozen=True, slots=True)
class DrainRecord:
    previous: int  # the weight restore puts back
    since: float  # wall time of the drain
    actor: str
    reason: str | None = None
    cause: str = "operator"  # one of CAUSES


def drains_from_dict(doc: object) -> dict[tuple[ServiceKey, DestKey], DrainRecord]:
    """The drain state file's `drains`, or GET /api/v1/drains' (which adds fields, ignored here);
    ParseError naming the path of the first wrong value."""

    def record(r: JsonReader) -> tuple[tuple[ServiceKey, DestKey], DrainRecord]:
        previous = r.integer("previous")
        if not 0 < previous <= MAX_WEIGHT:
            raise ParseError(f"{r.path}.previous: the weight to restore, {previous}, is not 1..{MAX_WEIGHT}")
        cause = r.text("cause", "operator")  # written before causes existed: every drain an operator's
        if cause not in CAUSES:
            raise ParseError(f"{r.path}.cause: {cause!r} is not one of {', '.join(CAUSES)}")
        rec = DrainRecord(previous, r.number("since"), r.text("actor"), r.opt_text("reason"), cause)
        return (r.service_key("service"), r.dest_key("dest")), rec

    return dict(JsonReader(doc, "").items("drains", record, required=True))


@dataclass(frozen=True, slots=True)
class ControlResult:
    action: str  # set_weight | drain | restore
    outcome: str  # applied | dry_run | unchanged
    service: ServiceKey
    dest: DestKey
    old: int  # weight read from the kernel before the edit
    requested: int
    verified: int | None  # weight read back after the write; None when nothing was written
    active_conns: int  # at the time of the edit: what a drain has to wait for
    warnings: tuple[str, ...] = ()
    previous: int | None = None  # drain/restore: the remembered weight


# --- weight managers ---


def detect_weight_managers(proc_root: str = "/proc") -> tuple[tuple[str, int], ...]:
    """(name, pid) of running keepalived/ldirectord, from {proc_root}/*/comm (and perl's cmdline)."""
    found: list[tuple[str, int]] = []
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return ()
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            comm = Path(proc_root, entry, "comm").read_text().strip()
            if comm.startswith("perl"):  # ldirectord started as `perl /usr/sbin/ldirectord`
                args = Path(proc_root, entry, "cmdline").read_bytes().split(b"\0")
                comm = next((os.path.basename(a.decode(errors="replace")) for a in args[1:2]), comm)
        except OSError:  # the process exited while we looked
            continue
        if comm in WEIGHT_MANAGERS:
            found.append((comm, int(entry)))
    return tuple(sorted(found, key=lambda f: (f[0], f[1])))


class WeightManagers:
    """detect_weight_managers at most once per `ttl` seconds: it reads every /proc/*/comm, and edits,
    scrapes and status requests all ask. Thread-safe; share one per process."""

    def __init__(
        self, proc_root: str = "/proc", ttl: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.proc_root = proc_root
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._found: tuple[tuple[str, int], ...] = ()
        self._at: float | None = None

    def __call__(self) -> tuple[tuple[str, int], ...]:
        with self._lock:
            now = self._clock()
            if self._at is None or not self._at <= now < self._at + self.ttl:
                self._found, self._at = detect_weight_managers(self.proc_root), now
            return self._found


def manager_warnings(managers: tuple[tuple[str, int], ...]) -> tuple[str, ...]:
    return tuple(
        f"{name} (pid {pid}) is running: it manages IPVS weights and may put its own weight back"
        for name, pid in managers
    )


# --- drain state file ---


class DrainState:
    """The drains file: JSON, replaced atomically, locked so the TUI and the exporter can share it.

    `cause` came after version 1 and did not change it: a record without one is an operator's, and
    versions that do not know it ignore it (a health drain looks to them like any other drain)."""

    VERSION = 1

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[tuple[ServiceKey, DestKey], DrainRecord]]:
        """Load under an exclusive lock held for the body; the body calls save() for what it changes."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(f"{self.path}.lock", "a")  # noqa: SIM115 - closed below, after the body
        except OSError as e:
            msg = f"{self.path}: cannot lock the drain state: {e.strerror}"
            raise ControlError(msg, status=500) from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield self._load()

    def load(self) -> dict[tuple[ServiceKey, DestKey], DrainRecord]:
        with self.locked() as drains:
            return dict(drains)

    def _load(self) -> dict[tuple[ServiceKey, DestKey], DrainRecord]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise LvstopError(f"{self.path}: cannot read the drain state: {e.strerror}") from None
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("version") != self.VERSION:
                raise ValueError(f"expected an object with version {self.VERSION}")
            return drains_from_dict(doc)
        except (ValueError, ParseError) as e:
            # Never overwrite a file we cannot read: it may hold the only copy of someone's weights.
            raise LvstopError(f"{self.path}: unreadable drain state ({e}); fix or move it away") from None

    def save(self, drains: dict[tuple[ServiceKey, DestKey], DrainRecord]) -> None:
        try:
            self._save(drains)
        except OSError as e:
            msg = f"{self.path}: cannot write the drain state: {e.strerror}"
            raise ControlError(msg, status=500) from None

    def _save(self, drains: dict[tuple[ServiceKey, DestKey], DrainRecord]) -> None:
        doc = {
            "version": self.VERSION,
            "drains": [
                {
                    "service": service_key_to_dict(s),
                    "dest": dest_key_to_dict(d),
                    "previous": r.previous,
                    "since": r.since,
                    "actor": r.actor,
                    "reason": r.reason,
                    "cause": r.cause,
                }
                for (s, d), r in sorted(drains.items())
            ],
        }
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)  # make the rename itself durable
        finally:
            os.close(dfd)


# --- Control ---


class Control:
    """Weight edits through `target` (NetlinkSource or SimSource), guarded, verified and remembered."""

    def __init__(
        self,
        target: WeightTarget,
        drain_state_path: str | os.PathLike[str],
        events: EventLog | None = None,
        floor: int = 0,
        *,
        latest: Callable[[], Snapshot | None] | None = None,
        proc_root: str = "/proc",
        clock: Callable[[], float] = time.time,
        managers: WeightManagers | None = None,
    ) -> None:
        """`latest` gives the poller's last snapshot (which dests a service has, sysctls; the guard re-reads
        their weights); without it Control reads.
        `managers` finds keepalived/ldirectord (default: a cached scan of `proc_root`)."""
        if not 0 <= floor <= MAX_WEIGHT * 1000:
            raise ValueError(f"floor must be >= 0, not {floor}")
        self.target = target
        self.state = DrainState(drain_state_path)
        self.events = events
        self.floor = floor
        self._latest = latest
        self.managers = managers if managers is not None else WeightManagers(proc_root)
        self._clock = clock
        self._lock = threading.Lock()  # one edit at a time per process; the file lock covers the others

    # public API

    def set_weight(
        self,
        skey: ServiceKey,
        dkey: DestKey,
        weight: int,
        *,
        expect: int | None = None,
        force: bool = False,
        reason: str | None = None,
        dry_run: bool = False,
        actor: str,
    ) -> ControlResult:
        with self._lock, self.state.locked() as drains:
            res = self._edit("set_weight", skey, dkey, weight, expect, force, reason, dry_run, actor)
            if res.outcome == "applied" and weight > 0 and drains.pop((skey, dkey), None) is not None:
                self.state.save(drains)  # given traffic again: no longer drained, nothing to restore
            return res

    def drain(
        self,
        skey: ServiceKey,
        dkey: DestKey,
        *,
        expect: int | None = None,
        force: bool = False,
        reason: str | None = None,
        dry_run: bool = False,
        actor: str,
        cause: str = "operator",
        remember: int | None = None,
    ) -> ControlResult:
        """Weight 0, the previous weight (or `remember`: a ramp's target) remembered for restore.
        Draining a drained dest changes nothing, except that an operator's drain of a dest health
        drained makes the drain the operator's: health will not restore it."""
        if cause not in CAUSES:
            raise EditError(f"cause must be one of {', '.join(CAUSES)}, not {cause!r}", status=400)
        if remember is not None and (type(remember) is not int or not 0 < remember <= MAX_WEIGHT):
            raise EditError(f"remember must be an integer 1..{MAX_WEIGHT}, not {remember!r}", status=400)
        with self._lock, self.state.locked() as drains:
            rec = drains.get((skey, dkey))
            cur = self._current(skey, dkey)
            if cur.weight == 0:
                if rec is None:
                    raise EditError(
                        f"{dkey} in {skey} already has weight 0 and no remembered weight: "
                        "nothing to drain or to restore later",
                        status=409,
                        old=0,
                    )
                self._check_expect(cur, expect)
                warnings: tuple[str, ...] = ()
                if rec.cause == "health" and cause == "operator":
                    warnings = (
                        f"drained by health since {rec.since:.0f}: now drained by {actor}, "
                        "health will not restore it",
                    )
                    if not dry_run:
                        drains[(skey, dkey)] = DrainRecord(rec.previous, rec.since, actor, reason, cause)
                        self.state.save(drains)
                return self._result("drain", "unchanged", skey, cur, 0, 0, warnings, rec.previous)
            previous = remember if remember is not None else cur.weight
            if dry_run:
                res = self._edit("drain", skey, dkey, 0, expect, force, reason, True, actor)
                return dataclasses.replace(res, previous=previous)
            # Remember first: a crash after the write must still leave the weight to restore.
            drains[(skey, dkey)] = DrainRecord(previous, self._clock(), actor, reason, cause)
            self.state.save(drains)
            try:
                res = self._edit("drain", skey, dkey, 0, expect, force, reason, False, actor)
            except ControlError:
                after = self._safe_get(skey, dkey)
                if after is None or after.weight != 0:  # not drained after all: forget it again
                    del drains[(skey, dkey)]
                    self.state.save(drains)
                raise
            return dataclasses.replace(res, previous=previous)

    def restore(
        self,
        skey: ServiceKey,
        dkey: DestKey,
        *,
        expect: int | None = None,
        force: bool = False,
        reason: str | None = None,
        dry_run: bool = False,
        actor: str,
    ) -> ControlResult:
        """Put back the weight drain remembered; refused if it moved since, unless `expect` says so."""
        with self._lock, self.state.locked() as drains:
            rec = drains.get((skey, dkey))
            if rec is None:
                cur = self._safe_get(skey, dkey)
                raise EditError(
                    f"{dkey} in {skey} was not drained by lvstop: no weight to restore",
                    status=409 if cur is not None else 404,
                    old=cur.weight if cur else None,
                )
            cur = self._current(skey, dkey)
            if cur.weight != 0 and expect is None:
                raise EditError(
                    f"{dkey} in {skey} has weight {cur.weight}, not 0: it changed since the drain; "
                    "pass the weight you see as expect to restore anyway",
                    status=409,
                    old=cur.weight,
                )
            res = self._edit("restore", skey, dkey, rec.previous, expect, force, reason, dry_run, actor)
            if not dry_run:
                del drains[(skey, dkey)]
                self.state.save(drains)
            return dataclasses.replace(res, previous=rec.previous)

    def drains(self) -> dict[tuple[ServiceKey, DestKey], DrainRecord]:
        """Drains in place (as remembered in the state file, so also those of other lvstop processes)."""
        return self.state.load()

    def reconcile(self, snap: Snapshot) -> list[Event]:
        """Close the drain records of dests that got a weight back outside lvstop (keepalived, ipvsadm,
        someone after a restart): they serve again and a restore would undo that. One event each.

        `snap` only picks candidates: each is re-read now, as the poll may predate a drain's write.
        Raises LvstopError for a drain state file that cannot be read."""
        if not self.state.path.exists():
            return []
        closed: list[Event] = []
        with self._lock, self.state.locked() as drains:
            for (skey, dkey), rec in list(drains.items()):
                svc = snap.service(skey)
                seen = svc.dest(dkey) if svc is not None else None
                if seen is None or seen.weight == 0:
                    continue
                now = self._weight_now(skey, dkey)
                if not now:
                    continue
                del drains[(skey, dkey)]
                message = (
                    f"{skey} -> {dkey}: drain undone outside lvstop, the dest serves again at weight {now} "
                    "(set by another writer, or removed and added back as keepalived does); its drain "
                    f"(weight {rec.previous} remembered by {rec.actor}) is closed"
                )
                closed.append(Event(self._clock(), DRAIN_CLOSED, message, skey, dkey, 0, now))
            if closed:
                self.state.save(drains)
        if self.events is not None:
            for e in closed:
                self.events.append(e)
        return closed

    # internals

    def _edit(
        self,
        action: str,
        skey: ServiceKey,
        dkey: DestKey,
        weight: int,
        expect: int | None,
        force: bool,
        reason: str | None,
        dry_run: bool,
        actor: str,
    ) -> ControlResult:
        if type(weight) is not int or not 0 <= weight <= MAX_WEIGHT:
            raise EditError(f"weight must be an integer 0..{MAX_WEIGHT}, not {weight!r}", status=400)
        if expect is not None and (type(expect) is not int or not 0 <= expect <= MAX_WEIGHT):
            raise EditError(f"expect must be an integer 0..{MAX_WEIGHT}, not {expect!r}", status=400)
        if force and not (reason and reason.strip()):
            raise EditError("force needs a reason", status=400)
        cur = self._current(skey, dkey)
        self._check_expect(cur, expect)
        snap = self._snapshot()
        self._guard(skey, cur, weight, force, snap)
        warnings = self._warnings(skey, dkey, weight, snap)
        if dry_run:
            return self._result(action, "dry_run", skey, cur, weight, None, warnings)
        if weight == cur.weight:
            return self._result(action, "unchanged", skey, cur, weight, cur.weight, warnings)
        wanted = dataclasses.replace(cur, weight=weight)
        if self.events is not None:
            # Before the write: the next poll may run before we return, and must credit lvstop.
            self.events.expect_weight(
                skey, dkey, weight, actor, f"forced {action}" if force else action, reason
            )
        try:
            after = self._write(skey, wanted, cur.weight)
        except ControlError:
            # Unless the weight is there after all, a later change to it is someone else's.
            if self.events is not None and self._weight_now(skey, dkey) != weight:
                self.events.withdraw_weight(skey, dkey, weight, actor)
            raise
        return self._result(action, "applied", skey, cur, weight, after.weight, warnings)

    def _write(self, skey: ServiceKey, wanted: Dest, old: int) -> Dest:
        """SET_DEST, then the read-back, which must match what was written."""
        try:
            self.target.set_dest(skey, wanted)
        except (SourceError, OSError) as e:
            raise EditError(f"the kernel refused the edit: {e}", status=500, old=old) from None
        except ControlError as e:
            raise EditError(str(e), status=e.status, old=old) from None
        after = self._safe_get(skey, wanted.key)
        if after is None:
            raise EditError(f"{wanted.key} vanished from {skey} during the edit", status=500, old=old)
        diff = [f for f in _CONFIG_FIELDS if getattr(after, f) != getattr(wanted, f)]
        if diff:
            got = ", ".join(f"{f}={getattr(after, f)!r} (wanted {getattr(wanted, f)!r})" for f in diff)
            raise EditError(f"read-back mismatch after the edit: {got}", status=500, old=old)
        return after

    def _weight_now(self, skey: ServiceKey, dkey: DestKey) -> int | None:
        """The weight in the kernel now; None when it cannot be read (also: a read-only target)."""
        try:
            after = self.target.get_dest(skey, dkey)
        except (SourceError, OSError, ControlError):
            return None
        return after.weight if after is not None else None

    def _result(
        self,
        action: str,
        outcome: str,
        skey: ServiceKey,
        cur: Dest,
        requested: int,
        verified: int | None,
        warnings: tuple[str, ...] = (),
        previous: int | None = None,
    ) -> ControlResult:
        return ControlResult(
            action,
            outcome,
            skey,
            cur.key,
            cur.weight,
            requested,
            verified,
            cur.active_conns,
            warnings,
            previous,
        )

    def _current(self, skey: ServiceKey, dkey: DestKey) -> Dest:
        cur = self._safe_get(skey, dkey)
        if cur is None:
            raise EditError(f"no dest {dkey} in service {skey}; nothing was added", status=404)
        return cur

    def _safe_get(self, skey: ServiceKey, dkey: DestKey) -> Dest | None:
        try:
            return self.target.get_dest(skey, dkey)
        except (SourceError, OSError) as e:
            raise EditError(f"cannot read {dkey} in {skey}: {e}", status=503) from None

    @staticmethod
    def _check_expect(cur: Dest, expect: int | None) -> None:
        if expect is not None and cur.weight != expect:
            raise EditError(
                f"weight of {cur.key} is {cur.weight}, not {expect} as expected: it changed meanwhile",
                status=409,
                old=cur.weight,
            )

    def _snapshot(self) -> Snapshot | None:
        snap = self._latest() if self._latest is not None else None
        if snap is None:
            try:
                snap = self.target.read()
            except (SourceError, OSError):
                return None
        return snap

    def _guard(self, skey: ServiceKey, cur: Dest, weight: int, force: bool, snap: Snapshot | None) -> None:
        if force or weight >= cur.weight:
            return
        need = max(1, self.floor)  # the live weight the service must keep (cur.weight > 0 here)
        svc = snap.service(skey) if snap is not None else None
        # Siblings as the snapshot lists them, each re-read now: keepalived or an operator may have
        # zeroed or removed one since the last poll (None: gone, not live).
        # Dests added since the snapshot are not counted: that can only refuse a safe edit, never allow
        # a black hole.
        siblings = sorted((d for d in svc.dests if d.key != cur.key), key=lambda d: -d.weight) if svc else []
        # Each re-read dumps the whole service (GET_DEST): past one full read's worth, one read is cheaper.
        budget = sum(len(s.dests) for s in snap.services) if snap is not None else 0
        others = 0
        for i, d in enumerate(siblings):  # heaviest first, stopping at enough: usually one read
            if others + weight >= need:
                break
            if (i + 1) * len(siblings) > budget:
                others = self._live_now(skey, cur.key)
                break
            now = self._safe_get(skey, d.key)
            others += now.weight if now is not None else 0
        if others + weight < need:
            self._refuse(skey, cur, others + weight)

    def _refuse(self, skey: ServiceKey, cur: Dest, after: int) -> NoReturn:
        if after == 0:
            problem = f"this takes the last live weight of {skey} to 0: it would drop all new traffic"
        else:
            problem = f"this takes the live weight of {skey} to {after}, below the floor of {self.floor}"
        raise EditError(
            f"refused: {problem}; give force and a reason to do it anyway", status=409, old=cur.weight
        )

    def _live_now(self, skey: ServiceKey, dkey: DestKey) -> int:
        """The live weight of skey's dests other than dkey, from one fresh read (dests added since count)."""
        try:
            svc = self.target.read().service(skey)
        except (SourceError, OSError) as e:
            raise EditError(f"cannot read {skey}: {e}", status=503) from None
        return sum(d.weight for d in svc.dests if d.key != dkey) if svc is not None else 0

    def _warnings(
        self, skey: ServiceKey, dkey: DestKey, weight: int, snap: Snapshot | None
    ) -> tuple[str, ...]:
        out: list[str] = []
        if weight == 0 and snap is not None:
            svc: Service | None = snap.service(skey)
            sysctls = snap.sysctls
            if svc is not None and svc.persistent and sysctls.get("expire_quiescent_template", 0) == 0:
                out.append(
                    f"{skey} is persistent ({svc.timeout} s) and expire_quiescent_template=0: clients with a "
                    "persistence template keep coming to this dest until their template expires"
                )
            if sysctls.get("expire_nodest_conn", 0) == 0:  # the same words as the director view's
                out.append(f"expire_nodest_conn=0: {explain.sysctl('expire_nodest_conn', 0)}")
        netns = getattr(self.target, "netns", None)  # NetlinkSource's; the demo has none
        out.extend(edit_warnings(self.managers(), skey, dkey, self.managers.proc_root, netns))
        return tuple(out)
