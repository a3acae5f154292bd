"""Boot a stock Debian kernel with IPVS under qemu and run the kernel tier inside it.

The guest sees the host's root file system read-only over 9p (so the repository and its virtual
environment are at the same paths), writes into one shared results directory, and has no NIC.
Used by test_qemu.py; also runnable by hand:

    .venv/bin/python tests/kernel/harness.py [--timeout S] [-- <extra pytest args, e.g. -k churn>]
"""

from __future__ import annotations

import argparse
import ctypes
import gzip
import hashlib
import io
import lzma
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(__file__).resolve().parent / ".cache"
GUEST_RESULTS = "/run/lvstop-results"  # where the writable share is mounted inside the guest
QEMU = "qemu-system-x86_64"
# The guest needs these before it can mount anything: virtio PCI transport and the 9p file system.
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p")

# Stage one runs from the initramfs with busybox only; stage two runs the shared root's own tools.
INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
while read -r m; do insmod "$m" || echo "lvstop-guest: insmod $m failed"; done < /mod/order
O=trans=virtio,version=9p2000.L,access=any,msize=524288
fail() { echo "lvstop-guest: $*"; echo o > /proc/sysrq-trigger; sleep 5; }
mount -t 9p -o ro,cache=loose,$O hostroot /newroot || fail "cannot mount the host root"
mount -t tmpfs -o mode=755 tmpfs /newroot/run
for d in /tmp /var/tmp; do mount -t tmpfs -o mode=1777 tmpfs /newroot$d; done
# the repository gets its own share: a checkout under /tmp would be hidden by the tmpfs above
mkdir -p /newroot@REPO@
mount -t 9p -o ro,cache=loose,$O repo /newroot@REPO@ || fail "cannot mount the repository share"
mkdir -p /newroot@RESULTS@
mount -t 9p -o rw,$O results /newroot@RESULTS@ || fail "cannot mount the results share"
mount --move /dev /newroot/dev; mount --move /proc /newroot/proc; mount --move /sys /newroot/sys
exec switch_root /newroot /bin/sh -c '
  mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
  ln -s /proc/self/fd /dev/fd; ln -s fd/0 /dev/stdin; ln -s fd/1 /dev/stdout; ln -s fd/2 /dev/stderr
  export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
  hostname lvstop-guest; ip link set lo up
  echo "lvstop-guest: up after $(cut -d" " -f1 /proc/uptime)s"
  /bin/bash @RESULTS@/guest.sh; echo $? > @RESULTS@/guest-rc
  sync; echo o > /proc/sysrq-trigger; sleep 10'
"""


class HarnessError(Exception):
    """The guest could not be prepared (no kernel, no qemu, module trouble)."""


@dataclass(frozen=True)
class Kernel:
    version: str
    image: Path
    modules: Path


@dataclass(frozen=True)
class GuestRun:
    returncode: int | None  # the guest command's exit status; None if the guest never got that far
    timed_out: bool
    wall_seconds: float
    console_log: Path
    results_dir: Path

    @property
    def kernel_release(self) -> str | None:
        p = self.results_dir / "uname"
        return p.read_text().strip() or None if p.exists() else None

    def console_tail(self, lines: int = 60) -> str:
        text = (
            self.console_log.read_text(errors="replace") if self.console_log.exists() else "(no console log)"
        )
        return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class Outcome:
    """One in-guest test as junit.xml reports it."""

    test: str
    outcome: str  # passed | failed | error | skipped
    seconds: float
    message: str = ""


def junit_outcomes(path: Path) -> list[Outcome]:
    out = []
    for case in ET.parse(path).iter("testcase"):
        test = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = (el.get("message") or "") + ("\n" + el.text if el.text else "")
                break
        out.append(Outcome(test, outcome, float(case.get("time", 0)), message.strip()))
    return out


def notes(pytest_log: Path) -> list[str]:
    """Lines the in-guest tests printed as `[note] ...` (measurements worth seeing on the host)."""
    if not pytest_log.exists():
        return []
    return sorted(
        {
            line.strip()
            for line in pytest_log.read_text(errors="replace").splitlines()
            if line.startswith("[note] ")
        }
    )


def _version_key(v: str) -> list[tuple[int, str]]:
    return [(int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.\-+~]", v)]


def find_kernels(modules_root: Path = Path("/lib/modules"), boot: Path = Path("/boot")) -> list[Kernel]:
    """Installed Debian (-amd64) kernels that ship the IPVS modules and a bootable image, oldest first."""
    found = []
    for d in modules_root.glob("*-amd64"):
        image = boot / f"vmlinuz-{d.name}"
        if (d / "kernel/net/netfilter/ipvs").is_dir() and image.is_file():
            found.append(Kernel(d.name, image, d))
    return sorted(found, key=lambda k: _version_key(k.version))


def series(version: str) -> str:
    """The kernel series a release belongs to: "6.1" for 6.1.0-57-amd64, "6.12" for 6.12.117+deb12-amd64."""
    return ".".join(version.split(".")[:2])


def tier_kernels(kernels: Sequence[Kernel]) -> list[Kernel]:
    """The newest kernel of each installed series (the tier runs once on each: 6.1, 6.12)."""
    newest: dict[str, Kernel] = {}
    for k in kernels:  # oldest first, so the last one of a series wins
        newest[series(k.version)] = k
    return sorted(newest.values(), key=lambda k: _version_key(k.version))


def find_kernel(modules_root: Path = Path("/lib/modules"), boot: Path = Path("/boot")) -> Kernel | None:
    """The newest installed kernel with IPVS (for running one in-guest test by hand)."""
    kernels = find_kernels(modules_root, boot)
    return kernels[-1] if kernels else None


def module_files(kernel: Kernel, names: Iterable[str]) -> list[Path]:
    """Module files in load order, dependencies first, each once (builtins are not listed by modprobe)."""
    order: list[Path] = []
    for name in names:
        out = subprocess.run(
            ["modprobe", "-S", kernel.version, "--show-depends", name],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode:
            raise HarnessError(f"modprobe --show-depends {name} for {kernel.version}: {out.stderr.strip()}")
        for line in out.stdout.splitlines():
            parts = line.split()
            if parts[:1] == ["insmod"] and Path(parts[1]) not in order:
                order.append(Path(parts[1]))
    return order


def _module_bytes(path: Path) -> bytes:
    # busybox insmod wants plain ELF; Debian compresses modules on newer releases
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        raise HarnessError(f"{path}: zstd-compressed modules are not supported by this harness")
    return data


class _Newc:
    """A minimal cpio 'newc' writer: enough for an initramfs of directories, files and a device node."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
        self.ino += 1
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        self.buf.write(name.encode() + b"\0")
        self.buf.write(b"\0" * (-self.buf.tell() % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-self.buf.tell() % 4))

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def _init_script() -> str:
    return INIT.replace("@RESULTS@", GUEST_RESULTS).replace("@REPO@", str(REPO))


def build_initramfs(kernel: Kernel, cache_dir: Path = CACHE_DIR, busybox: str = "/bin/busybox") -> Path:
    """Busybox plus the virtio/9p modules; built once per kernel, init script and busybox, then cached."""
    if not Path(busybox).is_file():
        raise HarnessError(f"{busybox} missing: install busybox-static")
    mods = module_files(kernel, BOOT_MODULES)
    digest = hashlib.sha256()
    for part in (_init_script(), kernel.version, *map(str, mods), str(os.stat(busybox).st_mtime_ns)):
        digest.update(part.encode() + b"\0")
    target = cache_dir / f"initramfs-{kernel.version}-{digest.hexdigest()[:12]}.cpio.gz"
    if target.exists():
        return target
    cpio = _Newc()
    for d in ("bin", "dev", "proc", "sys", "newroot", "mod"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.file("bin/busybox", Path(busybox).read_bytes(), 0o755)
    cpio.file("init", _init_script().encode(), 0o755)
    names = []
    for m in mods:
        name = m.name.removesuffix(".xz").removesuffix(".gz")
        cpio.file(f"mod/{name}", _module_bytes(m))
        names.append(f"/mod/{name}")
    cpio.file("mod/order", ("\n".join(names) + "\n").encode())
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache_dir, delete=False) as tmp:
        tmp.write(gzip.compress(cpio.finish(), compresslevel=1))
    os.replace(tmp.name, target)
    return target


def guest_script(pytest_args: Sequence[str], env: dict[str, str]) -> str:
    """What the guest runs: the in-guest pytest session, its output teed to the console and the results."""
    python = REPO / ".venv/bin/python"
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    cmd = [
        str(python),
        "-m",
        "pytest",
        "-m",
        "kernel",
        "tests/kernel",
        "-p",
        "no:cacheprovider",
        "-W",
        "ignore::pytest.PytestConfigWarning",  # pyproject's asyncio_mode, without the plugin
        f"--junitxml={GUEST_RESULTS}/junit.xml",
        "-v",
        "-rP",
        *pytest_args,
    ]
    return "\n".join(
        [
            "set -o pipefail",
            f"cd {shlex.quote(str(REPO))}",
            # plugin autoload costs ~45 s under TCG (schemathesis...); the kernel tier needs none of them
            "export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTEST_DISABLE_PLUGIN_AUTOLOAD=1",
            f"export LVSTOP_KERNEL_GUEST=1 LVSTOP_RESULTS={GUEST_RESULTS} {exports}",
            f"uname -r > {GUEST_RESULTS}/uname",
            f"{shlex.join(cmd)} 2>&1 | tee {GUEST_RESULTS}/pytest.log",
            "",
        ]
    )


def _die_with_parent() -> None:
    """In qemu's child before exec: a killed test run must not leave a guest burning CPU."""
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_guest(
    kernel: Kernel,
    initramfs: Path,
    script: str,
    results_dir: Path,
    *,
    timeout: float = 840,
    mem: str = "2G",
    cpus: int = 2,
    qemu: str = QEMU,
) -> GuestRun:
    """Boot, run `script` (bash) in the guest, power off. Never raises on guest failure: see GuestRun."""
    results_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("guest-rc", "uname", "junit.xml", "pytest.log"):
        (results_dir / stale).unlink(missing_ok=True)
    (results_dir / "guest.sh").write_text(script)
    console = results_dir / "console.log"

    def share(tag: str, path: Path | str, ro: bool) -> list[str]:
        opts = f"local,id={tag},path={path},security_model=none,multidevs=remap" + (
            ",readonly=on" if ro else ""
        )
        return ["-fsdev", opts, "-device", f"virtio-9p-pci,fsdev={tag},mount_tag={tag}"]

    argv = [
        qemu,
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",  # numpy's wheels need SSE4.2 and more; qemu's default CPU model lacks them (SIGILL)
        "-smp",
        str(cpus),
        "-m",
        mem,
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-nic",
        "none",
        "-no-reboot",
        "-serial",
        f"file:{console}",
        "-kernel",
        str(kernel.image),
        "-initrd",
        str(initramfs),
        "-append",
        "console=ttyS0 panic=-1 quiet",
        *share("hostroot", "/", ro=True),
        *share("repo", REPO, ro=True),
        *share("results", results_dir, ro=False),
    ]
    t0 = time.monotonic()
    timed_out = False
    with open(results_dir / "qemu.stderr", "wb") as err:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, preexec_fn=_die_with_parent
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            proc.wait()
    wall = time.monotonic() - t0
    rc_file = results_dir / "guest-rc"
    rc = int(rc_file.read_text()) if rc_file.exists() and rc_file.read_text().strip() else None
    return GuestRun(rc, timed_out, wall, console, results_dir)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=CACHE_DIR / "results")
    ap.add_argument("--timeout", type=float, default=840)
    ap.add_argument("--kernel", help="a kernel series (6.1, 6.12) or release to boot; default: the newest")
    ap.add_argument("pytest_args", nargs="*")
    args = ap.parse_args(argv)
    kernels = find_kernels()
    if args.kernel:
        kernels = [k for k in kernels if args.kernel in (k.version, series(k.version))]
    kernel = kernels[-1] if kernels else None
    if kernel is None:
        print("no Debian kernel with IPVS modules installed (apt-get install linux-image-amd64)")
        return 2
    if shutil.which(QEMU) is None:
        print(f"{QEMU} not found (apt-get install qemu-system-x86)")
        return 2
    initrd = build_initramfs(kernel)
    env = {k: v for k, v in os.environ.items() if k.startswith("LVSTOP_")}
    run = run_guest(kernel, initrd, guest_script(args.pytest_args, env), args.results, timeout=args.timeout)
    status = f"rc={run.returncode} timed_out={run.timed_out} wall={run.wall_seconds:.1f}s"
    print(f"kernel {run.kernel_release} {status}")
    if run.returncode is None:
        print(run.console_tail())
        return 1
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
