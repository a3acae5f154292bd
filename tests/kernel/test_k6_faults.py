"""Item 6, churn: while a loop adds and deletes services and dests, 200 polls complete with no crash
and no duplicate keys, and inconsistent reads are flagged. (The other faults: ip_vs not loaded in
test_k0_unloaded.py, ipvsadm -Z in test_k4_estimator.py, no CAP_NET_ADMIN in test_k9_single.py.)"""

from __future__ import annotations

import subprocess
import time

import pytest

from lvstop.model import IssueKind
from lvstop.poller import Poller
from lvstop.sources.netlink import NetlinkSource

from .lab import PREFIX, RS4, Lab, run, sh

pytestmark = pytest.mark.kernel

CHURN_NS = PREFIX + "dc"
STABLE = "203.0.113.30:80"
CHURN_SERVICES = 10
POLLS = 200


def _churn_rules() -> tuple[str, str]:
    add, delete = [], []
    for i in range(CHURN_SERVICES):
        vip = f"203.0.113.40:{2000 + i}"
        add.append(f"-A -t {vip} -s wlc")
        add += [f"-a -t {vip} -r {a}:8080 -m -w {1 + i % 3}" for a in RS4.values()]
        delete.append(f"-D -t {vip}")
    # one dest of the stable service comes and goes too
    add.append(f"-a -t {STABLE} -r 192.0.2.14:8080 -m -w 1")
    delete.append(f"-d -t {STABLE} -r 192.0.2.14:8080")
    return "\n".join(add) + "\n", "\n".join(delete) + "\n"


def test_churn_200_polls(lab: Lab) -> None:
    run(["ip", "netns", "add", CHURN_NS])
    sh(CHURN_NS, "ip link set lo up")
    stable_dests = {f"{a}:8080" for a in RS4.values()}
    rules = [f"-A -t {STABLE} -s rr", *(f"-a -t {STABLE} -r {d} -m -w 1" for d in sorted(stable_dests))]
    run(["ipvsadm", "-R"], ns=CHURN_NS, input="\n".join(rules) + "\n")
    add, delete = _churn_rules()
    script = (
        f"end=$((SECONDS+240)); n=0; while [ $SECONDS -lt $end ] && [ $n -lt 5000 ]; do "
        f"ipvsadm -R <<'A'\n{add}A\nipvsadm -R <<'D'\n{delete}D\nn=$((n+1)); done; echo $n"
    )
    churn = subprocess.Popen(
        ["ip", "netns", "exec", CHURN_NS, "bash", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    source = NetlinkSource(netns=CHURN_NS)
    poller = Poller(source, interval=2.0)
    problems: list[str] = []
    flagged = polls = 0
    t0 = time.monotonic()
    try:
        for _ in range(POLLS):
            try:
                snap = poller.poll_once()
            except Exception as e:  # no crash: a whole poll must not fail because the table moved
                problems.append(f"poll {polls + 1} raised {type(e).__name__}: {e}")
                continue
            polls += 1
            keys = [s.key for s in snap.services]
            if len(keys) != len(set(keys)):
                problems.append(f"poll {snap.seq}: duplicate service keys {sorted(map(str, keys))}")
            inconsistent = {i.service for i in snap.issues if i.kind is IssueKind.INCONSISTENT}
            flagged += bool(inconsistent) or any(s.error for s in snap.services)
            for s in snap.services:
                dkeys = [d.key for d in s.dests]
                if len(dkeys) != len(set(dkeys)):
                    problems.append(f"poll {snap.seq}: {s.key} duplicate dests {sorted(map(str, dkeys))}")
                if (
                    s.error is not None
                    and s.key not in inconsistent
                    and not any(i.service == s.key for i in snap.issues)
                ):
                    problems.append(f"poll {snap.seq}: {s.key} error {s.error!r} without an issue")
            stable = [s for s in snap.services if str(s.key) == f"TCP {STABLE}"]
            if len(stable) != 1:
                problems.append(f"poll {snap.seq}: the stable service was read {len(stable)} times")
            elif stable[0].error is None:
                got = {f"{d.address}:{d.port}" for d in stable[0].dests}
                if not stable_dests <= got <= stable_dests | {"192.0.2.14:8080"}:
                    problems.append(f"poll {snap.seq}: stable service dests {sorted(got)}")
    finally:
        churn.terminate()
        cycles, _ = churn.communicate(timeout=30)
        source.close()
        run(["ip", "netns", "del", CHURN_NS], check=False)
    seconds = time.monotonic() - t0
    kinds = [e.kind for e in poller.events.recent()]
    print(
        f"[note] churn: {polls} polls in {seconds:.1f}s, {flagged} flagged inconsistent, "
        f"{kinds.count('inconsistent_read')} inconsistent_read events, churn cycles {cycles.strip() or '?'}"
    )
    assert not problems, "\n".join(problems[:20])
    assert polls == POLLS
    assert flagged > 0, "churn never caught a read in the middle of a change: the test proved nothing"
    assert "inconsistent_read" in kinds, "inconsistent reads must reach the event log"
