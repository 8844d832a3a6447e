"""pylvsadm as a separate process against a running director daemon over its control socket."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parents[2] / ".." / "shared" / "golden" / "ipvsadm"
PY = sys.executable


def _pylvsadm(sock: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "pylvs.cli.ipvsadm", "--control-socket", str(sock), *args],
        input=stdin, capture_output=True, text=True, timeout=60,
    )


@pytest.fixture
def director(tmp_path: Path) -> Iterator[Path]:
    # A short directory of its own: AF_UNIX paths are limited to 107 bytes.
    sockdir = Path(tempfile.mkdtemp(prefix=f"plv{os.getpid()}-", dir="/tmp"))
    sock = sockdir / "d.sock"
    log = open(tmp_path / "daemon.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [PY, "-m", "pylvs.director.main", "--control-socket", str(sock), "--dataplane", "none"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("director daemon did not start: " + (tmp_path / "daemon.log").read_text())
            time.sleep(0.05)
        yield sock
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(sockdir, ignore_errors=True)


@pytest.mark.skipif(not GOLDEN.is_dir(), reason="golden recordings absent")
def test_seed_commands_through_the_daemon_print_ipvsadms_bytes(director: Path) -> None:
    steps = json.loads((GOLDEN / "a_seed.json").read_text())["steps"]
    for step in steps:
        if "cmd" not in step:
            continue
        words = shlex.split(step["cmd"])
        if words[0] == "ipvsadm-save":
            words = ["ipvsadm", "-S", *(["-n"] if "-n" in words else [])]
        got = _pylvsadm(director, *words[1:])
        assert (got.stdout, got.stderr, got.returncode) == (
            step["stdout"], step["stderr"], step["rc"]
        ), step["cmd"]


def test_save_and_restore_through_the_daemon_rebuild_the_table(director: Path) -> None:
    rules = (
        "-A -t 192.168.168.100:80 -s wrr\n"
        "-a -t 192.168.168.100:80 -r 192.168.168.10:80 -g -w 4\n"
        "-a -t 192.168.168.100:80 -r 192.168.168.20:8080 -m -w 3\n"
        "-A -f 7 -s rr -p 120 -M 255.255.0.0\n"
        "-a -f 7 -r 192.168.168.30:0 -g -w 0\n"
    )
    assert _pylvsadm(director, "-R", stdin=rules).returncode == 0
    saved = _pylvsadm(director, "-Sn").stdout
    assert _pylvsadm(director, "-C").returncode == 0
    assert _pylvsadm(director, "-Sn").stdout == ""
    assert _pylvsadm(director, "-R", stdin=saved).returncode == 0
    assert _pylvsadm(director, "-Sn").stdout == saved
    assert saved == rules


def test_no_director_fails_at_once_with_a_clear_message(tmp_path: Path) -> None:
    got = _pylvsadm(tmp_path / "nobody-listens.sock", "-Ln")  # subprocess timeout: never hangs
    assert got.returncode != 0
    assert got.stdout == ""
    assert "no pylvs director is running" in got.stderr
    assert str(tmp_path / "nobody-listens.sock") in got.stderr


def test_help_and_version_need_no_director(tmp_path: Path) -> None:
    got = _pylvsadm(tmp_path / "nobody-listens.sock", "-v")
    assert (got.stdout, got.returncode) == (
        "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)\n", 0
    )


def _script(entry: str, sock: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    code = f"import sys; from pylvs.cli.ipvsadm import {entry}; sys.exit({entry}())"
    return subprocess.run(
        [PY, "-c", code, "--control-socket", str(sock), *args],
        input=stdin, capture_output=True, text=True, timeout=60,
    )


def test_save_and_restore_scripts_reach_the_daemon_named_on_their_command_line(director: Path) -> None:
    assert _pylvsadm(director, "-A", "-t", "10.3.3.3:80", "-s", "rr").returncode == 0
    rules = "# kept by hand\n-A -u 10.4.4.4:53 -s wrr\n-a -u 10.4.4.4:53 -r 10.5.5.5 -m -w 2\n"
    got = _script("restore_main", director, stdin=rules)
    assert (got.stdout, got.stderr, got.returncode) == ("", "", 0)
    saved = _script("save_main", director, "-n")
    assert (saved.stdout, saved.returncode) == (
        "-A -u 10.4.4.4:53 -s wrr\n-a -u 10.4.4.4:53 -r 10.5.5.5:53 -m -w 2\n", 0
    )
