"""Test doubles shared by the test folders (import `fakes`: pytest puts tests/ on the path for conftest)."""

from __future__ import annotations

from collections.abc import Iterator

from lvstop.errors import SourceError
from lvstop.model import AF_INET, Dest, DestKey, FwdMethod, ServiceKey, Snapshot

SAMPLE_WEIGHT = 3  # the weight every dest reads as until something is written


class FakeNetlink:
    """Stands in for NetlinkSource: fails on construction or on read as told, records its writes."""

    name = "netlink"
    fail_init: SourceError | None = None
    fail_read: SourceError | None = None

    def __init__(self, netns: str | None = None, proc_root: str = "/proc") -> None:
        if self.fail_init:
            raise self.fail_init
        self.closed = False
        self.writes: list[Dest] = []

    def read(self) -> Snapshot:
        if self.fail_read:
            raise self.fail_read
        return Snapshot("netlink", "x", 0.0, 0.0)

    def conn_lines(self, sync: bool = False) -> Iterator[str]:
        return iter(())

    def close(self) -> None:
        self.closed = True

    def get_dest(self, skey: ServiceKey, dkey: DestKey) -> Dest | None:
        if self.writes:
            return self.writes[-1]
        return Dest(AF_INET, dkey.address, dkey.port, FwdMethod.MASQ, SAMPLE_WEIGHT)

    def set_dest(self, skey: ServiceKey, dest: Dest) -> None:
        self.writes.append(dest)


class Replies:
    """Stands in for RemoteSource.get_json: answers `path` with the given documents, one per call."""

    base = "http://192.0.2.1:9736"

    def __init__(self, path: str, *docs: object) -> None:
        self.path = path
        self.docs = list(docs)

    def get_json(self, path: str) -> object:
        assert path == self.path
        return self.docs.pop(0)
