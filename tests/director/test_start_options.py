"""pylvsd's start: ``--sysctl`` sets the core's flood defences and sync settings (read back with
``pylvs sysctl`` from the running daemon, the kernel's vector ``sync_threshold`` as sysctl prints
it), a bad one is one line and exit 2; a data plane that cannot start on
this host (not root: no raw sockets, no BPF) is pylvsd's one-line error and exit 1."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pylvs.control.client import ControlClient
from tests.director.conftest import Daemon
from tests.nobody import need_nobody

PY = sys.executable


def pylvsd(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "pylvs.director.main", *args], capture_output=True,
                          text=True, timeout=60, **kw)  # type: ignore[call-overload]


def test_sysctl_at_start_is_what_the_running_daemon_reports(tmp_path: Path) -> None:
    sock = str(tmp_path / "c.sock")
    proc = subprocess.Popen(
        [PY, "-m", "pylvs.director.main", "--control-socket", sock, "--dataplane", "none",
         "--no-state-file", "--sysctl", "drop_entry=3", "--sysctl", "net.ipv4.vs.secure_tcp=0",
         "--sysctl", "amemthresh=500", "--sysctl", "max_connections=2000",
         "--sysctl", "drop_packet=3", "--sysctl", "am_droprate=7"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            got = subprocess.run([PY, "-m", "pylvs.cli.main", "sysctl", "-a", "--control-socket", sock],
                                 capture_output=True, text=True, timeout=30)
            if got.returncode == 0:
                break
            assert proc.poll() is None and time.monotonic() < deadline, got.stderr
            time.sleep(0.1)
        shown = dict(line.split(" = ") for line in got.stdout.splitlines())
        assert {k: shown[k] for k in (
            "net.ipv4.vs.am_droprate", "net.ipv4.vs.amemthresh", "net.ipv4.vs.drop_entry",
            "net.ipv4.vs.drop_packet", "max_connections", "net.ipv4.vs.secure_tcp")} == {
            "net.ipv4.vs.am_droprate": "7", "net.ipv4.vs.amemthresh": "500",
            "net.ipv4.vs.drop_entry": "3", "net.ipv4.vs.drop_packet": "3",
            "max_connections": "2000", "net.ipv4.vs.secure_tcp": "0",
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("word, want", [
    ("drop_entry=4", "--sysctl: drop_entry: must be 0, 1, 2 or 3"),
    ("secure_tcp=on", "--sysctl secure_tcp=on: secure_tcp: an integer is required"),
    ("max_connections=0", "--sysctl: max_connections: must be 1 or more"),
    ("amemthresh=-1", "--sysctl: amemthresh: must be 0 or more"),
    ("expire_nodest_cn=1", "--sysctl: unknown setting 'expire_nodest_cn' (known: "),
    ("drop_entry", "--sysctl drop_entry: expected NAME=VALUE"),
    ("sync_threshold=50 50", '--sysctl: sync_threshold "50 50": needs 0 <= threshold < period'),
    ("sync_threshold=3 x", "--sysctl sync_threshold=3 x: sync_threshold: an integer is required"),
    ("sync_threshold=1 2 3", "--sysctl: sync_threshold: one or two integers are required"),
])
def test_a_bad_sysctl_is_one_line_and_exit_2(tmp_path: Path, word: str, want: str) -> None:
    sock = tmp_path / "c.sock"
    state = tmp_path / "state.rules"
    out = pylvsd("--control-socket", str(sock), "--dataplane", "none", "--state-file", str(state),
                 "--sysctl", "drop_entry=1", "--sysctl", word)
    assert out.returncode == 2
    assert out.stderr.startswith(f"pylvsd: {want}") and out.stderr.count("\n") == 1, out.stderr
    assert not sock.exists() and not state.exists()  # nothing started, nothing written


def test_sync_threshold_is_one_setting_of_two_integers_as_in_the_kernel(
    tmp_path: Path, daemons: list[Daemon],
) -> None:
    """sysctl(8) prints the kernel's net.ipv4.vs.sync_threshold file ("3<TAB>50") and writes it
    whole ("3 50") or its first integer alone; pylvsd --sysctl and pylvs sysctl -w take the same
    words; a bad pair is one line, exit 1, nothing changed; a client that still sends the old
    ``sync_period`` is served."""
    sock = str(tmp_path / "c.sock")
    d = Daemon([PY, "-m", "pylvs.director.main", "--control-socket", sock, "--dataplane", "none",
                "--no-state-file", "--sysctl", "net.ipv4.vs.sync_threshold=7 70",
                "--sysctl", "drop_entry=3"])
    daemons.append(d)

    def sysctl(*words: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PY, "-m", "pylvs.cli.main", "sysctl", "--control-socket", sock,
                               *words], capture_output=True, text=True, timeout=30)

    d.wait_started(lambda: sysctl("drop_entry").returncode == 0, "the control socket")
    assert sysctl("net.ipv4.vs.sync_threshold").stdout == "net.ipv4.vs.sync_threshold = 7\t70\n"
    every = sysctl("-a").stdout
    assert "net.ipv4.vs.sync_threshold = 7\t70\n" in every and "sync_period" not in every
    r = sysctl("-w", "net.ipv4.vs.sync_threshold=0 0", "sync_refresh_period=1")
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == "net.ipv4.vs.sync_threshold = 0\t0\nnet.ipv4.vs.sync_refresh_period = 1\n"
    assert sysctl("-w", "sync_threshold=5\t9").stdout == "net.ipv4.vs.sync_threshold = 5\t9\n"
    # one integer: the threshold, the period kept (4 < 9)
    assert sysctl("-w", "sync_threshold=4").stdout == "net.ipv4.vs.sync_threshold = 4\t9\n"
    for bad, words in [("sync_threshold=9", 'sync_threshold "9 9": needs 0 <= threshold < period'),
                       ("sync_threshold=50 3", 'sync_threshold "50 3"'),
                       ("sync_threshold=3 fifty", "sync_threshold: an integer is required"),
                       ("sync_threshold=", "sync_threshold: an integer is required"),
                       ("sync_threshold=1 2 3", "one or two integers are required")]:
        r = sysctl("-w", "drop_entry=0", bad)  # a good one first: not set either
        assert r.returncode == 1 and r.stdout == "", (bad, r.stdout)
        assert r.stderr.startswith("pylvs sysctl: ") and r.stderr.count("\n") == 1, r.stderr
        assert words in r.stderr, (bad, r.stderr)
    assert sysctl("sync_threshold", "drop_entry").stdout == (
        "net.ipv4.vs.sync_threshold = 4\t9\nnet.ipv4.vs.drop_entry = 3\n")
    with ControlClient(sock) as c:  # the control socket: a list; an old client's sync_period
        assert c.get_sysctl()["sync_threshold"] == [4, 9]
        c.set_sysctl({"sync_threshold": 0, "sync_period": 0})
        assert c.get_sysctl()["sync_threshold"] == [0, 0]
        c.set_sysctl({"sync_threshold": [3, 50]})
    assert sysctl("sync_threshold").stdout == "net.ipv4.vs.sync_threshold = 3\t50\n"
    assert d.stop() == 0


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory nobody may use (pytest's own tmp_path is under a root-only directory)."""
    path = Path(tempfile.mkdtemp(prefix="pylvsd-nobody-"))
    try:
        path.chmod(0o777)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _as_nobody(where: Path, plane: str, sock: Path | None = None) -> subprocess.CompletedProcess[str]:
    need_nobody()
    return subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", PY, "-m",
         "pylvs.director.main", "--control-socket", str(sock or where / "c.sock"), "--dataplane", plane,
         "--no-state-file", "--log-level", "error"],
        capture_output=True, text=True, timeout=60, cwd="/",
    )


def test_the_packet_plane_without_root_is_one_line_and_exit_1(open_dir: Path) -> None:
    out = _as_nobody(open_dir, "packet")
    assert out.returncode == 1
    assert out.stderr == ("pylvsd: data plane packet cannot start: Operation not permitted "
                          "(needs root, or CAP_NET_RAW and CAP_NET_ADMIN)\n")
    assert not (open_dir / "c.sock").exists()  # the control socket is closed again


def test_the_xdp_plane_without_root_is_one_line_and_exit_1(open_dir: Path) -> None:
    out = _as_nobody(open_dir, "xdp")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    # libbpf's own messages (written by the C library) may come first; pylvsd's is the last line
    assert out.stderr.splitlines()[-1] == (
        "pylvsd: data plane xdp cannot start: not allowed to load BPF programs "
        "(needs root or CAP_BPF+CAP_NET_ADMIN)")
    assert not (open_dir / "c.sock").exists()


def test_a_control_socket_it_may_not_create_is_one_line_and_exit_1(
    tmp_path: Path, open_dir: Path
) -> None:
    out = _as_nobody(open_dir, "none", sock=tmp_path / "c.sock")  # tmp_path: root's only
    assert out.returncode == 1
    assert out.stderr == (f"pylvsd: {tmp_path / 'c.sock'}: cannot open the control socket: "
                          "Permission denied\n")


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(tmp_path: Path, flag: str) -> None:
    from pylvs import __version__

    out = pylvsd(flag, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"pylvsd (pylvs) {__version__}\n" and out.stderr == ""
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written
