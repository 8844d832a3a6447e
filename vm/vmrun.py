#!/usr/bin/env python3
"""Run shell commands as root inside a throw-away QEMU virtual machine on Debian's own kernel.

What this is for: testing pylvs against the real kernel IPVS on hosts whose kernel has none.
``run_in_vm(script)`` boots Debian's ``linux-image-amd64`` kernel under QEMU (TCG unless told
otherwise) with the host's root filesystem shared read-only over virtio-9p (so the checkout, its
virtualenv and the host's ipvsadm are at their usual paths), a RAM overlay on top so the guest may
write anywhere, and a writable scratch directory mounted at the same path on both sides. The
script runs once as root; its stdout, stderr and exit status come back. One boot runs the whole
script: put many commands (and long-lived Python processes) in one script, because a boot costs
seconds under TCG.

What this is not for: isolation from a hostile guest (the host root is readable) or networking
(the VM has no network device: all traffic stays in namespaces inside it).

Artefacts (the unpacked kernel package, the initramfs) live in ``PYLVS_VM_CACHE``
(default ``/var/cache/pylvs-vm``), never in the repository.

Command line: ``vmrun.py [--timeout S] [--keep] -- CMD...`` prints CMD's output and exits with its
status (``make vm-run CMD='uname -r; lsmod'``).
"""

from __future__ import annotations

import argparse
import fcntl
import gzip
import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("PYLVS_VM_CACHE", "/var/cache/pylvs-vm"))
QEMU = "qemu-system-x86_64"
BUSYBOX = "/bin/busybox"
# Loaded in this order by the initramfs: virtio transport, 9p and the overlay.
INITRAMFS_MODULES = (
    "virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
    "netfs", "fscache", "9pnet", "9pnet_virtio", "9p", "overlay",
)


class VMUnavailable(Exception):
    """The VM cannot be had here (no qemu, no busybox-static, no kernel package); tests skip."""


@dataclass(frozen=True)
class GuestKernel:
    version: str  # e.g. 6.1.0-56-amd64
    root: Path  # the unpacked package: root/boot/vmlinuz-*, root/lib/modules/<version>

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"

    @property
    def moddir(self) -> Path:
        return self.root / "lib" / "modules" / self.version


def _lock(name: str) -> io.TextIOWrapper:
    CACHE.mkdir(parents=True, exist_ok=True)
    f = open(CACHE / f".{name}.lock", "w")  # noqa: SIM115 - held until the caller closes it
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def _image_package() -> str | None:
    """The versioned kernel package linux-image-amd64 depends on, by apt's current lists."""
    try:
        out = subprocess.run(
            ["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"Depends:\s*(linux-image-[0-9][^\s]*)", out)
    return m.group(1) if m else None


def _cached_kernels() -> list[GuestKernel]:
    found = []
    for d in sorted(CACHE.glob("linux-image-*")):
        for vmlinuz in (d / "boot").glob("vmlinuz-*"):
            k = GuestKernel(vmlinuz.name.removeprefix("vmlinuz-"), d)
            if (k.moddir / "modules.dep").exists():
                found.append(k)
    return found


def _unpack(pkg: str) -> GuestKernel:
    target = CACHE / pkg
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        dl = subprocess.run(["apt-get", "download", pkg], cwd=tmp, capture_output=True, text=True)
        if dl.returncode != 0 and os.geteuid() == 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True)
            dl = subprocess.run(["apt-get", "download", pkg], cwd=tmp, capture_output=True,
                                text=True)
        debs = list(Path(tmp).glob("*.deb"))
        if not debs:
            raise VMUnavailable(f"apt-get download {pkg} failed: {dl.stderr.strip()[-300:]}")
        staging = Path(tmp) / "root"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(staging)], check=True)
        vmlinuz = next((staging / "boot").glob("vmlinuz-*"))
        version = vmlinuz.name.removeprefix("vmlinuz-")
        # modules.dep for busybox modprobe (the kernel's own autoload of schedulers uses it).
        subprocess.run([BUSYBOX, "depmod", "-b", str(staging), version], check=True)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return GuestKernel(version, target)


def guest_kernel() -> GuestKernel:
    """Debian's current kernel, downloaded and unpacked once; an older cached one if offline."""
    with _lock("kernel"):
        pkg = _image_package()
        if pkg is None and not _cached_kernels() and os.geteuid() == 0:
            # A fresh machine may have no apt lists yet.
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600)
            pkg = _image_package()
        if pkg is not None:
            for k in _cached_kernels():
                if k.root.name == pkg:
                    return k
            try:
                return _unpack(pkg)
            except (VMUnavailable, subprocess.CalledProcessError, StopIteration):
                pass
        cached = _cached_kernels()
        if not cached:
            raise VMUnavailable(
                "no guest kernel: 'apt-cache depends linux-image-amd64' found no package to "
                "download and none is cached in " + str(CACHE)
            )
        return cached[-1]


def _module_paths(k: GuestKernel) -> dict[str, Path]:
    paths = {}
    for line in (k.moddir / "modules.dep").read_text().splitlines():
        rel = line.split(":", 1)[0]
        name = Path(rel).name.split(".ko")[0].replace("-", "_")
        paths[name] = k.moddir / rel
    return paths


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (path, mode, data) entries, as the kernel unpacks an initramfs."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(
            f"{v:08X}" for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0)
        )
        out.write(hdr.encode() + nb)
        out.write(b"\0" * (-(110 + len(nb)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))
    return out.getvalue()


def _kept_paths() -> str:
    """The checkout and the reference data beside it (``../shared``), as ``VISIBLE=REAL`` pairs:
    the guest gets fresh /tmp and /run, and re-mounts these there when they live under them."""
    pairs = []
    for p in (HERE.parent, HERE.parent / ".." / "shared"):
        if p.exists():
            pairs.append(f"{os.path.normpath(p)}={p.resolve()}")
    return ",".join(pairs)


def initramfs(k: GuestKernel) -> Path:
    """The guest's initramfs (busybox, init, 9p/overlay modules), rebuilt when an input changes."""
    if not Path(BUSYBOX).exists():
        raise VMUnavailable(f"{BUSYBOX} missing (Debian package busybox-static)")
    mods = _module_paths(k)
    files: list[tuple[str, int, bytes]] = [
        ("bin", 0o040755, b""), ("dev", 0o040755, b""), ("proc", 0o040755, b""),
        ("sys", 0o040755, b""), ("modules", 0o040755, b""),
        ("bin/busybox", 0o100755, Path(BUSYBOX).read_bytes()),
        ("init", 0o100755, (HERE / "init.sh").read_bytes()),
        ("stage2", 0o100644, (HERE / "stage2.sh").read_bytes()),
        ("modules/order", 0o100644, "\n".join(INITRAMFS_MODULES).encode() + b"\n"),
    ]
    for m in INITRAMFS_MODULES:
        if m not in mods:
            raise VMUnavailable(f"module {m} not in {k.moddir}")
        files.append((f"modules/{m}.ko", 0o100644, mods[m].read_bytes()))
    digest = hashlib.sha256()
    for name, mode, data in files:
        digest.update(f"{name}:{mode}:{len(data)}:".encode())
        digest.update(data)
    path = CACHE / f"initramfs-{k.version}-{digest.hexdigest()[:16]}.cpio.gz"
    if not path.exists():
        with _lock("initramfs"):
            if not path.exists():
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                tmp.write_bytes(gzip.compress(_cpio_newc(files), compresslevel=1))
                tmp.rename(path)
    return path


def check_available() -> None:
    """Raise VMUnavailable with the reason when no VM can be booted here."""
    if shutil.which(QEMU) is None:
        raise VMUnavailable(f"{QEMU} not found (Debian package qemu-system-x86)")
    if not Path(BUSYBOX).exists():
        raise VMUnavailable(f"{BUSYBOX} missing (Debian package busybox-static)")
    if os.geteuid() != 0:
        raise VMUnavailable("the VM shares the host root over 9p and needs root")


@dataclass
class VMResult:
    rc: int
    stdout: str
    stderr: str
    console: str
    seconds: float


def run_in_vm_full(
    script: str, timeout: float = 300, memory_mb: int = 1024, keep: bool = False,
) -> VMResult:
    """Boot, run ``script`` with /bin/sh as root in the guest, power off; everything returned."""
    check_available()
    k = guest_kernel()
    initrd = initramfs(k)
    scratch = Path(tempfile.mkdtemp(prefix="pylvs-vm-", dir="/tmp"))
    try:
        (scratch / "cmd.sh").write_text(script)
        console = scratch / "console.log"
        accel = os.environ.get("PYLVS_VM_ACCEL", "tcg")
        cmd = [
            QEMU, "-machine", "q35", "-accel", accel, "-cpu", "max" if accel == "tcg" else "host",
            "-m", str(memory_mb), "-smp", "1", "-nodefaults", "-no-user-config", "-nographic",
            "-no-reboot", "-nic", "none",
            "-serial", f"file:{console}", "-monitor", "none",
            "-kernel", str(k.vmlinuz), "-initrd", str(initrd),
            "-append", (
                "console=ttyS0 quiet loglevel=4 panic=-1 mitigations=off tsc=reliable "
                f"pylvs.scratch={scratch} pylvs.kmods={k.root} pylvs.keep={_kept_paths()}"
            ),
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
            "multidevs=remap",
            "-virtfs", f"local,path={scratch},mount_tag=scratch,security_model=none",
        ]
        t0 = time.monotonic()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            qemu_out, _ = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            qemu_out, _ = proc.communicate()
            timed_out = True
        seconds = time.monotonic() - t0
        con = console.read_text(errors="replace") if console.exists() else ""
        con += qemu_out.decode(errors="replace")

        def read(name: str) -> str:
            p = scratch / name
            return p.read_text(errors="replace") if p.exists() else ""

        rc_text = read("rc").strip()
        if rc_text:
            rc = int(rc_text)
            err = read("stderr")
        else:
            rc = 124 if timed_out else 125
            why = f"timed out after {timeout:.0f} s" if timed_out else "guest died"
            err = read("stderr") + f"pylvs-vm: {why}; console tail:\n" + "\n".join(
                con.splitlines()[-30:]
            ) + "\n"
        return VMResult(rc, read("stdout"), err, con, seconds)
    finally:
        if keep:
            print(f"pylvs-vm: scratch kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def run_in_vm(script: str, timeout: float = 300) -> tuple[int, str, str]:
    """``(rc, stdout, stderr)`` of ``script`` run by /bin/sh as root in a fresh VM."""
    r = run_in_vm_full(script, timeout)
    return r.rc, r.stdout, r.stderr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vmrun", description=__doc__.split("\n\n")[0])
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--console", action="store_true", help="print the guest console too")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    words = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not words:
        ap.error("no command given")
    try:
        r = run_in_vm_full(" ".join(words) + "\n", args.timeout, keep=args.keep)
    except VMUnavailable as e:
        print(f"vm-run: {e}", file=sys.stderr)
        return 125
    if args.console:
        sys.stderr.write(r.console)
    sys.stdout.write(r.stdout)
    sys.stdout.flush()
    sys.stderr.write(r.stderr)
    print(f"vm-run: rc={r.rc} in {r.seconds:.1f} s", file=sys.stderr)
    return r.rc


if __name__ == "__main__":
    sys.exit(main())
