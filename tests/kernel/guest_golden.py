"""Runs inside the test VM: replays golden ipvsadm cases with pylvsadm standing in for ipvsadm.

Each case script (``../shared/golden/ipvsadm/NAME.sh``) runs exactly as it was recorded: busybox
sh, ``rec.sh`` sourced first, ``lvsnet.sh`` at /usr/lib, real namespaces and traffic. Only the
commands ``ipvsadm``, ``ipvsadm-save`` and ``ipvsadm-restore`` are different: small shell
stand-ins first in PATH hand their arguments and stdin to this process, which runs pylvsadm's
``main`` in-process (so the kernel backend is chosen exactly as on a host with no director) and
hands back stdout, stderr and the exit status. One Python process serves every call: starting
an interpreter per command costs over a second under TCG.

Each case runs in a network namespace of its own, so it starts with an empty IPVS table and
default timeouts as on a fresh boot. Prints ``{case: [steps...]}`` as JSON.
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pylvs.cli import ipvsadm

GOLDEN = Path(__file__).resolve().parents[2] / ".." / "shared" / "golden" / "ipvsadm"
# /etc/hosts of the recording VM, as its own `cat /etc/hosts` step shows it.
GOLDEN_HOSTS = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
FIFO = "/run/pylvsadm.fifo"
WRAP = Path("/run/pylvs-golden/bin")
BB = Path("/run/pylvs-golden/bb")
STANDIN = """#!/bin/busybox sh
# Stand-in for {prog}: the replay driver runs pylvsadm with these arguments and this stdin.
d=$(mktemp -d /run/pylvsadm-req.XXXXXX)
for a in "$@"; do printf '%s\\0' "$a"; done > "$d/argv"
cat > "$d/stdin"
mkfifo "$d/done"
echo "{prog} $d" > {fifo}
read rc < "$d/done"
cat "$d/stdout"
cat "$d/stderr" >&2
rm -rf "$d"
exit "$rc"
"""


CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


# Plain unshare/setns through libc: importing pyroute2 costs over ten seconds under TCG.
def enter_new_netns() -> int:
    """Move this (main) thread to a fresh network namespace; an fd to go back with."""
    back = os.open("/proc/self/ns/net", os.O_RDONLY)
    _check(_libc.unshare(CLONE_NEWNET), "unshare")
    return back


def leave_netns(back: int) -> None:
    _check(_libc.setns(back, CLONE_NEWNET), "setns")
    os.close(back)


def setup() -> None:
    WRAP.mkdir(parents=True, exist_ok=True)
    BB.mkdir(parents=True, exist_ok=True)
    subprocess.run(["/bin/busybox", "--install", "-s", str(BB)], check=True)
    for prog in ("ipvsadm", "ipvsadm-save", "ipvsadm-restore"):
        p = WRAP / prog
        p.write_text(STANDIN.format(prog=prog, fifo=FIFO))
        p.chmod(0o755)
    shutil.copy(GOLDEN / "lvsnet.sh", "/usr/lib/lvsnet.sh")
    if os.path.exists(FIFO):
        os.unlink(FIFO)
    os.mkfifo(FIFO)


# Commands that only read the table: with --pair the real ipvsadm runs them too, just before
# and just after pylvsadm, on the same live kernel state.
_READ_ONLY = ("-L", "-l", "--list", "-S", "--save")
PAIRS: list[dict[str, Any]] = []


def _real(prog: str, argv: list[str]) -> dict[str, Any]:
    p = subprocess.run([f"/usr/sbin/{prog}", *argv], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL)
    return {"stdout": p.stdout, "stderr": p.stderr, "rc": p.returncode}


def serve_one(prog: str, d: Path, pair: bool = False) -> None:
    argv = [a.decode() for a in (d / "argv").read_bytes().split(b"\0")[:-1]]
    stdin = (d / "stdin").read_text()
    paired = pair and (prog == "ipvsadm-save" or (
        prog == "ipvsadm" and any(a in _READ_ONLY or (a[:1] == "-" and a[1:2] != "-" and
                                  ("L" in a or "l" in a or "S" in a)) for a in argv)
        and not any(a in ("-Z", "--zero", "-C", "--clear", "-R", "--restore") for a in argv)
    ))
    before = _real(prog, argv) if paired else None
    out, err = io.StringIO(), io.StringIO()
    kw: dict[str, Any] = {"stdout": out, "stderr": err}
    try:
        if prog == "ipvsadm":
            rc = ipvsadm.main(argv, stdin=io.StringIO(stdin), **kw)
        elif prog == "ipvsadm-save":
            rc = ipvsadm.save_main(argv, **kw)
        else:
            rc = ipvsadm.restore_main(argv, stdin=io.StringIO(stdin), **kw)
    except Exception as e:  # a crash is a finding, not a reason to hang the script
        err.write(f"pylvsadm crashed: {type(e).__name__}: {e}\n")
        rc = 99
    if paired:
        PAIRS.append({"prog": prog, "argv": argv, "before": before, "after": _real(prog, argv),
                      "ours": {"stdout": out.getvalue(), "stderr": err.getvalue(), "rc": rc}})
    (d / "stdout").write_text(out.getvalue())
    (d / "stderr").write_text(err.getvalue())
    with open(d / "done", "w") as f:
        f.write(f"{rc}\n")


def run_case(name: str, timeout: float, pair: bool = False) -> dict[str, Any]:
    Path("/etc/hosts").write_text(GOLDEN_HOSTS)
    # The recording VM had no resolv.conf (its name lookups fail fast): the same here.
    Path("/etc/resolv.conf").unlink(missing_ok=True)
    shutil.rmtree("/out", ignore_errors=True)
    Path("/out/rec").mkdir(parents=True)
    back = enter_new_netns()  # the kernel backend opens its sockets here, case by case
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    env = dict(os.environ)
    env["PATH"] = f"{WRAP}:{BB}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    path = Path(name).resolve() if name.endswith(".sh") else GOLDEN / f"{name}.sh"
    script = f". {GOLDEN / 'rec.sh'}; . {path}"
    PAIRS.clear()
    t0 = time.monotonic()
    proc = subprocess.Popen(["/bin/busybox", "sh", "-c", script], env=env, cwd="/",
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    fd = os.open(FIFO, os.O_RDWR | os.O_NONBLOCK)
    buf = b""
    serve_time = 0.0
    calls = 0
    try:
        while True:
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                buf += os.read(fd, 65536)
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    prog, _, d = line.decode().partition(" ")
                    t1 = time.monotonic()
                    serve_one(prog, Path(d), pair)
                    serve_time += time.monotonic() - t1
                    calls += 1
            elif proc.poll() is not None:
                break
            if time.monotonic() - t0 > timeout:
                proc.kill()
                break
    finally:
        os.close(fd)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.wait()
    steps: list[dict[str, Any]] = []
    for d in sorted(Path("/out/rec").iterdir()):
        if (d / "note").exists():
            steps.append({"note": (d / "note").read_text()})
            continue
        steps.append({
            "cmd": (d / "cmd").read_text(),
            "stdout": (d / "stdout").read_text(errors="replace"),
            "stderr": (d / "stderr").read_text(errors="replace"),
            "rc": int((d / "rc").read_text().strip() or -1),
        })
    # Leave nothing behind: the case's own namespaces and their servers.
    for extra in ("client", "rs1", "rs2", "rs3", "rs4"):
        pids = subprocess.run(["ip", "netns", "pids", extra], capture_output=True, text=True)
        for pid in pids.stdout.split():
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", extra], capture_output=True)
    leave_netns(back)
    return {"steps": steps, "pairs": list(PAIRS), "script_rc": proc.returncode,
            "script_stderr": stderr,
            "seconds": time.monotonic() - t0, "serve_seconds": serve_time, "calls": calls}


def main() -> None:
    setup()
    pair = "--pair" in sys.argv
    cases = [a for a in sys.argv[1:] if a != "--pair"]
    out = {}
    for name in cases:
        out[Path(name).stem] = run_case(name, timeout=400, pair=pair)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
