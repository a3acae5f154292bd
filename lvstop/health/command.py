"""`lvstop health`: try a health configuration against a director, as keepalived's genhash tries a page.

With `--once`: one probe of every (check, dest) pair, then one line per pair under its service:
dest address:port, check, up/down, latency, reason. Without: the checks run on their intervals and every
state change prints one line, until Ctrl-C (or `--count` polls). The demo director's results are
simulated (SimProber): no probe leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, TypeVar

from lvstop.control import DEFAULT_DRAIN_STATE
from lvstop.errors import LvstopError, UsageError
from lvstop.events import Event, EventLog
from lvstop.health.checks import Prober, Starter, Target
from lvstop.health.config import CheckSpec, HealthConfig, HealthConfigError, load
from lvstop.health.runner import HealthRunner, SimProber, Skipped, health_map, run_round
from lvstop.health.state import ProbeResult, Transition, advance, health_to_dict, initial
from lvstop.model import Snapshot
from lvstop.sources import Source
from lvstop.sources.netns import enter_netns

if TYPE_CHECKING:
    from lvstop.cli import Environment
    from lvstop.health.actor import HealthActor

_T = TypeVar("_T")


def load_config(path: str) -> HealthConfig:
    """`--health.config FILE`, or UsageError (one line naming file, line and key; exit status 2)."""
    try:
        return load(path)
    except HealthConfigError as e:
        raise UsageError(str(e)) from None


def run(args: argparse.Namespace, env: Environment, config: HealthConfig, source: Source) -> int:
    try:
        sim = SimProber(env.clock) if source.name == "demo" else None
        if args.once:
            if args.health_act:
                raise UsageError("--health.act acts on state changes, which --once does not wait for")
            return _once(config, source.read(), sim, args.netns, env)
        return _watch(config, source, sim.start if sim else None, args, env)
    finally:
        source.close()


def _round(
    config: HealthConfig, snap: Snapshot, prober: Prober | None, netns: str | None, env: Environment
) -> tuple[list[tuple[CheckSpec, Target, ProbeResult]], list[Skipped]]:
    results, skipped = _in_netns(netns, lambda: asyncio.run(run_round(config, snap, prober)))
    if not results and not skipped:
        env.warn(f"no dest of this director matches a check of {config.file}")
    return results, skipped


def _once(
    config: HealthConfig, snap: Snapshot, prober: Prober | None, netns: str | None, env: Environment
) -> int:
    results, skipped = _round(config, snap, prober, netns, env)
    rows: dict[str, list[str]] = {}
    for spec, target, result in results:
        rows.setdefault(str(target.service), []).append(
            _line(str(target.dest), target.port, spec.label, result)
        )
    for s in skipped:
        rows.setdefault(str(s.service), []).append(_skipped_line(s))
    for service, lines in rows.items():
        env.stdout.write(service + "\n")
        for line in lines:
            env.stdout.write(f"  {line}\n")
    return 0


def list_json(text: str, snap: Snapshot, config: HealthConfig, netns: str | None, env: Environment) -> str:
    """`lvstop list --json` output `text` with a `health` object in every dest the checks match (null in
    the others): one round of checks, whose result decides each check's state at once (fall = rise = 1)."""
    from lvstop.codec import dest_key_from_dict, service_key_from_dict

    sim = SimProber(env.clock) if snap.source == "demo" else None
    results, _ = _round(config, snap, sim, netns, env)
    now = env.clock()
    view = health_map(
        ((i, t.service, t.dest), advance(initial(spec.label), r, now, 1, 1))
        for i, (spec, t, r) in enumerate(results)
    )
    doc = json.loads(text)
    for svc in doc["services"]:
        skey = service_key_from_dict(svc["key"])
        for d in svc["dests"]:
            h = view.get((skey, dest_key_from_dict(d)))
            d["health"] = None if h is None else health_to_dict(h)
    return json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n"


def _line(dest: str, port: int, check: str, r: ProbeResult) -> str:
    probed = "" if dest.endswith(f":{port}") else f" (port {port})"
    return f"{dest}{probed}  {check}  {'up' if r.ok else 'down'}  {format_latency(r.latency)}  {r.reason}"


def _skipped_line(s: Skipped) -> str:
    return f"{s.dest}  {s.spec.label}  unknown  -  {s.reason}"


def format_latency(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _watch(
    config: HealthConfig, source: Source, start: Starter | None, args: argparse.Namespace, env: Environment
) -> int:
    changes: SimpleQueue[Transition] = SimpleQueue()
    runner = HealthRunner(
        config,
        start=start,
        netns=args.netns,
        on_transition=changes.put,
        on_trouble=lambda message, _: print(f"lvstop: {message}", file=env.stderr),
        clock=env.clock,
    )
    with contextlib.ExitStack() as stack:
        actor = _actor(config, source, runner, args, env, stack) if _acts(config, args) else None
        runner.start()
        stack.callback(runner.stop)
        polls = 0
        try:
            while args.count is None or polls < args.count:
                started = env.monotonic()
                snap = source.read()
                runner.update(snap)
                if actor is not None:
                    actor.round(snap)  # its events print as they come
                polls += 1
                env.sleep(max(0.0, args.interval - (env.monotonic() - started)))
                _print_changes(changes, env)
        except KeyboardInterrupt:
            pass  # the usual way to end watching
    _print_changes(changes, env)
    return 0


def _acts(config: HealthConfig, args: argparse.Namespace) -> bool:
    return any(c.acts(args.health_act) for c in config.checks)


def _actor(
    config: HealthConfig,
    source: Source,
    runner: HealthRunner,
    args: argparse.Namespace,
    env: Environment,
    stack: contextlib.ExitStack,
) -> HealthActor:
    """Acting on health in `lvstop health`: Control on this source, its actions printed as they happen
    and audited to --audit-log; the demo's drains end with the demo, as in the TUI."""
    from lvstop.control import Control
    from lvstop.exporter.audit import AuditLog
    from lvstop.exporter.ramp import Ramps
    from lvstop.health.actor import HealthActor
    from lvstop.sources.factory import write_target

    target = write_target(source)
    if target is None:
        raise UsageError(
            f"acting on health needs a source that can write (netlink or demo), not {source.name}"
        )
    if source.name == "demo":
        state = os.path.join(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="lvstop-demo-")), "d.json"
        )
    else:
        state = args.drain_state or DEFAULT_DRAIN_STATE
    try:
        audit = AuditLog(env.stderr if args.audit_log == "-" else args.audit_log)
    except LvstopError as e:
        raise UsageError(str(e)) from None
    stack.callback(audit.close)
    control = Control(target, state, proc_root=getattr(args, "proc_root", "/proc"))
    steps: list[HealthActor] = []
    ramps = Ramps(control, lambda *a: steps[0].ramp_step(*a))
    stack.callback(ramps.stop)
    actor = HealthActor(
        config,
        control,
        runner.checks,
        flag=args.health_act,
        ramps=ramps,
        audit=audit.write,
        events=_Said(env),
    )
    steps.append(actor)
    return actor


class _Said(EventLog):
    """The actor's events, one line each on stdout as they come."""

    def __init__(self, env: Environment) -> None:
        super().__init__(100)
        self._env = env

    def append(self, event: Event) -> Event:
        when = time.strftime("%H:%M:%S", time.localtime(event.time))
        self._env.stdout.write(f"{when} {event.message}\n")
        return super().append(event)


def _print_changes(changes: SimpleQueue[Transition], env: Environment) -> None:
    while True:
        try:
            t = changes.get_nowait()
        except Empty:
            return
        when = time.strftime("%H:%M:%S", time.localtime(t.time))
        env.stdout.write(f"{when} {t.service} {t.dest} {t.check} {t.old} -> {t.new}: {t.reason}\n")


def _in_netns(netns: str | None, fn: Callable[[], _T]) -> _T:
    """`fn()` in a thread that entered `netns` (sockets and commands follow the thread's namespace)."""
    if netns is None:
        return fn()
    result: Future[_T] = Future()

    def main() -> None:
        try:
            enter_netns(netns)
            result.set_result(fn())
        except BaseException as e:
            result.set_exception(e)

    threading.Thread(target=main, name="lvstop-health-netns", daemon=True).start()
    return result.result()
