"""Man pages and bash completion come from the parsers: every option is in them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pylvs.cli import docs

PYLVS = [sys.executable, "-m", "pylvs.cli.main"]


@pytest.mark.parametrize("page", docs.PAGES)
def test_every_option_is_in_its_page(page: str) -> None:
    text = subprocess.run([*PYLVS, "man", page], capture_output=True, text=True, check=True).stdout
    assert text.startswith(".TH ")
    options = (docs.pylvsadm_options() if page == "pylvsadm"
               else docs.options_of(docs.ARGPARSE_PAGES[page]()))
    assert options
    for opt in set(options) - {"-h", "--help"}:  # argparse-manpage leaves out -h
        assert opt.replace("-", "\\-") in text, f"{page}: {opt} missing"


def test_completion_offers_subcommands_and_options(tmp_path: Path) -> None:
    subprocess.run([*PYLVS, "install-docs", "--mandir", str(tmp_path / "man"),
                    "--completion-dir", str(tmp_path / "bc")], check=True, capture_output=True)
    script = tmp_path / "bc" / "pylvs"
    out = subprocess.run(["bash", "-c", f"""
        source {script}
        COMP_WORDS=(pylvs keep); COMP_CWORD=1; _pylvs; echo "${{COMPREPLY[@]}}"
        COMP_WORDS=(pylvsadm --start); COMP_CWORD=1; _pylvsadm; echo "${{COMPREPLY[@]}}"
        COMP_WORDS=(pylvsd --dat); COMP_CWORD=1; _pylvsd; echo "${{COMPREPLY[@]}}"
    """], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["keepalived", "--start-daemon", "--dataplane"]


def test_version() -> None:
    out = subprocess.run([*PYLVS, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("pylvs ")
