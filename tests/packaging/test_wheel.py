"""``python -m build`` makes an sdist and a wheel, and the wheel alone, installed into a fresh
virtualenv, gives a working pylvs: every command, the C fast path, the XDP object, the systemd
units and the generated man pages.

Why a test: an operator installs the wheel on a director, not a checkout, and nothing else would
notice a data file missing from the package data, an extension built only in place, or a console
script pointing at a moved function. The sources are copied first (what git tracks, plus new
files not ignored) so that objects built in place in the checkout cannot leak into the sdist, and
the build runs without isolation (the dev extra brings setuptools, wheel and build) to stay
within a test's time; pip's cache serves the dependencies.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run(argv: list[str], cwd: Path, env: dict[str, str], stdin: str = "",
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def copy_sources(dest: Path) -> None:
    """The project as a fresh clone (with uncommitted work) would have it."""
    if (REPO / ".git").exists():
        listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], capture_output=True, check=True).stdout
        for rel in filter(None, listed.decode().split("\0")):
            src = REPO / rel
            if src.is_file():  # a tracked file deleted in the work tree is not copied
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
    else:
        shutil.copytree(REPO, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".venv", "build", "dist", "__pycache__", "*.egg-info", "*.so", "*.bpf.o"))


def can_build_xdp() -> bool:
    return (shutil.which("clang") is not None and Path("/sys/kernel/btf/vmlinux").exists()
            and (shutil.which("bpftool") is not None or Path("/usr/sbin/bpftool").exists()))


def test_wheel_installs_every_command_with_its_data(tmp_path: Path) -> None:
    try:
        import build  # noqa: F401
    except ImportError:
        pytest.fail("the dev extra's 'build' is not installed: run 'make venv' (pip install -e '.[dev]')")
    src, dist, venv = tmp_path / "src", tmp_path / "dist", tmp_path / "venv"
    copy_sources(src)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYLVS_CONTROL_SOCKET")}
    started = time.monotonic()
    built = run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)],
                tmp_path, env, timeout=240)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (sdist,) = dist.glob("pylvs-*.tar.gz")
    (wheel,) = dist.glob("pylvs-*.whl")

    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in ("setup.py", "pyproject.toml", "README.md", "src/pylvs/dataplane/packet/_fastpath.c",
                   "src/pylvs/dataplane/xdp/xdp_lb.bpf.c",
                   "src/pylvs/dataplane/proxy/relay_verdict.bpf.c",
                   "src/pylvs/service/units/pylvsd.service",
                   "src/pylvs/service/units/pylvs-keepalived.service",
                   "src/pylvs/service/units/pylvs-http.service"):
        assert needed in names, f"{needed} missing from the sdist"
    assert not any(n.endswith((".so", ".bpf.o")) for n in names), "built objects leaked into the sdist"

    with zipfile.ZipFile(wheel) as whl:
        files = set(whl.namelist())
    assert {"pylvs/service/units/pylvsd.service", "pylvs/service/units/pylvs-keepalived.service",
            "pylvs/service/units/pylvs-http.service", "pylvs/dataplane/xdp/xdp_lb.bpf.c",
            "pylvs/dataplane/proxy/relay_verdict.bpf.c"} <= files
    if shutil.which("cc") or shutil.which("gcc"):
        assert any(f.startswith("pylvs/dataplane/packet/_fastpath.") and f.endswith(".so") for f in files)
    if can_build_xdp():  # the same toolchain builds both BPF objects
        assert "pylvs/dataplane/xdp/xdp_lb.bpf.o" in files
        assert "pylvs/dataplane/proxy/relay_verdict.bpf.o" in files

    # a fresh virtualenv with nothing but the wheel and its dependencies
    made = run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    assert made.returncode == 0, made.stderr
    installed = run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install",
                     "-q", str(wheel)], tmp_path, env, timeout=240)
    assert installed.returncode == 0, installed.stderr[-3000:]
    bindir = venv / "bin"
    site = run([str(bindir / "python"), "-c",
                "import pylvs, pylvs.dataplane.packet._fastpath as f, importlib.resources as r;"
                "print(pylvs.__file__); print(f.__file__);"
                "print((r.files('pylvs.dataplane.xdp') / 'xdp_lb.bpf.o').is_file())"], tmp_path, env)
    if shutil.which("cc") or shutil.which("gcc"):
        assert site.returncode == 0, site.stderr
        pkg, fast, xdp_obj = site.stdout.split()
        assert pkg.startswith(str(venv)) and fast.startswith(str(venv))  # not the checkout's
        assert xdp_obj == str(can_build_xdp())

    version = run([str(bindir / "pylvs"), "--version"], tmp_path, env)
    assert version.returncode == 0 and version.stdout.startswith("pylvs "), version
    adm = run([str(bindir / "pylvsadm"), "--version"], tmp_path, env)
    assert adm.returncode == 0 and adm.stdout.startswith("ipvsadm v1.31"), adm
    for cmd in ("pylvs", "pylvsadm", "pylvsd"):
        helped = run([str(bindir / cmd), "-h"], tmp_path, env)
        assert helped.returncode == 0 and "usage" in (helped.stdout + helped.stderr).lower(), (cmd, helped)
    saved_help = run([str(bindir / "pylvsadm-save"), "-h"], tmp_path, env)  # exits 1, as ipvsadm-save
    assert "Script to save the IPVS table to stdout" in saved_help.stdout + saved_help.stderr

    units = run([str(bindir / "pylvs"), "install-units", "--dry-run"], tmp_path, env)
    assert units.returncode == 0, units.stderr
    for unit in ("pylvsd.service", "pylvs-keepalived.service", "pylvs-http.service"):
        assert f"/etc/systemd/system/{unit}" in units.stdout
    assert f"{bindir}/pylvsd" in units.stdout  # ExecStart points at the installed command
    man = run([str(bindir / "pylvs"), "man", "pylvsd"], tmp_path, env)
    assert man.returncode == 0 and man.stdout.startswith(".TH PYLVSD"), man

    # the installed daemon and the save/restore pair work together
    sock = tmp_path / "ctl.sock"
    net_env = {**env, "PYLVS_CONTROL_SOCKET": str(sock)}
    daemon = subprocess.Popen([str(bindir / "pylvsd"), "--dataplane", "proxy", "--control-socket",
                               str(sock), "--no-state-file"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 30
        while not sock.exists() and daemon.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        assert sock.exists(), daemon.stderr.read().decode() if daemon.poll() is not None else "no socket"
        vip = "127.77.0.1"
        rules = f"-A -t {vip}:18080 -s wlc\n-a -t {vip}:18080 -r 127.77.0.10:18080 -m -w 3\n"
        restored = run([str(bindir / "pylvsadm-restore")], tmp_path, net_env, stdin=rules)
        assert restored.returncode == 0, restored.stderr
        saved = run([str(bindir / "pylvsadm-save"), "-n"], tmp_path, net_env)
        assert saved.returncode == 0 and saved.stdout == rules, saved
        listed = run([str(bindir / "pylvsadm"), "-Ln"], tmp_path, net_env)
        assert f"TCP  {vip}:18080 wlc" in listed.stdout, listed
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        if daemon.stderr is not None:
            daemon.stderr.close()
    assert time.monotonic() - started < 120  # build + install + checks; ~20 s here
