"""The status page in a real browser (headless Chromium): it loads, shows the service with both
real servers, and shows a real server's new weight and drained state after the table changes;
a screenshot is taken (in the test's tmp dir)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.metrics.conftest import Director

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="chromium is not installed (scripts/system-deps.sh test)")


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]
    # a process group of its own: chromium's helpers go with it whatever happens
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _rows(dom: str) -> dict[str, tuple[str, str]]:
    """real server -> (state, weight) as the browser's DOM has them."""
    rows = {}
    for m in re.finditer(r'<tr class="rs" data-server="([^"]+)" data-state="([^"]+)"[^>]*>'
                         r'.*?<td class="weight">(\d+)</td>', dom, re.S):
        rows[m.group(1)] = (m.group(2), m.group(3))
    return rows


def test_status_page_in_chromium(table_director: Director, tmp_path: Path) -> None:
    d = table_director
    url = f"http://127.0.0.1:{d.status_port}/status"
    rs1, rs2 = (f"{a}:{d.rport}" for a in d.real)
    r = _chromium(tmp_path / "profile", "--dump-dom", url)
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    assert f"TCP {d.vip}:{d.vport}" in dom
    assert _rows(dom) == {rs1: ("unchecked", "1"), rs2: ("unchecked", "1")}
    # the operator drains one real server and re-weights the other: the page follows
    d.pylvsadm("-e", "-t", f"{d.vip}:{d.vport}", "-r", rs1, "-m", "-w", "0")
    d.pylvsadm("-e", "-t", f"{d.vip}:{d.vport}", "-r", rs2, "-m", "-w", "5")
    shot = tmp_path / "status.png"
    r = _chromium(tmp_path / "profile", "--window-size=1280,800", f"--screenshot={shot}", url)
    assert r.returncode == 0, r.stderr[-2000:]
    assert shot.stat().st_size > 5000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = _chromium(tmp_path / "profile", "--dump-dom", url).stdout
    assert _rows(dom) == {rs1: ("drained", "0"), rs2: ("unchecked", "5")}
    # the page refreshes itself, with no script and no external asset
    assert '<meta http-equiv="refresh" content="2">' in dom
    assert "<script" not in dom and "src=" not in dom
