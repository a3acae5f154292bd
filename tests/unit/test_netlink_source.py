"""NetlinkSource against a fake socket that replays kernel replies recorded under qemu (fixtures/netlink)."""

from __future__ import annotations

import dataclasses
import errno
import gc
import json
import mmap
import os
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import netlink_replies as replies
import pytest
from test_wire import GENL_ID_CTRL, family_of

from lvstop.errors import SourceError
from lvstop.model import AF_INET, Dest, DestKey, FwdMethod, IssueKind, Service, ServiceKey, TunType
from lvstop.sources import netlink as nl
from lvstop.sources import wire
from lvstop.sources.netns import netns_path
from lvstop.sources.procfs import parse_ip_vs_stats

FIXTURES = Path(__file__).parent.parent / "fixtures" / "netlink"
MAIN = FIXTURES / "main"
MAIN_612 = FIXTURES.parent / "netlink-6.12" / "main"  # the same scenario recorded on 6.12
ERRORS = FIXTURES / "errors"


def messages(data: bytes) -> list[bytes]:
    out = []
    off = 0
    while off < len(data):
        length = struct.unpack_from("=I", data, off)[0]
        out.append(data[off : off + length])
        off += (length + 3) & ~3
    return out


def datagrams(reply: bytes) -> list[bytes]:
    """Split a reply as the kernel sends it: the messages, then NLMSG_DONE in a datagram of its own."""
    msgs = messages(reply)
    if len(msgs) > 1 and struct.unpack_from("=H", msgs[-1], 4)[0] == wire.NLMSG_DONE:
        return [b"".join(msgs[:-1]), msgs[-1]]
    return [reply]


def with_seq(chunk: bytes, seq: int) -> bytes:
    out = bytearray(chunk)
    off = 0
    while off < len(out):
        struct.pack_into("=I", out, off + 8, seq)
        off += (struct.unpack_from("=I", out, off)[0] + 3) & ~3
    return bytes(out)


Reply = list[bytes] | Callable[[bytes], list[bytes]]


class FakeKernel:
    """A netlink socket that answers NetlinkSource's requests with recorded replies.

    `replies` maps a request label (ctrl, info, config, daemons, services, recheck, set_dest, or
    dests:<service key>) to the datagrams to answer with, or to a function of the request.
    """

    def __init__(self, folder: Path = MAIN) -> None:
        self.folder = folder
        self.family = family_of(folder)
        index = json.loads((folder / "index.json").read_text())["services"]
        self.dest_files = {e["service"]: e["dests"] for e in index}
        services = wire.decode_services((folder / "services.bin").read_bytes(), self.family)
        self.keys = {
            wire.nla(wire.CMD_ATTR_SERVICE, wire.encode_service_key(s.key)): str(s.key) for s in services
        }
        self.replies: dict[str, Reply] = {}
        self.stale: dict[str, bytes] = {}  # label -> a datagram of the previous request, sent first
        self.requests: list[bytes] = []
        self.labels: list[str] = []
        self.queue: list[bytes] = []
        self.closed = False

    def label(self, request: bytes) -> str:
        if struct.unpack_from("=H", request, 4)[0] == GENL_ID_CTRL:
            return "ctrl"
        cmd = request[16]
        if cmd == wire.CMD_GET_DEST:
            return "dests:" + self.keys[request[20:]]
        if cmd == wire.CMD_GET_SERVICE:
            return "recheck" if "services" in self.labels else "services"
        return {
            wire.CMD_GET_INFO: "info",
            wire.CMD_GET_CONFIG: "config",
            wire.CMD_GET_DAEMON: "daemons",
            wire.CMD_SET_DEST: "set_dest",
        }[cmd]

    def recorded(self, label: str, request: bytes) -> list[bytes]:
        name = {
            "ctrl": "ctrl_families.bin",
            "info": "info.bin",
            "config": "config.bin",
            "daemons": "daemons.bin",
            "services": "services.bin",
            "recheck": "services.bin",
        }.get(label)
        if label.startswith("dests:"):
            name = self.dest_files[label[6:]]
        if label == "set_dest":
            return [replies.error(0, request)]
        assert name is not None, label
        return datagrams((self.folder / name).read_bytes())

    def sendto(self, data: bytes, address: tuple[int, int], /) -> int:
        request = bytes(data)
        label = self.label(request)
        self.requests.append(request)
        self.labels.append(label)
        answer = self.replies.get(label)
        if answer is None:
            chunks = self.recorded(label, request)
        elif callable(answer):
            chunks = answer(request)
        else:
            chunks = answer
        seq = struct.unpack_from("=I", request, 8)[0]
        if label in self.stale:
            self.queue.append(with_seq(self.stale[label], seq - 1))
        self.queue += [with_seq(c, seq) for c in chunks]
        return len(data)

    def recvmsg_into(self, buffers: list[memoryview], /) -> tuple[int, list[Any], int, Any]:
        if not self.queue:
            raise TimeoutError
        data = self.queue.pop(0)
        n = min(len(data), len(buffers[0]))
        buffers[0][:n] = data[:n]
        return n, [], socket.MSG_TRUNC if n < len(data) else 0, None

    def settimeout(self, value: float | None, /) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def expected_services(folder: Path = MAIN) -> list[Service]:
    fam = family_of(folder)
    index = json.loads((folder / "index.json").read_text())["services"]
    services = wire.decode_services((folder / "services.bin").read_bytes(), fam)
    return [
        dataclasses.replace(
            s, dests=tuple(wire.decode_dests((folder / e["dests"]).read_bytes(), fam, s.key.family))
        )
        for s, e in zip(services, index, strict=True)
    ]


def proc_root(tmp: Path, folder: Path = MAIN) -> str:
    """A /proc with the ip_vs_stats and net.ipv4.vs sysctls recorded with the netlink replies."""
    (tmp / "net").mkdir(parents=True)
    (tmp / "net" / "ip_vs_stats").write_text((folder / "proc-ip_vs_stats.txt").read_text())
    sysctls = tmp / "sys" / "net" / "ipv4" / "vs"
    sysctls.mkdir(parents=True)
    for line in (folder / "sysctl-vs.txt").read_text().splitlines():
        name, _, value = line.partition(" = ")
        (sysctls / name.removeprefix("net.ipv4.vs.")).write_text(value + "\n")
    return str(tmp)


class Harness:
    def __init__(self, tmp: Path, folder: Path = MAIN) -> None:
        self.folder = folder
        self.sockets: list[FakeKernel] = []
        self.next = FakeKernel(folder)
        self.root = proc_root(tmp, folder)

    def factory(self) -> FakeKernel:
        sock = self.next
        self.sockets.append(sock)
        self.next = FakeKernel(self.folder)
        self.next.replies = dict(sock.replies)
        self.next.stale = dict(sock.stale)
        return sock

    def source(self) -> nl.NetlinkSource:
        return nl.NetlinkSource(proc_root=self.root, socket_factory=self.factory)

    @property
    def kernel(self) -> FakeKernel:
        return self.sockets[-1]


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def key(name: str) -> str:
    return "dests:" + name


def without(service: str) -> list[bytes]:
    """The recorded service dump minus one service, as the kernel would list it after a delete."""
    fam = family_of(MAIN)
    kept = [
        m
        for m in messages((MAIN / "services.bin").read_bytes())
        if struct.unpack_from("=H", m, 4)[0] != fam
        or str(wire.decode_services(m + replies.done(0), fam)[0].key) != service
    ]
    return datagrams(b"".join(kept))


# --------------------------------------------------------------------------- full reads


@pytest.mark.parametrize("folder", [MAIN, MAIN_612], ids=["6.1", "6.12"])
def test_full_read_equals_the_recorded_kernel_state(tmp_path: Path, folder: Path) -> None:
    snap = Harness(tmp_path, folder).source().read()
    assert snap.source == "netlink" and not snap.issues and snap.ok
    assert list(snap.services) == expected_services(folder)
    fam = family_of(folder)
    assert (snap.version, snap.conn_tab_size) == wire.decode_info((folder / "info.bin").read_bytes(), fam)
    assert snap.timeouts == wire.decode_config((folder / "config.bin").read_bytes(), fam)
    assert (list(snap.daemons) if snap.daemons is not None else ["unseen"]) == wire.decode_daemons(
        (folder / "daemons.bin").read_bytes(), fam
    )
    assert (snap.totals, snap.total_rates) == parse_ip_vs_stats((folder / "proc-ip_vs_stats.txt").read_text())
    assert snap.sysctls["expire_nodest_conn"] == 0 and "sync_threshold.1" in snap.sysctls
    assert snap.est_cpulist == (None if folder == MAIN else "0-1")  # est_cpulist exists from 6.2 on
    assert snap.poll_duration is not None and snap.seq == 0


def test_requests_are_one_info_config_daemon_two_service_dumps_and_a_dest_dump_each(h: Harness) -> None:
    src = h.source()
    src.read()
    k = h.kernel
    n = len(expected_services())
    assert k.labels[:5] == ["ctrl", "info", "config", "daemons", "services"]
    assert [x.startswith("dests:") for x in k.labels[5:]] == [True] * n + [False]
    assert k.labels[-1] == "recheck"
    seqs = [struct.unpack_from("=I", r, 8)[0] for r in k.requests]
    assert seqs == sorted(set(seqs))
    first = expected_services()[0]
    assert k.requests[5] == wire.get_dests_request(k.family, seqs[5], first.key)
    m = len(k.requests)
    src.read()  # the dest requests are kept between reads, with each read's own sequence numbers
    again = k.requests[m + 4 : m + 4 + n]
    for r, svc in zip(again, expected_services(), strict=True):
        assert r == wire.get_dests_request(k.family, struct.unpack_from("=I", r, 8)[0], svc.key)
    assert len({struct.unpack_from("=I", r, 8)[0] for r in k.requests}) == len(k.requests)


def test_reads_reuse_one_socket(h: Harness) -> None:
    src = h.source()
    src.read()
    src.read()
    assert len(h.sockets) == 1 and h.kernel.labels.count("ctrl") == 1


# --------------------------------------------------------------------------- churn


def repeated(folder_file: Path) -> list[bytes]:
    """A dump whose messages all come twice, as when the kernel resumes a dump of a re-created entry:
    the repeat starts a datagram (within one the kernel holds its lock), NLMSG_DONE comes alone."""
    msgs = messages(folder_file.read_bytes())
    body, done = b"".join(msgs[:-1]), msgs[-1]
    return [body, body, done]


def test_dest_dump_repeated_by_churn_drops_duplicates_and_says_so(h: Harness) -> None:
    name = "TCP 203.0.113.10:80"
    index = json.loads((MAIN / "index.json").read_text())["services"]
    dest_file = MAIN / next(e["dests"] for e in index if e["service"] == name)
    h.next.replies = {key(name): repeated(dest_file)}
    snap = h.source().read()
    svc = next(s for s in snap.services if str(s.key) == name)
    want = next(s for s in expected_services() if str(s.key) == name)
    assert svc.dests == want.dests and svc.error == nl.CHANGED
    (issue,) = snap.issues
    assert issue.kind is IssueKind.INCONSISTENT and issue.service == svc.key and "duplicate" in issue.message


def test_a_table_bigger_than_the_receive_buffer_reads_whole(h: Harness) -> None:
    """600 dests in datagrams of <= 32 KiB: the receive mapping grows in the middle of the poll, and every
    span received before stays where it was."""
    name = "TCP 203.0.113.10:80"
    want = next(s for s in expected_services() if str(s.key) == name)
    many = tuple(
        dataclasses.replace(want.dests[0], family=AF_INET, address=f"198.51.100.{i % 250}", port=8000 + i)
        for i in range(600)
    )
    msgs = [
        wire.message(
            family_of(MAIN),
            wire.CMD_NEW_DEST,
            wire.nla(wire.CMD_ATTR_DEST, replies.encode_dest(d)),
            flags=wire.NLM_F_MULTI,
            seq=0,
        )
        for d in many
    ]
    per = (32 << 10) // len(msgs[0])
    grams = [b"".join(msgs[i : i + per]) for i in range(0, len(msgs), per)]
    assert sum(map(len, grams)) > 1 << 16 and len(grams) > 2
    h.next.replies = {key(name): [*grams, replies.done(0)]}
    snap = h.source().read()
    assert not snap.issues
    got = {str(s.key): s.dests for s in snap.services}
    assert got == {str(s.key): (many if str(s.key) == name else s.dests) for s in expected_services()}


def test_a_datagram_larger_than_the_receive_buffer_is_malformed(h: Harness) -> None:
    padding = struct.pack("=IHHII", 16 + (1 << 16), wire.NLMSG_NOOP, 0, 0, 0) + bytes(1 << 16)
    h.next.replies = {"info": [padding + (MAIN / "info.bin").read_bytes()]}
    with pytest.raises(SourceError) as e:
        h.source().read()
    assert e.value.kind is IssueKind.MALFORMED and "larger than the receive buffer" in str(e.value)


def test_the_receiver_gives_back_what_lies_beyond_its_resident_part(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nl, "_RESIDENT", mmap.PAGESIZE)
    rx = nl._Receiver()
    for i in range(3):  # grows twice: 64 -> 128 -> 256 KiB, the bytes before pos copied along
        room = rx.room()
        room[: 1 << 16] = bytes([i + 1]) * (1 << 16)
        rx.pos += 1 << 16
    assert len(rx.view) == 1 << 18
    assert [rx.view[k << 16] for k in range(3)] == [1, 2, 3]
    rx.release()
    assert rx.pos == 0 and rx.view[0] == 1 and rx.view[mmap.PAGESIZE - 1] == 1
    assert rx.view[mmap.PAGESIZE : 3 << 16] == bytes((3 << 16) - mmap.PAGESIZE)  # pages given back


def test_service_dump_repeated_by_churn_lists_each_service_once(h: Harness) -> None:
    h.next.replies = {"services": repeated(MAIN / "services.bin")}
    snap = h.source().read()
    assert [s.key for s in snap.services] == [s.key for s in expected_services()]
    assert [i.kind for i in snap.issues] == [IssueKind.INCONSISTENT]


# --------------------------------------------------------------------------- vanished services


def test_service_deleted_before_its_dest_dump_is_not_shown_with_zero_dests(h: Harness) -> None:
    gone = "TCP 203.0.113.10:80"
    h.next.replies = {
        key(gone): datagrams((ERRORS / "dests_missing.bin").read_bytes()),
        "recheck": without(gone),
    }
    snap = h.source().read()
    svc = next(s for s in snap.services if str(s.key) == gone)
    assert svc.error == nl.VANISHED and svc.dests == ()
    (issue,) = snap.issues
    assert issue.kind is IssueKind.INCONSISTENT and issue.service == svc.key
    others = [s for s in snap.services if s is not svc]
    assert others == [s for s in expected_services() if str(s.key) != gone]


def test_service_deleted_after_its_dest_dump_keeps_what_was_read(h: Harness) -> None:
    gone = "UDP 203.0.113.10:53"
    h.next.replies = {"recheck": without(gone)}
    snap = h.source().read()
    svc = next(s for s in snap.services if str(s.key) == gone)
    assert svc.error == nl.VANISHED and svc.dests == next(
        s.dests for s in expected_services() if s.key == svc.key
    )
    assert [i.kind for i in snap.issues] == [IssueKind.INCONSISTENT]


def test_reads_after_the_first_still_see_services_vanish_and_repeat(h: Harness) -> None:
    """From the second read on the service keys are those of the last read (compared by identity, requests
    reused by position): a service gone during the read and a dump repeated by churn still show."""
    src = h.source()
    first = src.read()
    second = src.read()
    assert list(second.services) == list(first.services) == expected_services() and not second.issues
    gone = "UDP 203.0.113.10:53"
    dumps = iter(
        [
            datagrams((MAIN / "services.bin").read_bytes()),
            without(gone),  # the third read's re-check
            repeated(MAIN / "services.bin"),  # the fourth read's dump
            datagrams((MAIN / "services.bin").read_bytes()),
        ]
    )
    h.kernel.replies["recheck"] = lambda request: next(dumps)  # every service dump after the first
    third = src.read()
    assert [s.key for s in third.services if s.error == nl.VANISHED] == [
        s.key for s in expected_services() if str(s.key) == gone
    ]
    assert [i.kind for i in third.issues] == [IssueKind.INCONSISTENT]
    fourth = src.read()
    assert list(fourth.services) == expected_services()
    assert [i.kind for i in fourth.issues] == [IssueKind.INCONSISTENT] and "duplicate" in fourth.issues[
        0
    ].message
    n = len(expected_services())
    assert len(h.kernel.labels) == 1 + 4 * (3 + 1 + n + 1)  # one socket: family list, then 4 reads


def test_a_service_that_really_has_no_dests(h: Harness) -> None:
    empty = "FWM 1"
    h.next.replies = {key(empty): datagrams((ERRORS / "dests_missing.bin").read_bytes())}
    snap = h.source().read()
    svc = next(s for s in snap.services if str(s.key) == empty)
    assert svc.dests == () and svc.error is None and not snap.issues


def test_dest_dump_answered_with_esrch(h: Harness) -> None:
    gone = "TCP [2001:db8::10]:80"
    h.next.replies = {key(gone): [(ERRORS / "service_esrch.bin").read_bytes()]}
    snap = h.source().read()
    svc = next(s for s in snap.services if str(s.key) == gone)
    assert svc.error == nl.VANISHED and [i.kind for i in snap.issues] == [IssueKind.INCONSISTENT]


# --------------------------------------------------------------------------- failures


def test_no_cap_net_admin(h: Harness) -> None:
    h.next.replies = {"info": [(ERRORS / "info_eperm.bin").read_bytes()]}
    with pytest.raises(SourceError) as e:
        h.source().read()
    assert e.value.kind is IssueKind.NO_PERMISSION and "CAP_NET_ADMIN" in str(e.value)


def test_ip_vs_not_loaded(h: Harness) -> None:
    h.next.replies = {"ctrl": datagrams((ERRORS / "ctrl_families_noipvs.bin").read_bytes())}
    with pytest.raises(SourceError) as e:
        h.source()
    assert e.value.kind is IssueKind.NO_IPVS and "never loads" in str(e.value)
    assert h.kernel.closed


def test_the_family_is_found_in_the_list_never_looked_up_by_name(h: Harness) -> None:
    """A lookup of "IPVS" by name makes the kernel modprobe ip_vs; listing the families does not."""
    h.source()
    (request,) = h.kernel.requests
    flags = struct.unpack_from("=H", request, 6)[0]
    assert flags & wire.NLM_F_DUMP == wire.NLM_F_DUMP and b"IPVS" not in request


def test_ip_vs_unloaded_between_reads(h: Harness) -> None:
    src = h.source()
    src.read()
    h.kernel.replies["info"] = lambda request: [replies.error(errno.ENOENT, request)]
    with pytest.raises(SourceError) as e:
        src.read()
    assert e.value.kind is IssueKind.NO_IPVS and h.kernel.closed
    src.read()  # module back: the next read resolves the family again on a new socket
    assert len(h.sockets) == 2


def test_malformed_dest_reply_is_an_issue_of_that_service(h: Harness) -> None:
    bad = "TCP 203.0.113.10:81"
    reply = bytearray((MAIN / h.next.dest_files[bad]).read_bytes())
    struct.pack_into("=H", reply, 24, 2000)  # first dest attribute claims 2000 bytes
    h.next.replies = {key(bad): datagrams(bytes(reply))}
    snap = h.source().read()
    svc = next(s for s in snap.services if str(s.key) == bad)
    assert svc.error is not None and svc.error.startswith("malformed reply") and svc.dests == ()
    assert [(i.kind, i.service) for i in snap.issues] == [(IssueKind.MALFORMED, svc.key)]
    assert [s for s in snap.services if s is not svc] == [s for s in expected_services() if s.key != svc.key]


def test_garbled_datagram_costs_one_service_and_a_reconnect(h: Harness) -> None:
    bad = "TCP 203.0.113.10:82"
    h.next.replies = {key(bad): [(MAIN / h.next.dest_files[bad]).read_bytes()[:50]]}
    snap = h.source().read()
    svc = next(s for s in snap.services if str(s.key) == bad)
    assert (
        svc.error is not None and svc.error.startswith("malformed reply") and "claims 356 bytes" in svc.error
    )
    assert [i.kind for i in snap.issues] == [IssueKind.MALFORMED]
    assert len(h.sockets) == 2 and h.sockets[0].closed
    assert [s for s in snap.services if s is not svc] == [s for s in expected_services() if s.key != svc.key]


def test_stale_datagrams_of_an_abandoned_request_are_skipped(h: Harness) -> None:
    h.next.stale = {"info": (MAIN / "config.bin").read_bytes()}
    snap = h.source().read()
    assert snap.version == "1.2.1" and snap.timeouts is not None and not snap.issues


def test_no_reply(h: Harness) -> None:
    h.next.replies = {"info": []}
    src = h.source()
    with pytest.raises(SourceError) as e:
        src.read()
    assert e.value.kind is IssueKind.IO and "no reply" in str(e.value) and h.kernel.closed


def test_parts_that_fail_alone_become_issues(h: Harness) -> None:
    daemons = bytearray((MAIN / "daemons.bin").read_bytes())
    struct.pack_into("=H", daemons, 26, 99)  # the first daemon's STATE attribute becomes an unknown one
    h.next.replies = {
        "config": lambda request: [replies.error(errno.EINVAL, request)],
        "daemons": datagrams(bytes(daemons)),
    }
    snap = h.source().read()
    assert snap.timeouts is None and snap.daemons == ()
    assert [i.kind for i in snap.issues] == [IssueKind.IO, IssueKind.MALFORMED]
    assert list(snap.services) == expected_services()


def test_missing_proc_files_are_issues(tmp_path: Path) -> None:
    src = nl.NetlinkSource(proc_root=str(tmp_path), socket_factory=FakeKernel)
    snap = src.read()
    assert snap.totals is None and snap.total_rates is None and dict(snap.sysctls) == {}
    assert [i.kind for i in snap.issues] == [IssueKind.IO, IssueKind.IO]
    assert "ip_vs_stats" in snap.issues[0].message


def _vs_dir(h: Harness) -> Path:
    return Path(h.root) / "sys" / "net" / "ipv4" / "vs"


def test_sysctls_are_opened_once_and_a_change_shows_at_the_next_read(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = h.source()
    listed: list[str] = []
    listdir = os.listdir

    def counted(d: str) -> list[str]:
        listed.append(d)
        return listdir(d)

    monkeypatch.setattr(os, "listdir", counted)
    first = src.read()
    (_vs_dir(h) / "expire_nodest_conn").write_text("1\n")  # in place: the open file sees the new value
    (_vs_dir(h) / "sync_threshold").write_text("7\t90\n")
    second = src.read()
    assert first.sysctls["expire_nodest_conn"] == 0 and second.sysctls["expire_nodest_conn"] == 1
    assert (second.sysctls["sync_threshold.0"], second.sysctls["sync_threshold.1"]) == (7, 90)
    assert listed == [str(_vs_dir(h))], "the sysctl files are listed and opened once, then read in place"
    assert dict(second.sysctls) == {
        **first.sysctls,
        "expire_nodest_conn": 1,
        "sync_threshold.0": 7,
        "sync_threshold.1": 90,
    }
    src.close()
    assert not src._sysctl_files._fds


def test_a_sysctl_that_fails_to_read_has_them_all_listed_again(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ip_vs unloaded and loaded again: the old files answer ENOENT; the next read opens the new ones."""
    src = h.source()
    before = src.read().sysctls
    pread = os.pread
    gone = [src._sysctl_files._fds["expire_nodest_conn"]]  # the old file, once (its number is reused)

    def pread_gone(fd: int, n: int, off: int) -> bytes:
        if fd in gone:
            gone.remove(fd)
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        return pread(fd, n, off)

    monkeypatch.setattr(os, "pread", pread_gone)
    (_vs_dir(h) / "expire_nodest_conn").write_text("1\n")
    snap = src.read()
    assert not gone and not snap.issues and dict(snap.sysctls) == {**before, "expire_nodest_conn": 1}


def test_a_sysctl_directory_that_appears_later_is_read(tmp_path: Path) -> None:
    src = nl.NetlinkSource(proc_root=str(tmp_path), socket_factory=FakeKernel)
    snap = src.read()
    assert dict(snap.sysctls) == {} and any("cannot list" in i.message for i in snap.issues)
    vs = tmp_path / "sys" / "net" / "ipv4" / "vs"
    vs.mkdir(parents=True)
    (vs / "expire_nodest_conn").write_text("1\n")
    (vs / "est_cpulist").write_text("0-3\n")
    snap = src.read()
    assert dict(snap.sysctls) == {"expire_nodest_conn": 1} and snap.est_cpulist == "0-3"
    assert not any("cannot list" in i.message for i in snap.issues)
    (vs / "est_cpulist").write_text("0-3 x\n")
    snap = src.read()
    assert snap.est_cpulist is None and [i.kind for i in snap.issues][-1] is IssueKind.MALFORMED


class _Connected(nl.KernelSocket):
    def sendto(self, data: bytes, address: tuple[int, int], /) -> int:  # type: ignore[override]
        return self.send(data)


def test_the_kernel_socket_times_out_in_the_kernel_and_the_read_says_no_reply() -> None:
    """KernelSocket's timeout is SO_RCVTIMEO on a blocking socket (no poll before every call)."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # a kernel that never answers
    sock = _Connected(fileno=mine.detach())
    with pytest.raises(SourceError) as e:
        nl.NetlinkSource(timeout=0.05, socket_factory=lambda: sock)
    assert e.value.kind is IssueKind.IO and "no reply from the kernel within 0.05 s" in str(e.value)
    assert theirs.recv(1 << 16)  # the family list request went out
    assert sock.fileno() == -1  # dropped: closed
    theirs.close()
    fresh = nl.KernelSocket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fresh.settimeout(2.5)  # whole jiffies at any HZ: read back exactly
    assert fresh.gettimeout() is None
    timeval = struct.pack("@ll", 2, 500000)
    assert fresh.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, len(timeval)) == timeval
    assert fresh.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, len(timeval)) == timeval
    fresh.close()


def test_gc_is_back_on_after_a_read_and_after_a_failure(h: Harness) -> None:
    assert gc.isenabled()
    src = h.source()
    src.read()
    assert gc.isenabled()
    h.kernel.replies["info"] = []
    with pytest.raises(SourceError):
        src.read()
    assert gc.isenabled()


# --------------------------------------------------------------------------- write primitives


GUE = ServiceKey.tcp("203.0.113.14", 8080)


def test_get_dest_is_a_fresh_full_read(h: Harness) -> None:
    src = h.source()
    d = src.get_dest(GUE, DestKey(AF_INET, "192.0.2.12", 8080))
    assert d is not None and d.fwd is FwdMethod.TUNNEL and d.tun_port == 6080
    assert d == next(x for s in expected_services() if s.key == GUE for x in s.dests if x.key == d.key)
    assert h.kernel.labels == ["ctrl", f"dests:{GUE}"]
    assert src.get_dest(GUE, DestKey(AF_INET, "192.0.2.99", 8080)) is None
    h.kernel.replies[f"dests:{GUE}"] = [(ERRORS / "service_esrch.bin").read_bytes()]
    assert src.get_dest(GUE, DestKey(AF_INET, "192.0.2.12", 8080)) is None


def test_set_dest_sends_the_whole_dest_and_checks_the_ack(h: Harness) -> None:
    src = h.source()
    dest = Dest(
        AF_INET, "192.0.2.12", 8080, FwdMethod.TUNNEL, 7, 100, 10, tun_type=TunType.GUE, tun_port=6080
    )
    src.set_dest(GUE, dest)
    request = h.kernel.requests[-1]
    assert request == wire.set_dest_request(
        h.kernel.family, struct.unpack_from("=I", request, 8)[0], GUE, dest
    )
    h.kernel.replies["set_dest"] = [(ERRORS / "set_dest_enoent.bin").read_bytes()]
    with pytest.raises(SourceError) as e:
        src.set_dest(GUE, dest)
    assert e.value.kind is IssueKind.INCONSISTENT
    assert "ENOENT" in str(e.value) and "192.0.2.12:8080" in str(e.value) and str(GUE) in str(e.value)
    h.kernel.replies["set_dest"] = lambda request: [replies.error(errno.EINVAL, request)]
    with pytest.raises(SourceError, match="Invalid argument"):
        src.set_dest(GUE, dest)


# --------------------------------------------------------------------------- /proc and namespaces


def test_conn_lines_stream_the_conn_table(h: Harness, tmp_path: Path) -> None:
    header = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"
    line = "TCP C6336402 A2F2 CB00710A 0050 C000020B 1F90 ESTABLISHED     899\n"
    (tmp_path / "net" / "ip_vs_conn").write_text(header + line)
    src = h.source()
    assert list(src.conn_lines()) == [header, line]
    with pytest.raises(SourceError) as e:
        list(src.conn_lines(sync=True))
    assert e.value.kind is IssueKind.UNAVAILABLE


def test_netns_names_and_paths() -> None:
    assert netns_path("blue") == "/var/run/netns/blue"
    assert netns_path("/proc/42/ns/net") == "/proc/42/ns/net"


class FakeSetns:
    """Stands in for pyroute2.netns.setns (entering a namespace needs CAP_SYS_ADMIN)."""

    def __init__(self, error: int | None = None) -> None:
        self.error = error
        self.thread: int | None = None

    def __call__(self, fd: int, flags: int = 0) -> None:
        assert flags == 0 and os.fstat(fd)  # an open fd, never a name pyroute2 could create
        if self.error:
            raise OSError(self.error, os.strerror(self.error))
        self.thread = threading.get_ident()


def test_netns_source_opens_everything_from_its_namespace_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyroute2.netns

    setns = FakeSetns()
    monkeypatch.setattr(pyroute2.netns, "setns", setns)
    ns_file = "/proc/self/ns/net"  # a real network namespace file; the fake setns stands in for entering
    opened_in: list[int] = []

    def factory() -> FakeKernel:
        opened_in.append(threading.get_ident())
        return FakeKernel()

    root = tmp_path / "proc"
    thread_self = root / "thread-self"
    proc_root(thread_self)  # /proc/net of a namespace is read through /proc/thread-self/net
    (thread_self / "sys").rename(root / "sys")
    src = nl.NetlinkSource(netns=str(ns_file), proc_root=str(root), socket_factory=factory)
    snap = src.read()
    assert setns.thread is not None and opened_in == [setns.thread] != [threading.get_ident()]
    assert snap.totals is not None and snap.sysctls and not snap.issues
    src.close()


@pytest.mark.parametrize(
    ("path", "error", "kind", "text"),
    [
        ("missing", None, IssueKind.MALFORMED, "no network namespace"),
        ("plain", None, IssueKind.MALFORMED, "is not a namespace file"),
        ("/proc/self/ns/uts", None, IssueKind.MALFORMED, "is a uts namespace, not a network namespace"),
        ("/proc/self/ns/net", errno.EPERM, IssueKind.NO_PERMISSION, "needs CAP_SYS_ADMIN"),
    ],
)
def test_netns_that_cannot_be_entered(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    error: int | None,
    kind: IssueKind,
    text: str,
) -> None:
    """Each cause says what it is (and maps to its own exit status: 5 bad file, 4 permission)."""
    import pyroute2.netns

    setns = FakeSetns(error)
    monkeypatch.setattr(pyroute2.netns, "setns", setns)
    if path == "plain":
        (tmp_path / "plain").write_text("")
    ns_file = path if path.startswith("/") else str(tmp_path / path)
    with pytest.raises(SourceError) as e:
        nl.NetlinkSource(netns=ns_file, socket_factory=FakeKernel)
    assert e.value.kind is kind and text in str(e.value) and ns_file in str(e.value)
    assert (setns.thread is None) and (error is None or "Operation not permitted" in str(e.value))
