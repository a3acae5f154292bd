from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from lvstop import codec
from lvstop.errors import ParseError, SourceError
from lvstop.model import Counters, IssueKind, Service, ServiceKey, Snapshot
from lvstop.poller import Poller
from lvstop.sources.replay import Recorder, ReplaySource
from lvstop.sources.sim import SimSource

WEB = ServiceKey.tcp("203.0.113.10", 80)


def snap(i: int) -> Snapshot:
    return Snapshot(
        "netlink",
        "lb1",
        1000.0 + 2 * i,
        2.0 * i,
        services=(Service(WEB, "wlc", counters=Counters(10 * i)),),
        seq=i,
    )


def record(path: Path, n: int) -> list[Snapshot]:
    snaps = [snap(i) for i in range(n)]
    with Recorder(path) as rec:
        for s in snaps:
            rec.write(s)
    assert rec.count == n
    return snaps


def test_recording_is_gzip_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl.gz"
    snaps = record(path, 3)
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    assert [codec.loads(line) for line in lines] == snaps


def test_replay_yields_snapshots_in_order_then_stays_on_the_last(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl.gz"
    snaps = record(path, 4)
    src = ReplaySource(path)
    assert len(src) == 4 and src.position == 0 and not src.finished
    got = [src.read() for _ in range(4)]
    assert [s.seq for s in got] == [0, 1, 2, 3]
    assert all(s.source == "replay" and s.director == "lb1" for s in got)
    assert got[2].services == snaps[2].services and got[2].wall_time == snaps[2].wall_time
    assert src.finished and src.position == 4
    assert src.read() is got[-1] and src.read().seq == 3


def test_seek_steps_anywhere(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl.gz"
    record(path, 5)
    src = ReplaySource(path)
    src.seek(3)
    assert src.position == 3 and src.read().seq == 3 and src.position == 4
    src.seek(0)
    assert src.read().seq == 0 and not src.finished
    for bad in (-1, 5):
        with pytest.raises(IndexError):
            src.seek(bad)


def test_a_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl.gz"
    good = codec.dumps(snap(0))
    path.write_bytes(gzip.compress(f"{good}\n{good}\n{{not json\n".encode()))
    src = ReplaySource(path)
    src.read()
    src.read()
    with pytest.raises(ParseError) as e:
        src.read()
    assert e.value.line == 3 and str(path) in str(e.value)


def test_a_file_that_is_no_recording_fails_at_open(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("hello\n")
    with pytest.raises(ParseError, match="not a gzip"):
        ReplaySource(plain)
    wrong = tmp_path / "wrong.jsonl.gz"
    wrong.write_bytes(gzip.compress(b'{"schema": 1}\n'))
    with pytest.raises(ParseError) as e:
        ReplaySource(wrong)
    assert e.value.line == 1 and "source: missing" in str(e.value)
    empty = tmp_path / "empty.jsonl.gz"
    empty.write_bytes(gzip.compress(b""))
    with pytest.raises(ParseError, match="no snapshots"):
        ReplaySource(empty)
    with pytest.raises(SourceError) as io:
        ReplaySource(tmp_path / "missing.jsonl.gz")
    assert io.value.kind is IssueKind.IO


def test_a_recording_cut_short_replays_its_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "crash.jsonl.gz"
    record(path, 3)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 12])  # lose the gzip trailer and some of the last line
    src = ReplaySource(path)
    assert src.truncated
    assert 1 <= len(src) <= 3
    assert [src.read().seq for _ in range(len(src))] == list(range(len(src)))


def test_no_connection_table_in_a_recording(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl.gz"
    record(path, 1)
    with pytest.raises(SourceError) as e:
        ReplaySource(path).conn_lines()
    assert e.value.kind is IssueKind.UNAVAILABLE


def test_write_after_close_and_unwritable_path(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.jsonl.gz")
    rec.close()
    with pytest.raises(ValueError):
        rec.write(snap(0))
    with pytest.raises(FileNotFoundError) as e:
        Recorder(tmp_path / "no" / "such" / "dir.jsonl.gz")
    assert e.value.filename == str(tmp_path / "no" / "such" / "dir.jsonl.gz")


def test_replaying_a_recorded_demo_through_a_poller_gives_the_recorded_numbers(tmp_path: Path) -> None:
    t = [1_700_000_000.0]
    live = Poller(SimSource(clock=lambda: t[0]))
    path = tmp_path / "demo.jsonl.gz"
    recorded = []
    with Recorder(path) as rec:
        for _ in range(6):
            s = live.poll_once()
            rec.write(s)
            recorded.append(s)
            t[0] += 2.0
    replay = Poller(ReplaySource(path))
    for want in recorded:
        got = replay.poll_once()
        assert got.services == want.services  # rates kept, instant recomputed to the same values
        assert got.total_rates == want.total_rates and got.total_instant == want.total_instant


# --- damage and the commands around recordings (issue 11: items 6, 7 and the replay pace of 17) --------


def test_a_bad_line_is_skipped_once_and_the_replay_plays_on(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl.gz"
    lines = [codec.dumps(snap(i)) for i in range(4)]
    lines[1] = "{not json"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    src = ReplaySource(path)
    assert src.read().seq == 0
    with pytest.raises(ParseError) as e:
        src.read()
    assert e.value.line == 2
    assert [src.read().seq, src.read().seq] == [2, 3] and src.finished
    assert src.damage == [f"{path}:2: {e.value.reason}: skipped"]


def test_check_finds_all_damage_and_a_cut_short_recording_says_so(tmp_path: Path) -> None:
    path = tmp_path / "crash.jsonl.gz"
    record(path, 3)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 12])
    src = ReplaySource(path)
    damage = src.check()
    assert len(damage) == 1 and f"cut short after line {len(src)}" in damage[0]
    assert ReplaySource(tmp_path.joinpath("crash.jsonl.gz")).damage == damage  # known at open


def test_the_pace_is_the_recordings(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl.gz"
    record(path, 3)  # snap(i) is 2 s apart
    assert ReplaySource(path).cadence == 2.0
    one = tmp_path / "one.jsonl.gz"
    record(one, 1)
    assert ReplaySource(one).cadence is None


def test_list_replay_of_a_damaged_file_prints_what_it_can_and_exits_5(tmp_path: Path) -> None:
    from test_cli import run

    path = tmp_path / "bad.jsonl.gz"
    lines = [codec.dumps(snap(i)) for i in range(3)]
    lines[2] = "{not json"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    r = run("list", "-n", "--replay", str(path))
    assert r.status == 5
    assert "203.0.113.10:80" in r.out
    assert f"{path}:3:" in r.err and "skipped" in r.err
    good = tmp_path / "good.jsonl.gz"
    record(good, 2)
    assert run("list", "--replay", str(good)).status == 0


def test_record_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    from test_cli import one_error_line, run

    path = tmp_path / "rec.jsonl.gz"
    record(path, 1)
    before = path.read_bytes()
    r = run("record", "--demo", "--count", "1", str(path))
    assert r.status == 2 and "exists: give --force" in one_error_line(r)
    assert path.read_bytes() == before
    r = run("record", "--demo", "--count", "2", "--force", str(path))
    assert r.status == 0 and len(ReplaySource(path)) == 2
