"""The state file's pieces: a reload applies only differences (live objects stay), the rules
written rebuild the whole table, and an atomic write leaves the old file or the new one."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pylvs.core.model import Timeouts
from pylvs.core.table import IPVSTable
from pylvs.director.state import copy_table, sync_table, write_atomically
from pylvs.ipvsadm.names import Resolver
from pylvs.ipvsadm.rules import apply_commands, parse_restore, table_rules
from pylvs.ipvsadm.runner import run


def build(*lines: str) -> IPVSTable:
    table = IPVSTable()
    for line in lines:
        err = io.StringIO()
        rc = run(line.split(), lambda: table, io.StringIO(), err, io.StringIO,
                 Resolver.from_environment())
        assert rc == 0, (line, err.getvalue())
    return table


def test_sync_changes_only_what_differs_and_keeps_the_live_objects() -> None:
    live = build(
        "-A -t 10.1.0.1:80 -s rr", "-a -t 10.1.0.1:80 -r 10.1.1.1:80 -m",
        "-a -t 10.1.0.1:80 -r 10.1.1.2:80 -m",
        "-A -t 10.1.0.2:80 -s rr", "-a -t 10.1.0.2:80 -r 10.1.1.3:80 -m",
        "-A -t 10.1.0.3:80 -s rr",
    )
    kept = next(s for s in live.services() if str(s.key.addr) == "10.1.0.1")
    kept_dest = kept.destinations[0]
    desired = build(
        "-A -t 10.1.0.1:80 -s rr", "-a -t 10.1.0.1:80 -r 10.1.1.1:80 -m",
        "-a -t 10.1.0.1:80 -r 10.1.1.2:80 -m",
        "-A -t 10.1.0.2:80 -s wrr", "-a -t 10.1.0.2:80 -r 10.1.1.3:80 -m -w 4",
        "-A -t 10.1.0.4:80 -s lc", "--set 100 0 0",
    )
    # del 10.1.0.3, edit 10.1.0.2 (scheduler) and its real server (weight), add 10.1.0.4, timeouts
    assert sync_table(live, desired) == 5
    assert table_rules(live) == table_rules(desired)
    same = live.lookup(kept.key)
    assert same is kept and same.destinations[0] is kept_dest
    assert sync_table(live, desired) == 0


def test_table_rules_rebuild_thresholds_and_timeouts_that_save_leaves_out() -> None:
    table = build(
        "-A -t 10.2.0.1:80 -s rr", "-a -t 10.2.0.1:80 -r 10.2.1.1:8080 -m -x 100 -y 40",
        "-A -f 9 -6 -s wlc -p 30 -M 64", "-a -f 9 -6 -r [2001:db8::9]:80 -m -x 7",
        "--set 700 0 30",
    )
    text = table_rules(table)
    assert text.startswith("--set 700 120 30\n")
    assert "-a -t 10.2.0.1:80 -r 10.2.1.1:8080 -m -w 1 -x 100 -y 40\n" in text
    again = IPVSTable()
    apply_commands(again, parse_restore(text, "state"), "state")
    assert table_rules(again) == text
    assert again.get_timeouts() == Timeouts(700, 120, 30)
    assert table_rules(copy_table(table)) == text
    assert table_rules(IPVSTable()) == ""


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "rules"
    write_atomically(str(path), "-A -t 10.3.0.1:80 -s rr\n")
    assert path.read_text() == "-A -t 10.3.0.1:80 -s rr\n"

    # Fails while writing (text that is not encodable), and at the rename (onto a directory).
    with pytest.raises(UnicodeEncodeError):
        write_atomically(str(path), "-A -t 10.3.0.2:80 -s rr \udc80\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "keep").write_text("")
    with pytest.raises(OSError):
        write_atomically(str(tmp_path / "dir"), "x")
    with pytest.raises(OSError):
        write_atomically(str(tmp_path / "missing-dir" / "rules"), "x")
    assert path.read_text() == "-A -t 10.3.0.1:80 -s rr\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "rules"]
