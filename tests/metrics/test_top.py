"""``pylvs top`` in a real terminal (tmux): it shows the table, follows changes each second,
sorts on keys and quits on q; against a daemon that is not there it says so in one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.metrics.conftest import Director, wait_for

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed (scripts/system-deps.sh test)")


def _tmux(sock: Path, *args: str) -> str:
    r = subprocess.run(["tmux", "-S", str(sock), *args], capture_output=True, text=True,
                       timeout=10)
    return r.stdout


def test_top_in_tmux(table_director: Director, tmp_path: Path) -> None:
    d = table_director
    tsock = tmp_path / "tmux.sock"  # a tmux server of our own, never the user's
    session = f"top-{uuid.uuid4().hex[:8]}"
    cmd = f"{sys.executable} -m pylvs.cli.main top --control-socket {d.sock} 2>&1; sleep 30"
    try:
        _tmux(tsock, "new-session", "-d", "-s", session, "-x", "160", "-y", "30", cmd)

        def screen() -> str:
            return _tmux(tsock, "capture-pane", "-p", "-t", session)

        vs = f"TCP {d.vip}:{d.vport}"
        rs1, rs2 = (f"{a}:{d.rport}" for a in d.real)
        try:
            wait_for(lambda: vs in screen() and rs1 in screen() and rs2 in screen(),
                     what="the table in top")
        except AssertionError:
            raise AssertionError(f"top shows:\n{screen()}") from None
        text = screen()
        assert "pylvs top: pylvsd" in text and "sort: name" in text
        # a weight change shows at the next refresh
        d.pylvsadm("-e", "-t", f"{d.vip}:{d.vport}", "-r", rs2, "-m", "-w", "42")
        wait_for(lambda: any(rs2 in line and " 42 " in line for line in screen().splitlines()),
                 what="the new weight in top")
        # sort by weight: the heavier real server first
        _tmux(tsock, "send-keys", "-t", session, "w")
        wait_for(lambda: "sort: weight" in screen(), what="sort by weight")
        lines = screen().splitlines()
        assert _row(lines, rs2) < _row(lines, rs1)
        _tmux(tsock, "send-keys", "-t", session, "r")
        wait_for(lambda: "sort: weight (reversed)" in screen(), what="reversed sort")
        lines = screen().splitlines()
        assert _row(lines, rs1) < _row(lines, rs2)
        _tmux(tsock, "send-keys", "-t", session, "q")
        wait_for(lambda: "pylvs top: pylvsd" not in screen(), what="top to quit")
    finally:
        _tmux(tsock, "kill-server")
        if tsock.exists():
            tsock.unlink()


def _row(lines: list[str], needle: str) -> int:
    return next(i for i, line in enumerate(lines) if needle in line)


def test_top_without_a_daemon(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pylvs.cli.main", "top", "--once",
                        "--control-socket", str(tmp_path / "none.sock")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.startswith("pylvs top: no pylvs director is running")
    assert r.stderr.count("\n") == 1
    r = subprocess.run([sys.executable, "-m", "pylvs.cli.main", "top", "--interval", "0"],
                       capture_output=True, text=True, timeout=30,
                       env={**os.environ, "PYLVS_CONTROL_SOCKET": str(tmp_path / "x")})
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_top_once_prints_a_frame(table_director: Director) -> None:
    d = table_director
    r = subprocess.run([sys.executable, "-m", "pylvs.cli.main", "top", "--once", "--sort", "w"],
                       capture_output=True, text=True, timeout=30, env=d.env)
    assert r.returncode == 0, r.stderr
    assert f"TCP {d.vip}:{d.vport}" in r.stdout and "unchecked" in r.stdout
    assert time.strftime("%H:") in r.stdout or "sort: weight" in r.stdout
