"""The shipped systemd units: installed with the real command, verified by systemd-analyze."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pylvs.service import units

PYLVS = [sys.executable, "-m", "pylvs.cli.main"]


def test_install_units_writes_every_unit_with_absolute_commands(tmp_path: Path) -> None:
    out = subprocess.run([*PYLVS, "install-units", "--dir", str(tmp_path), "--bindir", "/opt/pylvs/bin"],
                         capture_output=True, text=True, check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(units.UNITS)
    assert "installed" in out.stdout
    ka = (tmp_path / "pylvs-keepalived.service").read_text()
    assert "Type=notify" in ka and "ExecReload=/bin/kill -HUP $MAINPID" in ka
    assert "EnvironmentFile=-/etc/default/pylvs-keepalived" in ka
    assert "ExecStart=/opt/pylvs/bin/pylvs keepalived" in ka
    d = (tmp_path / "pylvsd.service").read_text()
    assert "/etc/ipvsadm.rules" in d and "@" not in d.replace("$MAINPID", "")


def test_bad_directory_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    out = subprocess.run([*PYLVS, "install-units", "--dir", str(missing)], capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and "not a directory" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    unitdir, mandir = tmp_path / "units", tmp_path / "man"
    unitdir.mkdir()
    bindir = Path(sys.executable).parent
    if not (bindir / "pylvs").exists():
        pytest.skip("the pylvs command is not installed beside this interpreter")
    subprocess.run([*PYLVS, "install-units", "--dir", str(unitdir)], check=True, capture_output=True)
    subprocess.run([*PYLVS, "install-docs", "--mandir", str(mandir), "--completion-dir",
                    str(tmp_path / "bc")], check=True, capture_output=True)
    env = {**os.environ, "MANPATH": str(mandir)}
    for name in units.UNITS:
        out = subprocess.run(["systemd-analyze", "verify", str(unitdir / name)],
                             capture_output=True, text=True, env=env)
        assert out.returncode == 0, f"{name}: {out.stderr}"
