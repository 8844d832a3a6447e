"""``pylvs keepalived``: a bad file is one clear error line with file:line and nothing starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from pylvs.cli.main import main


def test_malformed_config_exits_nonzero_naming_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("vrrp_instance V {\n  interface lo\n  virtual_router_id 300\n}\n")
    assert main(["keepalived", "-t", "-f", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3: error:" in err and "300" in err


def test_config_test_accepts_good_file_with_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.conf"
    good.write_text("vrrp_instance V {\n  interface lo\n  virtual_router_id 3\n  frobnicate\n"
                    "  virtual_ipaddress {\n    10.1.1.1/24\n  }\n}\n")
    assert main(["keepalived", "-t", "-f", str(good)]) == 0
    assert f"{good}:4: warning: Unknown keyword 'frobnicate'" in capsys.readouterr().err


def test_daemon_refuses_to_start_on_malformed_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("vrrp_instance V {\n  interface lo\n  virtual_router_id 3\n")
    state = tmp_path / "state.json"
    assert main(["keepalived", "-f", str(bad), "--state-file", str(state)]) == 1
    assert not state.exists()


def test_module_entry_point_is_the_same_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pylvs.keepalived.__main__ import main as vrrp_main

    bad = tmp_path / "bad.conf"
    bad.write_text("vrrp_instance V {\n  interface lo\n  priority 0\n}\n")
    assert vrrp_main(["-t", "-f", str(bad)]) == 1
    assert f"{bad}:3: error:" in capsys.readouterr().err
