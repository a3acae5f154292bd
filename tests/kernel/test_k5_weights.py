"""Item 5: a weight edit through lvstop's write path changes the weight and nothing else.

Oracle: `ipvsadm -S -n` (every setting of every dest, one line each) plus --thresholds and --tun-info;
after an edit exactly one line may differ, and only in its `-w` value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lvstop.control import Control
from lvstop.errors import ControlError
from lvstop.events import EventLog
from lvstop.model import AF_INET, AF_INET6, DestKey, ServiceKey
from lvstop.sources.netlink import NetlinkSource

from .compare import listing_of
from .lab import MASTER, MIXED, Lab

pytestmark = pytest.mark.kernel

ACTOR = "kernel-tier"
# (director, service, dest): Masq with thresholds, Route, Tunnel ipip/GUE (port, csum, remcsum)/GRE,
# an IPv6 fwmark dest, and an IPv4 tunnel dest of an IPv6 service (its own address family)
CASES = [
    (MASTER, ServiceKey.tcp("203.0.113.10", 80), DestKey(AF_INET, "192.0.2.11", 8080)),
    (MASTER, ServiceKey.tcp("203.0.113.11", 8080), DestKey(AF_INET, "192.0.2.12", 8080)),
    (MASTER, ServiceKey.tcp("203.0.113.13", 8080), DestKey(AF_INET, "192.0.2.13", 8080)),
    (MASTER, ServiceKey.tcp("203.0.113.15", 8080), DestKey(AF_INET, "192.0.2.12", 8080)),
    (MASTER, ServiceKey.tcp("203.0.113.15", 8080), DestKey(AF_INET, "192.0.2.13", 8080)),
    (MASTER, ServiceKey.tcp("203.0.113.16", 8080), DestKey(AF_INET, "192.0.2.12", 8080)),
    (MASTER, ServiceKey.mark(3, AF_INET6), DestKey(AF_INET6, "2001:db8:2::12", 8080)),
    (MIXED, ServiceKey.tcp("2001:db8:113::13", 8080), DestKey(AF_INET, "192.0.2.12", 8080)),
    (MIXED, ServiceKey.tcp("2001:db8:113::13", 8080), DestKey(AF_INET6, "2001:db8:2::13", 8080)),
]
_WEIGHT = re.compile(r" -w (\d+)")


def _config(lab: Lab, ns: str) -> tuple[list[str], dict[str, dict[str, dict[str, Any]]]]:
    saved = lab.ipvsadm("-S", "-n", ns=ns).splitlines()
    listing = listing_of([lab.ipvsadm("-Ln", "--thresholds", ns=ns), lab.ipvsadm("-Ln", "--tun-info", ns=ns)])
    return saved, listing.dests


def _only_weight_changed(before: list[str], after: list[str], new: int) -> list[str]:
    changed = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert len(before) == len(after), "the edit added or removed a line of ipvsadm -S"
    assert len(changed) == 1, f"expected exactly one changed dest, got {changed}"
    b, a = changed[0]
    assert _WEIGHT.sub("", b) == _WEIGHT.sub("", a), f"more than the weight changed:\n  {b}\n  {a}"
    m = _WEIGHT.search(a)
    assert m is not None and int(m.group(1)) == new, a
    return [b, a]


@pytest.mark.parametrize(("ns", "skey", "dkey"), CASES, ids=[f"{s} -> {d}" for _, s, d in CASES])
def test_weight_edit_changes_weight_only(
    lab: Lab, tmp_path: Path, ns: str, skey: ServiceKey, dkey: DestKey
) -> None:
    source = NetlinkSource(netns=ns)
    ctl = Control(source, tmp_path / "drains.json", EventLog())
    saved0, dests0 = _config(lab, ns)
    cur = source.get_dest(skey, dkey)
    assert cur is not None, f"{dkey} missing from {skey}"
    old = cur.weight
    try:
        res = ctl.set_weight(skey, dkey, old + 3, expect=old, actor=ACTOR)
        assert (res.outcome, res.old, res.verified) == ("applied", old, old + 3)
        saved1, dests1 = _config(lab, ns)
        _only_weight_changed(saved0, saved1, old + 3)
        # thresholds and tunnel info, as ipvsadm lists them, untouched; the connection counts are live
        # state (earlier tests' connections leave TIME_WAIT between the two listings), not configuration
        strip = {"weight", "active", "inactive"}
        assert {
            s: {d: {k: v for k, v in f.items() if k not in strip} for d, f in ds.items()}
            for s, ds in dests0.items()
        } == {
            s: {d: {k: v for k, v in f.items() if k not in strip} for d, f in ds.items()}
            for s, ds in dests1.items()
        }

        # drain, then restore: the original weight comes back, the state file forgets the drain
        res = ctl.drain(skey, dkey, actor=ACTOR, reason="kernel tier")
        assert (res.outcome, res.previous) == ("applied", old + 3)
        _only_weight_changed(saved1, lab.ipvsadm("-S", "-n", ns=ns).splitlines(), 0)
        assert (skey, dkey) in ctl.drains()
        res = ctl.restore(skey, dkey, actor=ACTOR)
        assert (res.outcome, res.verified) == ("applied", old + 3)
        assert lab.ipvsadm("-S", "-n", ns=ns).splitlines() == saved1
        assert not ctl.drains()
    finally:
        # put the lab back as it was for the tests that follow
        now = source.get_dest(skey, dkey)
        if now is not None and now.weight != old:
            ctl.set_weight(skey, dkey, old, force=True, reason="kernel tier cleanup", actor=ACTOR)
        source.close()
    assert lab.ipvsadm("-S", "-n", ns=ns).splitlines() == saved0


@pytest.mark.parametrize(
    "missing",
    [
        (ServiceKey.tcp("203.0.113.10", 80), DestKey(AF_INET, "192.0.2.99", 8080)),  # no such dest
        (
            ServiceKey.tcp("203.0.113.10", 80),
            DestKey(AF_INET, "192.0.2.11", 9090),
        ),  # right address, wrong port
        (ServiceKey.tcp("203.0.113.99", 80), DestKey(AF_INET, "192.0.2.11", 8080)),  # no such service
    ],
    ids=["dest", "port", "service"],
)
def test_editing_a_missing_dest_fails_and_adds_nothing(
    lab: Lab, tmp_path: Path, missing: tuple[ServiceKey, DestKey]
) -> None:
    skey, dkey = missing
    before = lab.ipvsadm("-S", "-n", ns=MASTER)
    source = NetlinkSource(netns=MASTER)
    try:
        ctl = Control(source, tmp_path / "drains.json", EventLog())
        edits: tuple[Callable[[], object], ...] = (
            lambda: ctl.set_weight(skey, dkey, 5, actor=ACTOR),
            lambda: ctl.drain(skey, dkey, actor=ACTOR),
        )
        for edit in edits:
            with pytest.raises(ControlError) as exc:
                edit()
            assert exc.value.status == 404, exc.value
            assert str(dkey) in str(exc.value) and "\n" not in str(exc.value)
        assert not ctl.drains()
    finally:
        source.close()
    assert lab.ipvsadm("-S", "-n", ns=MASTER) == before, "a failed edit changed the kernel's table"


def _set_weight_by_ipvsadm(lab: Lab, ns: str, saved_line: str, weight: int) -> None:
    """Another process edits a dest, as keepalived or an operator's ipvsadm would (same settings, new -w)."""
    args = _WEIGHT.sub(f" -w {weight}", saved_line).split()
    assert args[0] == "-a", saved_line
    lab.ipvsadm("-e", *args[1:], ns=ns)


def test_the_drain_guard_sees_weights_changed_by_another_process_since_the_last_poll(
    lab: Lab, tmp_path: Path
) -> None:
    """The snapshot says the siblings are live; ipvsadm then zeroes them: draining the last live dest is
    refused (409) and changes nothing. The reverse (a sibling brought back since the poll) is allowed."""
    skey = ServiceKey.tcp("203.0.113.10", 80)
    source = NetlinkSource(netns=MASTER)
    saved0 = lab.ipvsadm("-S", "-n", ns=MASTER).splitlines()
    mine = [ln for ln in saved0 if ln.startswith("-a -t 203.0.113.10:80 ")]
    assert len(mine) >= 2 and all(int(m.group(1)) > 0 for m in map(_WEIGHT.search, mine) if m), mine
    target, siblings = mine[0], mine[1:]
    dkey = DestKey(AF_INET, *_addr_port(target))
    try:
        stale = source.read()  # the poll the guard would otherwise trust
        assert all(d.weight > 0 for d in stale.service(skey).dests)  # type: ignore[union-attr]
        ctl = Control(source, tmp_path / "drains.json", EventLog(), latest=lambda: stale)
        for line in siblings:
            _set_weight_by_ipvsadm(lab, MASTER, line, 0)
        zeroed = lab.ipvsadm("-S", "-n", ns=MASTER).splitlines()
        with pytest.raises(ControlError) as exc:
            ctl.drain(skey, dkey, actor=ACTOR)
        assert exc.value.status == 409 and "last live weight" in str(exc.value), exc.value
        assert lab.ipvsadm("-S", "-n", ns=MASTER).splitlines() == zeroed, "a refused drain changed the kernel"

        stale = source.read()  # now the poll says only `target` is live ...
        _set_weight_by_ipvsadm(lab, MASTER, siblings[0], 1)  # ... and another process brings one back
        res = ctl.drain(skey, dkey, actor=ACTOR, dry_run=True)
        assert res.outcome == "dry_run" and res.requested == 0
    finally:
        for line in mine:
            lab.ipvsadm("-e", *line.split()[1:], ns=MASTER)
        source.close()
    assert lab.ipvsadm("-S", "-n", ns=MASTER).splitlines() == saved0


def _addr_port(saved_line: str) -> tuple[str, int]:
    real = saved_line.split(" -r ", 1)[1].split()[0]
    host, _, port = real.rpartition(":")
    return host.strip("[]"), int(port)
