"""Control: read-modify-write, verification, guards, drain state, warnings."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from pathlib import Path

import pytest

from lvstop.codec import service_key_to_dict
from lvstop.control import (
    Control,
    ControlResult,
    DrainRecord,
    DrainState,
    EditError,
    WeightManagers,
    detect_weight_managers,
    drains_from_dict,
    service_key_from_dict,
)
from lvstop.errors import ControlError, LvstopError, ParseError, SourceError
from lvstop.events import WEIGHT_CHANGED, Event, EventLog
from lvstop.exporter.ramp import Ramps
from lvstop.model import (
    AF_INET,
    AF_INET6,
    SVC_F_PERSISTENT,
    Dest,
    DestKey,
    FwdMethod,
    IssueKind,
    Service,
    ServiceKey,
    Snapshot,
    TunType,
)
from lvstop.sources.remote import edit_result

WEB = ServiceKey.tcp("203.0.113.10", 80)
STICKY = ServiceKey.tcp("203.0.113.10", 443)
MARK6 = ServiceKey.mark(7, AF_INET6)


def _dest(addr: str, weight: int, **kw: object) -> Dest:
    fam = AF_INET6 if ":" in addr else AF_INET
    return Dest(fam, addr, 8080, FwdMethod.MASQ, weight, **kw)  # type: ignore[arg-type]


class FakeTarget:
    """A director in memory with the get_dest/set_dest/read contract of NetlinkSource and SimSource."""

    def __init__(self, sysctls: dict[str, int] | None = None) -> None:
        self.services: dict[ServiceKey, Service] = {
            WEB: Service(
                WEB,
                "wrr",
                dests=(
                    _dest("192.0.2.11", 5, u_threshold=100, l_threshold=10, active_conns=7),
                    _dest("192.0.2.12", 3),
                    Dest(
                        AF_INET,
                        "192.0.2.13",
                        8080,
                        FwdMethod.TUNNEL,
                        2,
                        tun_type=TunType.GUE,
                        tun_port=6080,
                        tun_flags=1,
                    ),
                ),
            ),
            STICKY: Service(
                STICKY, "wlc", flags=SVC_F_PERSISTENT, timeout=300, dests=(_dest("192.0.2.11", 1),)
            ),
            MARK6: Service(MARK6, "rr", dests=(_dest("2001:db8::11", 4), _dest("2001:db8::12", 0))),
        }
        self.sysctls = (
            sysctls if sysctls is not None else {"expire_nodest_conn": 1, "expire_quiescent_template": 1}
        )
        self.writes: list[tuple[ServiceKey, Dest]] = []
        self.log: list[str] = []
        self.fail_set: Exception | None = None
        self.fail_get: Exception | None = None
        self.gets: list[DestKey] = []
        self.reads: list[int] = []
        self.mangle: dict[str, object] = {}  # fields the "kernel" stores differently (pyroute2's fwd trap)

    def read(self) -> Snapshot:
        self.reads.append(1)
        return Snapshot(
            "demo", "test", 0.0, 0.0, services=tuple(self.services.values()), sysctls=self.sysctls
        )

    def get_dest(self, skey: ServiceKey, dkey: DestKey) -> Dest | None:
        self.gets.append(dkey)
        if self.fail_get is not None:
            raise self.fail_get
        svc = self.services.get(skey)
        return svc.dest(dkey) if svc else None

    def counted(self) -> tuple[list[DestKey], list[int]]:
        """The dests read and the whole reads made from now on (what a guard costs the kernel)."""
        self.gets.clear()
        self.reads.clear()
        return self.gets, self.reads

    def set_dest(self, skey: ServiceKey, dest: Dest) -> None:
        self.log.append("set_dest")
        if self.fail_set is not None:
            raise self.fail_set
        svc = self.services[skey]
        assert svc.dest(dest.key) is not None, "Control must never add a dest"
        self.writes.append((skey, dest))
        stored = dataclasses.replace(dest, **self.mangle)  # type: ignore[arg-type]
        self.services[skey] = dataclasses.replace(
            svc, dests=tuple(stored if d.key == dest.key else d for d in svc.dests)
        )

    def weight(self, skey: ServiceKey, addr: str) -> int:
        d = self.get_dest(skey, DestKey(AF_INET6 if ":" in addr else AF_INET, addr, 8080))
        assert d is not None
        return d.weight


class FakeEvents:
    def __init__(self, target: FakeTarget) -> None:
        self.expected: list[tuple[ServiceKey, DestKey, int, str]] = []
        self.target = target

    def expect_weight(
        self,
        skey: ServiceKey,
        dkey: DestKey,
        weight: int,
        actor: str,
        action: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.target.log.append("expect_weight")
        self.expected.append((skey, dkey, weight, actor))

    def withdraw_weight(self, skey: ServiceKey, dkey: DestKey, weight: int, actor: str) -> None:
        self.target.log.append("withdraw_weight")
        self.expected.remove((skey, dkey, weight, actor))


class StepClock:
    """Ramp time that moves only when the test releases a step: no race with a loaded machine."""

    def __init__(self) -> None:
        self.now = 0.0
        self.steps = threading.Semaphore(0)

    def monotonic(self) -> float:
        return self.now

    def wait(self, cancel: threading.Event, seconds: float) -> bool:
        while not self.steps.acquire(timeout=0.01):
            if cancel.is_set():
                return True
        self.now += seconds
        return cancel.is_set()


def dk(addr: str) -> DestKey:
    return DestKey(AF_INET6 if ":" in addr else AF_INET, addr, 8080)


@pytest.fixture
def target() -> FakeTarget:
    return FakeTarget()


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    (root / "1").mkdir(parents=True)
    (root / "1" / "comm").write_text("systemd\n")
    return root


@pytest.fixture
def control(target: FakeTarget, tmp_path: Path, proc: Path) -> Control:
    events = FakeEvents(target)
    return Control(target, tmp_path / "state" / "drains.json", events, proc_root=str(proc))  # type: ignore[arg-type]


def test_set_weight_changes_only_the_weight_and_verifies(control: Control, target: FakeTarget) -> None:
    before = target.get_dest(WEB, dk("192.0.2.13"))
    res = control.set_weight(WEB, dk("192.0.2.13"), 9, actor="alice")
    after = target.get_dest(WEB, dk("192.0.2.13"))
    assert before is not None and after is not None
    assert res.outcome == "applied" and (res.old, res.requested, res.verified) == (2, 9, 9)
    assert after == dataclasses.replace(before, weight=9)  # tunnel type/port/flags kept
    assert target.writes == [(WEB, dataclasses.replace(before, weight=9))]


def test_the_event_log_is_told_before_the_write(control: Control, target: FakeTarget) -> None:
    control.set_weight(WEB, dk("192.0.2.12"), 4, actor="alice")
    assert target.log == ["expect_weight", "set_dest"]
    assert control.events.expected == [(WEB, dk("192.0.2.12"), 4, "alice")]  # type: ignore[union-attr]


def _weight_change(old: int, new: int) -> Event:
    return Event(101.0, WEIGHT_CHANGED, "w", WEB, dk("192.0.2.12"), old, new)


@pytest.mark.parametrize(
    "failure,mangle", [(SourceError(IssueKind.NO_PERMISSION, "EPERM"), {}), (None, {"weight": 3})]
)
def test_a_failed_write_withdraws_its_expectation(
    target: FakeTarget, tmp_path: Path, proc: Path, failure: Exception | None, mangle: dict[str, object]
) -> None:
    log = EventLog(clock=lambda: 100.0)
    control = Control(target, tmp_path / "drains.json", log, proc_root=str(proc))
    target.fail_set, target.mangle = failure, mangle
    with pytest.raises(ControlError):
        control.set_weight(WEB, dk("192.0.2.12"), 4, actor="alice")
    # keepalived sets the same weight a little later: not lvstop's doing
    assert log.append(_weight_change(3, 4)).actor is None


def test_a_write_that_landed_despite_an_error_keeps_its_expectation(
    target: FakeTarget, tmp_path: Path, proc: Path
) -> None:
    log = EventLog(clock=lambda: 100.0)
    control = Control(target, tmp_path / "drains.json", log, proc_root=str(proc))
    target.mangle = {"u_threshold": 9}  # the weight was written, another field reads back wrong
    with pytest.raises(ControlError):
        control.set_weight(WEB, dk("192.0.2.12"), 4, actor="alice")
    assert log.append(_weight_change(3, 4)).actor == "alice"


@pytest.mark.parametrize(
    "skey,addr", [(WEB, "192.0.2.99"), (ServiceKey.tcp("203.0.113.99", 80), "192.0.2.11")]
)
def test_unknown_service_or_dest_is_404_and_nothing_is_added(
    control: Control, target: FakeTarget, skey: ServiceKey, addr: str
) -> None:
    with pytest.raises(ControlError) as e:
        control.set_weight(skey, dk(addr), 1, actor="a")
    assert e.value.status == 404 and "nothing was added" in str(e.value)
    assert target.writes == []


@pytest.mark.parametrize("weight", [-1, 65536, 1.5, True, "3"])
def test_weight_outside_range_is_400(control: Control, target: FakeTarget, weight: object) -> None:
    with pytest.raises(ControlError) as e:
        control.set_weight(WEB, dk("192.0.2.11"), weight, actor="a")  # type: ignore[arg-type]
    assert e.value.status == 400
    assert target.writes == []


def test_weight_bounds_are_accepted(control: Control, target: FakeTarget) -> None:
    assert control.set_weight(WEB, dk("192.0.2.11"), 65535, actor="a").verified == 65535
    assert control.set_weight(WEB, dk("192.0.2.12"), 0, actor="a").verified == 0


def test_compare_and_set_mismatch_is_409(control: Control, target: FakeTarget) -> None:
    with pytest.raises(EditError) as e:
        control.set_weight(WEB, dk("192.0.2.11"), 1, expect=4, actor="a")
    assert e.value.status == 409 and e.value.old == 5
    assert control.set_weight(WEB, dk("192.0.2.11"), 1, expect=5, actor="a").verified == 1


def test_last_live_weight_to_zero_is_refused_without_force_and_reason(
    control: Control, target: FakeTarget
) -> None:
    with pytest.raises(ControlError) as e:
        control.set_weight(MARK6, dk("2001:db8::11"), 0, actor="a")
    assert e.value.status == 409 and "last live weight" in str(e.value)
    with pytest.raises(ControlError) as e:
        control.set_weight(MARK6, dk("2001:db8::11"), 0, force=True, reason="  ", actor="a")
    assert e.value.status == 400
    assert target.writes == []
    res = control.set_weight(MARK6, dk("2001:db8::11"), 0, force=True, reason="maintenance", actor="a")
    assert res.verified == 0 and target.weight(MARK6, "2001:db8::11") == 0


def _stale(target: FakeTarget) -> Snapshot:
    """What the poller saw a moment ago; the tests then change the "kernel" behind its back."""
    return target.read()


def _set(target: FakeTarget, skey: ServiceKey, addr: str, weight: int | None) -> None:
    """keepalived or another operator: a new weight, or the dest removed (None)."""
    svc = target.services[skey]
    dests = tuple(
        dataclasses.replace(d, weight=weight) if d.key == dk(addr) and weight is not None else d
        for d in svc.dests
        if d.key != dk(addr) or weight is not None
    )
    target.services[skey] = dataclasses.replace(svc, dests=dests)


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("gone", [0, None], ids=["zeroed", "removed"])
def test_the_guard_sees_siblings_zeroed_or_removed_since_the_snapshot(
    target: FakeTarget, tmp_path: Path, dry_run: bool, gone: int | None
) -> None:
    latest = _stale(target)  # 192.0.2.12 and .13 live there
    ctl = Control(target, tmp_path / "d.json", latest=lambda: latest, proc_root=str(tmp_path))
    _set(target, WEB, "192.0.2.12", gone)
    _set(target, WEB, "192.0.2.13", gone)
    with pytest.raises(EditError) as e:
        ctl.drain(WEB, dk("192.0.2.11"), dry_run=dry_run, actor="a")
    assert e.value.status == 409 and "last live weight" in str(e.value) and e.value.old == 5
    with pytest.raises(EditError) as e:
        ctl.set_weight(WEB, dk("192.0.2.11"), 0, dry_run=dry_run, actor="a")
    assert e.value.status == 409 and "last live weight" in str(e.value)
    assert target.writes == [] and ctl.drains() == {}
    res = ctl.drain(WEB, dk("192.0.2.11"), force=True, reason="r", dry_run=dry_run, actor="a")
    assert res.outcome == ("dry_run" if dry_run else "applied")


def test_the_guard_sees_a_sibling_live_again_since_the_snapshot(target: FakeTarget, tmp_path: Path) -> None:
    latest = _stale(target)  # 2001:db8::12 at 0 there: 2001:db8::11 holds the last live weight
    ctl = Control(target, tmp_path / "d.json", latest=lambda: latest, proc_root=str(tmp_path))
    _set(target, MARK6, "2001:db8::12", 4)
    assert ctl.drain(MARK6, dk("2001:db8::11"), dry_run=True, actor="a").outcome == "dry_run"
    res = ctl.drain(MARK6, dk("2001:db8::11"), actor="a")
    assert (res.outcome, res.verified, res.previous) == ("applied", 0, 4)


def test_the_floor_counts_the_siblings_current_weights(target: FakeTarget, tmp_path: Path) -> None:
    latest = _stale(target)  # 5 + 3 + 2 there
    ctl = Control(target, tmp_path / "d.json", floor=4, latest=lambda: latest, proc_root=str(tmp_path))
    _set(target, WEB, "192.0.2.12", 1)
    _set(target, WEB, "192.0.2.13", 0)
    with pytest.raises(EditError) as e:  # the snapshot says 2 + 3 + 2 = 7; it is 2 + 1 + 0 = 3 now
        ctl.set_weight(WEB, dk("192.0.2.11"), 2, actor="a")
    assert e.value.status == 409 and "to 3, below the floor of 4" in str(e.value)
    assert ctl.set_weight(WEB, dk("192.0.2.11"), 3, actor="a").verified == 3  # 3 + 1 = 4


def test_the_guard_reads_the_heaviest_siblings_until_the_service_is_safe(
    target: FakeTarget, tmp_path: Path
) -> None:
    latest = target.read()
    gets, reads = target.counted()
    ctl = Control(target, tmp_path / "d.json", latest=lambda: latest, proc_root=str(tmp_path))
    ctl.set_weight(WEB, dk("192.0.2.11"), 6, actor="a")
    assert gets == [dk("192.0.2.11")] * 2 and reads == []  # raising: the edit and its read-back only
    gets.clear()
    ctl.set_weight(WEB, dk("192.0.2.13"), 0, actor="a")
    assert gets == [dk("192.0.2.13"), dk("192.0.2.11"), dk("192.0.2.13")]  # .11 (5) was enough
    gets.clear()
    with pytest.raises(EditError):  # refused only once every sibling was read
        ctl.set_weight(MARK6, dk("2001:db8::11"), 0, actor="a")
    assert gets == [dk("2001:db8::11"), dk("2001:db8::12")]
    gets.clear()
    ctl.set_weight(MARK6, dk("2001:db8::11"), 0, force=True, reason="r", actor="a")
    assert gets == [dk("2001:db8::11")] * 2 and reads == []  # forced: nothing to check
    ctl = Control(target, tmp_path / "d.json", proc_root=str(tmp_path))  # no poller: one read
    ctl.set_weight(WEB, dk("192.0.2.12"), 1, actor="a")
    assert reads == [1]


def test_a_big_service_is_rechecked_with_one_read_not_a_dump_per_sibling(tmp_path: Path) -> None:
    target = FakeTarget()
    big = Service(WEB, "wrr", dests=tuple(_dest(f"192.0.2.{i}", 5 - i) for i in range(1, 5)))
    target.services = {WEB: big}  # a read decodes 4 dests; two sibling re-reads would decode 2 x 4
    latest = _stale(target)
    ctl = Control(target, tmp_path / "d.json", latest=lambda: latest, proc_root=str(tmp_path))
    for addr in ("192.0.2.2", "192.0.2.3", "192.0.2.4"):
        _set(target, WEB, addr, 0)
    gets, reads = target.counted()
    with pytest.raises(EditError) as e:
        ctl.set_weight(WEB, dk("192.0.2.1"), 0, actor="a")
    assert e.value.status == 409 and "last live weight" in str(e.value)
    assert gets == [dk("192.0.2.1"), dk("192.0.2.2")] and reads == [1]  # the heaviest sibling, then a read
    target.services[WEB] = dataclasses.replace(
        target.services[WEB], dests=(*target.services[WEB].dests, _dest("192.0.2.5", 1))
    )  # added since the snapshot: the read counts it
    assert ctl.set_weight(WEB, dk("192.0.2.1"), 0, actor="a").verified == 0

    def unreadable() -> Snapshot:
        raise SourceError(IssueKind.IO, "No buffer space available")

    target.read = unreadable  # type: ignore[method-assign]
    with pytest.raises(EditError) as e:
        ctl.set_weight(WEB, dk("192.0.2.5"), 0, actor="a")
    assert (
        e.value.status == 503 and "No buffer space" in str(e.value) and target.weight(WEB, "192.0.2.5") == 1
    )


def test_a_dest_added_since_the_snapshot_is_not_counted_by_sibling_rereads(tmp_path: Path) -> None:
    target = FakeTarget()
    target.services = {WEB: Service(WEB, "wrr", dests=(_dest("192.0.2.1", 4), _dest("192.0.2.2", 3)))}
    latest = _stale(target)
    ctl = Control(target, tmp_path / "d.json", latest=lambda: latest, proc_root=str(tmp_path))
    _set(target, WEB, "192.0.2.2", None)
    target.services[WEB] = dataclasses.replace(
        target.services[WEB], dests=(*target.services[WEB].dests, _dest("192.0.2.3", 2))
    )
    with pytest.raises(EditError):  # .3 is not in the snapshot: refused, the safe side
        ctl.set_weight(WEB, dk("192.0.2.1"), 0, actor="a")
    assert target.weight(WEB, "192.0.2.1") == 4


def test_a_sibling_that_cannot_be_read_refuses_the_edit(target: FakeTarget, tmp_path: Path) -> None:
    latest = _stale(target)
    ctl = Control(target, tmp_path / "d.json", latest=lambda: latest, proc_root=str(tmp_path))
    get_dest = target.get_dest

    def failing(skey: ServiceKey, dkey: DestKey) -> Dest | None:
        if dkey == dk("192.0.2.11"):
            raise SourceError(IssueKind.IO, "No buffer space available")
        return get_dest(skey, dkey)

    target.get_dest = failing  # type: ignore[method-assign]
    with pytest.raises(EditError) as e:
        ctl.drain(WEB, dk("192.0.2.13"), actor="a")
    assert e.value.status == 503 and "192.0.2.11" in str(e.value) and "No buffer space" in str(e.value)
    assert target.writes == [] and ctl.drains() == {}


def test_quick_drains_one_after_another_keep_the_last_live_weight(target: FakeTarget, tmp_path: Path) -> None:
    latest = _stale(target)  # never refreshed: the poller is slower than the operator
    ctl = Control(target, tmp_path / "d.json", latest=lambda: latest, proc_root=str(tmp_path))
    ctl.drain(WEB, dk("192.0.2.12"), actor="a")
    ctl.drain(WEB, dk("192.0.2.13"), actor="a")
    with pytest.raises(EditError) as e:  # the stale snapshot still shows 3 + 2 of live weight elsewhere
        ctl.drain(WEB, dk("192.0.2.11"), actor="a")
    assert e.value.status == 409
    target.set_dest(WEB, _dest("192.0.2.12", 4))  # someone gives .12 weight again: seen before any poll
    assert ctl.drain(WEB, dk("192.0.2.11"), actor="a").verified == 0


def test_a_ramp_to_zero_stops_when_the_siblings_went_down_meanwhile(
    target: FakeTarget, tmp_path: Path
) -> None:
    latest = _stale(target)
    ctl = Control(target, tmp_path / "d.json", latest=lambda: latest, proc_root=str(tmp_path))
    clock = StepClock()
    ramps = Ramps(ctl, on_step=lambda *a: None, monotonic=clock.monotonic, wait=clock.wait)
    check, ramp, plan = ramps.start(
        WEB, dk("192.0.2.11"), 0, 0.4, 2, expect=None, force=False, reason=None, dry_run=False, actor="a"
    )
    assert check.outcome == "dry_run" and plan == [(0.2, 3), (0.4, 0)] and ramp is not None
    _set(target, WEB, "192.0.2.12", None)  # before the first step (at 0.2 s)
    _set(target, WEB, "192.0.2.13", 0)
    clock.steps.release(2)
    assert ramp.thread is not None
    ramp.thread.join(timeout=10)
    assert clock.now == pytest.approx(0.4)
    assert ramp.state == "failed" and "last live weight" in (ramp.error or "")
    assert target.weight(WEB, "192.0.2.11") == 3  # the first step went through, the last was refused


def test_floor_guards_the_service_total_and_raising_is_always_allowed(
    target: FakeTarget, tmp_path: Path
) -> None:
    ctl = Control(target, tmp_path / "d.json", floor=8, proc_root=str(tmp_path))
    ctl.set_weight(WEB, dk("192.0.2.11"), 3, actor="a")  # 10 -> 8
    with pytest.raises(ControlError) as e:
        ctl.set_weight(WEB, dk("192.0.2.12"), 2, actor="a")  # 8 -> 7
    assert e.value.status == 409 and "floor of 8" in str(e.value)
    assert ctl.set_weight(MARK6, dk("2001:db8::12"), 5, actor="a").verified == 5  # 4 -> 9: raising
    assert ctl.set_weight(WEB, dk("192.0.2.12"), 2, force=True, reason="r", actor="a").verified == 2


def test_dry_run_writes_nothing_and_returns_the_plan(control: Control, target: FakeTarget) -> None:
    res = control.set_weight(WEB, dk("192.0.2.11"), 2, dry_run=True, actor="a")
    assert (res.outcome, res.old, res.requested, res.verified) == ("dry_run", 5, 2, None)
    assert target.writes == [] and target.weight(WEB, "192.0.2.11") == 5
    with pytest.raises(ControlError):  # dry-run still applies every guard
        control.set_weight(MARK6, dk("2001:db8::11"), 0, dry_run=True, actor="a")


def test_read_back_mismatch_is_a_failure(control: Control, target: FakeTarget) -> None:
    target.mangle = {"fwd": FwdMethod.ROUTE}  # what pyroute2's IPVSDest default does to a Masq server
    with pytest.raises(ControlError) as e:
        control.set_weight(WEB, dk("192.0.2.11"), 4, actor="a")
    assert e.value.status == 500 and "fwd" in str(e.value) and "mismatch" in str(e.value)


def test_kernel_refusal_is_500_with_its_text(control: Control, target: FakeTarget) -> None:
    target.fail_set = SourceError(IssueKind.NO_PERMISSION, "Operation not permitted")
    with pytest.raises(ControlError) as e:
        control.set_weight(WEB, dk("192.0.2.11"), 4, actor="a")
    assert e.value.status == 500 and "Operation not permitted" in str(e.value)


def test_drain_remembers_and_restore_survives_a_restart(target: FakeTarget, tmp_path: Path) -> None:
    path = tmp_path / "drains.json"
    ctl = Control(target, path, proc_root=str(tmp_path), clock=lambda: 1000.0)
    res = ctl.drain(WEB, dk("192.0.2.11"), reason="kernel update", actor="alice")
    assert (res.outcome, res.old, res.verified, res.previous, res.active_conns) == ("applied", 5, 0, 5, 7)
    assert target.weight(WEB, "192.0.2.11") == 0
    doc = json.loads(path.read_text())
    assert doc["drains"][0]["previous"] == 5 and doc["drains"][0]["actor"] == "alice"
    restarted = Control(target, path, proc_root=str(tmp_path))
    rec = restarted.drains()[(WEB, dk("192.0.2.11"))]
    assert (rec.previous, rec.since, rec.reason) == (5, 1000.0, "kernel update")
    res = restarted.restore(WEB, dk("192.0.2.11"), actor="bob")
    assert (res.outcome, res.verified, res.previous) == ("applied", 5, 5)
    assert restarted.drains() == {} and target.weight(WEB, "192.0.2.11") == 5


def test_drain_is_idempotent_and_a_zero_weight_dest_cannot_be_drained(
    control: Control, target: FakeTarget
) -> None:
    control.drain(WEB, dk("192.0.2.12"), actor="a")
    again = control.drain(WEB, dk("192.0.2.12"), actor="a")
    assert (again.outcome, again.previous) == ("unchanged", 3)
    assert len(target.writes) == 1
    with pytest.raises(ControlError) as e:
        control.drain(MARK6, dk("2001:db8::12"), actor="a")
    assert e.value.status == 409


def test_dry_run_drain_remembers_nothing(control: Control, target: FakeTarget) -> None:
    res = control.drain(WEB, dk("192.0.2.12"), dry_run=True, actor="a")
    assert (res.outcome, res.previous, res.requested) == ("dry_run", 3, 0)
    assert control.drains() == {} and target.writes == []


def test_failed_drain_forgets_the_weight_again(control: Control, target: FakeTarget) -> None:
    target.fail_set = SourceError(IssueKind.IO, "No buffer space available")
    with pytest.raises(ControlError):
        control.drain(WEB, dk("192.0.2.12"), actor="a")
    assert control.drains() == {}


def test_restore_refuses_what_was_not_drained_or_moved_since(control: Control, target: FakeTarget) -> None:
    with pytest.raises(ControlError) as e:
        control.restore(WEB, dk("192.0.2.12"), actor="a")
    assert e.value.status == 409
    with pytest.raises(ControlError) as e:
        control.restore(WEB, dk("192.0.2.99"), actor="a")
    assert e.value.status == 404
    control.drain(WEB, dk("192.0.2.12"), actor="a")
    target.set_dest(WEB, _dest("192.0.2.12", 1))  # keepalived puts a weight back
    with pytest.raises(ControlError) as e:
        control.restore(WEB, dk("192.0.2.12"), actor="a")
    assert e.value.status == 409 and "changed since the drain" in str(e.value)
    assert control.restore(WEB, dk("192.0.2.12"), expect=1, actor="a").verified == 3


def test_giving_a_drained_dest_weight_again_ends_the_drain(control: Control, target: FakeTarget) -> None:
    control.drain(WEB, dk("192.0.2.12"), actor="a")
    control.set_weight(WEB, dk("192.0.2.12"), 0, actor="a")  # still drained
    assert list(control.drains()) == [(WEB, dk("192.0.2.12"))]
    control.set_weight(WEB, dk("192.0.2.12"), 2, actor="a")
    assert control.drains() == {}


def test_dry_run_restore_keeps_the_record(control: Control, target: FakeTarget) -> None:
    control.drain(WEB, dk("192.0.2.12"), actor="a")
    res = control.restore(WEB, dk("192.0.2.12"), dry_run=True, actor="a")
    assert (res.outcome, res.requested) == ("dry_run", 3)
    assert list(control.drains()) == [(WEB, dk("192.0.2.12"))]


def test_two_processes_sharing_the_state_file_keep_both_drains(target: FakeTarget, tmp_path: Path) -> None:
    path = tmp_path / "drains.json"
    a = Control(target, path, proc_root=str(tmp_path))
    b = Control(target, path, proc_root=str(tmp_path))
    threads = [
        threading.Thread(target=a.drain, args=(WEB, dk("192.0.2.12")), kwargs={"actor": "a"}),
        threading.Thread(target=b.drain, args=(WEB, dk("192.0.2.13")), kwargs={"actor": "b"}),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(a.drains()) == {(WEB, dk("192.0.2.12")), (WEB, dk("192.0.2.13"))}


def test_an_unreadable_state_file_is_never_overwritten(target: FakeTarget, tmp_path: Path) -> None:
    path = tmp_path / "drains.json"
    path.write_text('{"version": 1, "drains": [{"service": 3}]}')
    ctl = Control(target, path, proc_root=str(tmp_path))
    with pytest.raises(LvstopError) as e:
        ctl.drain(WEB, dk("192.0.2.12"), actor="a")
    assert "unreadable drain state" in str(e.value)
    assert path.read_text() == '{"version": 1, "drains": [{"service": 3}]}'
    assert target.writes == []


def test_state_file_is_replaced_atomically_without_leftovers(control: Control, tmp_path: Path) -> None:
    control.drain(WEB, dk("192.0.2.12"), actor="a")
    control.drain(MARK6, dk("2001:db8::11"), force=True, reason="r", actor="a")
    files = sorted(p.name for p in (tmp_path / "state").iterdir())
    assert files == ["drains.json", "drains.json.lock"]
    state = DrainState(tmp_path / "state" / "drains.json").load()
    assert {k: r.previous for k, r in state.items()} == {
        (WEB, dk("192.0.2.12")): 3,
        (MARK6, dk("2001:db8::11")): 4,
    }


def test_drain_warnings_for_persistence_and_sysctls(tmp_path: Path) -> None:
    target = FakeTarget({"expire_nodest_conn": 0, "expire_quiescent_template": 0})
    ctl = Control(target, tmp_path / "d.json", proc_root=str(tmp_path))
    target.services[STICKY] = dataclasses.replace(
        target.services[STICKY], dests=(*target.services[STICKY].dests, _dest("192.0.2.12", 1))
    )
    res = ctl.drain(STICKY, dk("192.0.2.11"), actor="a")
    text = " ".join(res.warnings)
    assert (
        "expire_quiescent_template=0" in text
        and "persistent (300 s)" in text
        and "expire_nodest_conn=0" in text
    )
    calm = Control(FakeTarget(), tmp_path / "e.json", proc_root=str(tmp_path))
    assert calm.drain(WEB, dk("192.0.2.11"), actor="a").warnings == ()


def test_keepalived_and_ldirectord_are_detected_and_warned_about(control: Control, proc: Path) -> None:
    (proc / "812").mkdir()
    (proc / "812" / "comm").write_text("keepalived\n")
    (proc / "901").mkdir()
    (proc / "901" / "comm").write_text("perl\n")
    (proc / "901" / "cmdline").write_bytes(b"/usr/bin/perl\0/usr/sbin/ldirectord\0start\0")
    (proc / "self").mkdir()
    (proc / "77").mkdir()  # a process that exited between listdir and read
    assert detect_weight_managers(str(proc)) == (("keepalived", 812), ("ldirectord", 901))
    res = control.set_weight(WEB, dk("192.0.2.11"), 4, actor="a")
    assert len(res.warnings) == 2 and "keepalived (pid 812)" in res.warnings[0]
    assert detect_weight_managers(str(proc / "missing")) == ()


def test_manager_warnings_only_for_the_services_it_manages(control: Control, proc: Path) -> None:
    (proc / "812/root/etc/keepalived").mkdir(parents=True)
    (proc / "812" / "comm").write_text("keepalived\n")
    (proc / "812" / "cmdline").write_bytes(b"/usr/sbin/keepalived\0--dont-fork\0")
    (proc / "812/root/etc/keepalived/keepalived.conf").write_text(
        "virtual_server 203.0.113.10 80 {\n  real_server 192.0.2.11 8080 {\n    weight 7\n  }\n}\n"
    )
    res = control.set_weight(WEB, dk("192.0.2.11"), 4, actor="a")
    assert res.warnings == (
        "keepalived (pid 812) manages TCP 203.0.113.10:80 (virtual_server 203.0.113.10 80, "
        "/etc/keepalived/keepalived.conf:1): keepalived puts weight 7 back on a reload or restart, and "
        "removes a failing server and adds it back at its configured weight when it recovers",
    )
    assert control.set_weight(STICKY, dk("192.0.2.11"), 4, actor="a").warnings == ()  # not keepalived's


def test_weight_managers_are_scanned_at_most_once_per_ttl(
    target: FakeTarget, tmp_path: Path, proc: Path
) -> None:
    now = [100.0]
    managers = WeightManagers(str(proc), ttl=5.0, clock=lambda: now[0])
    ctl = Control(target, tmp_path / "d.json", managers=managers)
    assert ctl.set_weight(WEB, dk("192.0.2.11"), 4, actor="a").warnings == ()
    (proc / "812").mkdir()
    (proc / "812" / "comm").write_text("keepalived\n")
    now[0] = 104.9
    assert managers() == () and ctl.set_weight(WEB, dk("192.0.2.11"), 6, actor="a").warnings == ()
    now[0] = 105.0
    assert managers() == (("keepalived", 812),)
    assert "keepalived (pid 812)" in ctl.set_weight(WEB, dk("192.0.2.11"), 7, actor="a").warnings[0]
    now[0] = 50.0  # a clock that went back rescans rather than trusting the old answer
    (proc / "812" / "comm").write_text("sleep\n")
    assert managers() == ()


@pytest.mark.parametrize(
    "doc,message",
    [
        ({"protocol": "icmp", "address": "203.0.113.1", "port": 1}, "protocol"),
        ({"family": "inet", "protocol": "tcp", "address": "2001:db8::1", "port": 1}, "does not match family"),
        ({"protocol": {}, "address": "203.0.113.1", "port": 1}, "protocol"),
        ({"protocol": "tcp", "address": "nope", "port": 1}, "not an IP address"),
        ({"protocol": "tcp", "address": "203.0.113.1", "port": 70000}, "port"),
        ({"fwmark": -1}, "fwmark"),
        ({"family": "ipx", "fwmark": 1}, "family"),
    ],
)
def test_service_keys_from_json_say_what_is_wrong(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        service_key_from_dict(doc)


@pytest.mark.parametrize("key", [WEB, MARK6, ServiceKey.udp("2001:db8::1", 53)])
def test_service_keys_round_trip_through_json(key: ServiceKey) -> None:
    assert service_key_from_dict(json.loads(json.dumps(service_key_to_dict(key)))) == key


def test_result_is_frozen(control: Control) -> None:
    res = control.set_weight(WEB, dk("192.0.2.11"), 5, actor="a")
    assert isinstance(res, ControlResult) and res.outcome == "unchanged"
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.old = 1  # type: ignore[misc]


def test_an_unwritable_state_directory_is_a_clear_error(target: FakeTarget, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")  # a file where the state directory should be: mkdir fails even for root
    ctl = Control(target, blocker / "drains.json", proc_root=str(tmp_path))
    with pytest.raises(ControlError) as e:
        ctl.drain(WEB, dk("192.0.2.12"), actor="a")
    assert "cannot lock the drain state" in str(e.value) and e.value.status == 500
    assert target.writes == []


def test_a_failed_save_after_restore_is_a_clear_error(
    control: Control, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    control.drain(WEB, dk("192.0.2.12"), actor="a")

    def full_disk(*a: object, **k: object) -> tuple[int, str]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("lvstop.control.tempfile.mkstemp", full_disk)
    with pytest.raises(ControlError) as e:
        control.restore(WEB, dk("192.0.2.12"), actor="a")
    assert "cannot write the drain state: No space left on device" in str(e.value)


def test_a_weight_put_back_outside_lvstop_closes_the_drain_with_an_event(
    target: FakeTarget, tmp_path: Path
) -> None:
    path = tmp_path / "drains.json"
    events = EventLog()
    ctl = Control(target, path, events, proc_root=str(tmp_path), clock=lambda: 2000.0)
    ctl.drain(WEB, dk("192.0.2.11"), actor="alice")
    ctl.drain(WEB, dk("192.0.2.12"), actor="alice", force=True, reason="t")
    assert ctl.reconcile(target.read()) == []  # both still at 0: still drained
    # Restarted, and someone else (keepalived, ipvsadm) put one weight back meanwhile.
    restarted = Control(target, path, events, proc_root=str(tmp_path), clock=lambda: 2000.0)
    outside = target.get_dest(WEB, dk("192.0.2.11"))
    assert outside is not None
    target.set_dest(WEB, dataclasses.replace(outside, weight=4))
    [event] = restarted.reconcile(target.read())
    assert (event.kind, event.dest, event.old, event.new, event.actor) == (
        "drain_closed",
        dk("192.0.2.11"),
        0,
        4,
        None,
    )
    assert "outside lvstop" in event.message and events.recent()[-1] == event
    assert set(restarted.drains()) == {(WEB, dk("192.0.2.12"))}
    assert restarted.reconcile(target.read()) == []


def test_reconcile_rereads_a_dest_the_poll_saw_before_its_drain_was_written(
    control: Control, target: FakeTarget
) -> None:
    before = target.read()  # weight 5, as a poll that raced the drain saw it
    control.drain(WEB, dk("192.0.2.11"), actor="alice")
    assert control.reconcile(before) == []
    assert (WEB, dk("192.0.2.11")) in control.drains()


def test_reconcile_without_a_readable_kernel_closes_nothing(control: Control, target: FakeTarget) -> None:
    control.drain(WEB, dk("192.0.2.11"), actor="alice")
    seen = target.read()
    outside = target.get_dest(WEB, dk("192.0.2.11"))
    assert outside is not None
    target.set_dest(WEB, dataclasses.replace(outside, weight=4))
    target.fail_get = ControlError("read-only: lvstop reads /proc", status=503)  # auto fell back to /proc
    assert control.reconcile(target.read()) == [] and control.reconcile(seen) == []
    assert (WEB, dk("192.0.2.11")) in control.drains()  # unverified: kept


def test_the_cause_of_a_drain_is_kept_and_old_files_read_as_operator_drains(
    control: Control, tmp_path: Path
) -> None:
    control.drain(WEB, dk("192.0.2.12"), actor="health", reason="health: tcp: refused", cause="health")
    control.drain(WEB, dk("192.0.2.13"), actor="alice")
    path = tmp_path / "state" / "drains.json"
    doc = json.loads(path.read_text())
    assert doc["version"] == 1 and [r["cause"] for r in doc["drains"]] == ["health", "operator"]
    assert {k[1].address: r.cause for k, r in control.drains().items()} == {
        "192.0.2.12": "health",
        "192.0.2.13": "operator",
    }
    for r in doc["drains"]:  # a file written before causes existed
        del r["cause"]
    path.write_text(json.dumps(doc))
    assert {r.cause for r in control.drains().values()} == {"operator"}
    doc["drains"][0]["cause"] = "cosmic rays"
    path.write_text(json.dumps(doc))
    with pytest.raises(
        LvstopError, match=re.escape("drains[0].cause: 'cosmic rays' is not one of operator, health")
    ):
        control.drains()


def test_an_operator_drain_of_a_health_drain_makes_it_the_operators(control: Control) -> None:
    key = (WEB, dk("192.0.2.12"))
    control.drain(*key, actor="health", reason="health: down", cause="health")
    since = control.drains()[key].since
    dry = control.drain(*key, actor="alice", reason="maintenance", dry_run=True)
    assert dry.outcome == "unchanged" and control.drains()[key].cause == "health"
    res = control.drain(*key, actor="alice", reason="maintenance")
    assert res.outcome == "unchanged" and res.previous == 3
    assert res.warnings and "health will not restore it" in res.warnings[0]
    rec = control.drains()[key]
    assert (rec.cause, rec.actor, rec.reason, rec.previous, rec.since) == (
        "operator",
        "alice",
        "maintenance",
        3,
        since,
    )
    # health draining an operator's drain changes nothing
    assert control.drain(*key, actor="health", cause="health").warnings == ()
    assert control.drains()[key].cause == "operator"


def test_a_drain_can_remember_another_weight_and_refuses_bad_causes(
    control: Control, target: FakeTarget
) -> None:
    res = control.drain(WEB, dk("192.0.2.12"), actor="health", cause="health", remember=9)
    assert (res.old, res.previous) == (3, 9) and control.drains()[(WEB, dk("192.0.2.12"))].previous == 9
    assert control.restore(WEB, dk("192.0.2.12"), actor="health").verified == 9
    for kw, says in (({"cause": "ops"}, "cause must be"), ({"remember": 0}, "remember must be")):
        with pytest.raises(EditError, match=says) as e:
            control.drain(WEB, dk("192.0.2.13"), actor="a", **kw)
        assert e.value.status == 400
    assert target.weight(WEB, "192.0.2.13") == 2


def _drain_doc(**change: object) -> dict[str, object]:
    rec: dict[str, object] = {
        "service": service_key_to_dict(WEB),
        "dest": {"address": "192.0.2.12", "port": 8080},
    }
    rec.update(
        previous=3, since=1.5, actor="alice", reason=None, cause="health", weight=0
    )  # weight: the API's
    rec.update(change)
    return {"drains": [rec]}


def test_drain_records_read_the_same_from_the_file_and_the_api() -> None:
    assert drains_from_dict(_drain_doc()) == {
        (WEB, dk("192.0.2.12")): DrainRecord(3, 1.5, "alice", None, "health")
    }


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"since": "yesterday"}, "drains[0].since: expected a finite number, got the string 'yesterday'"),
        ({"previous": True}, "drains[0].previous: expected an integer, got a boolean"),
        ({"previous": 0}, "drains[0].previous: the weight to restore, 0, is not 1..65535"),
        ({"actor": 7}, "drains[0].actor: expected a string, got the number 7"),
        (
            {"dest": {"address": "192.0.2.12"}},
            "drains[0].dest.port: expected an integer 0..65535, got nothing",
        ),
    ],
)
def test_a_wrong_drain_record_is_refused_naming_its_field(change: dict[str, object], says: str) -> None:
    """The drain state file and a remote exporter's GET /api/v1/drains: nothing is coerced (str(7) is "7")."""
    with pytest.raises(ParseError, match=re.escape(says)):
        drains_from_dict(_drain_doc(**change))
    with pytest.raises(ParseError, match=re.escape("drains: missing")):
        drains_from_dict({})


def test_a_wrong_edit_reply_is_refused_naming_its_field() -> None:
    good = {
        "action": "drain",
        "outcome": "applied",
        "service": service_key_to_dict(WEB),
        "dest": {"address": "192.0.2.12", "port": 8080},
        "old": 3,
        "requested": 0,
        "verified": 0,
        "active_conns": 2,
        "warnings": ["w"],
        "previous": 3,
    }
    assert edit_result(good, "x").warnings == ("w",)
    for key, value, says in (
        ("old", "3", "old: expected an integer"),
        ("warnings", [1], "warnings[0]: expected"),
    ):
        with pytest.raises(
            ControlError, match=re.escape(f"http://e/api/v1/drain: unexpected reply: {says}")
        ) as e:
            edit_result({**good, key: value}, "http://e/api/v1/drain")
        assert e.value.status == 502
