"""track_file as keepalived reads it: strtol numbers, missing files, weights, reverse, FAULT."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from pylvs.config import keepalived as K
from pylvs.trackers.trackfile import FAULT, TrackFileWatcher, parse_value, read_value, status


def test_values_are_read_as_strtol_base_0_reads_them() -> None:
    assert parse_value(b"1\n") == 1
    assert parse_value(b"  -7 apples") == -7
    assert parse_value(b"0x1f") == 31
    assert parse_value(b"010") == 8
    assert parse_value(b"08") == 0  # octal stops at 8
    assert parse_value(b"down") == 0
    assert parse_value(b"2147483648") == 2147483648  # keepalived lets INT32_MAX + 1 through
    assert parse_value(b"99999999999") is None  # out of range: ignored, the last value stays


@given(st.binary(max_size=200))
def test_any_file_content_gives_a_number_or_is_ignored(data: bytes) -> None:
    v = parse_value(data)
    assert v is None or -(1 << 31) <= v <= 1 << 31


def test_weight_zero_faults_on_non_zero_and_reverse_flips_it() -> None:
    assert status(0, 0, False) == 0
    assert status(3, 0, False) is FAULT
    assert status(0, 0, True) is FAULT
    assert status(3, 0, True) == 0


def test_weighted_values_move_priority_within_keepalived_limits() -> None:
    assert status(2, 10, False) == 20
    assert status(2, 10, True) == -20
    assert status(100, 10, False) == 253
    assert status(-30, 10, False) is FAULT  # below -253


def test_missing_file_counts_as_zero_and_init_file_creates_it(tmp_path: Path) -> None:
    assert read_value(str(tmp_path / "absent")) == 0
    path = tmp_path / "maint"
    spec = K.TrackFile("maint", str(path), weight=0, init_value=5)
    w = TrackFileWatcher.start((spec,), {"maint"})
    assert path.read_text() == "5\n"
    assert w.status(K.TrackFileRef("maint")) is FAULT
    path.write_text("0\n")
    assert w.poll() == ["maint"]
    assert w.status(K.TrackFileRef("maint")) == 0
    assert w.status(K.TrackFileRef("maint", weight=-5)) == 0
    path.write_text("99999999999\n")  # ignored
    assert w.poll() == [] and w.values() == {"maint": 0}
    path.unlink()
    assert w.poll() == [] and w.values() == {"maint": 0}
    assert w.status(K.TrackFileRef("unknown")) == 0


def test_init_file_keeps_an_existing_file_unless_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("7\n")
    TrackFileWatcher.start((K.TrackFile("f", str(path), init_value=0),), {"f"})
    assert path.read_text() == "7\n"
    TrackFileWatcher.start((K.TrackFile("f", str(path), init_value=0, init_overwrite=True),), {"f"})
    assert path.read_text() == "0\n"


def test_config_reads_track_file_blocks_and_references() -> None:
    text = """
track_file maint {
    file /run/maint
    weight -10 reverse
    init_file 0 overwrite
}
vrrp_track_file old {
    file /run/old
}
vrrp_sync_group G {
    group {
        VI_1
    }
    track_file {
        old weight 0
    }
}
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    virtual_ipaddress {
        10.1.1.1/24
    }
    track_file {
        maint
        old weight 5 reverse
        nosuch
    }
}
"""
    cfg = K.parse_text(text, "t.conf")
    maint, old = cfg.track_files
    assert (maint.path, maint.weight, maint.reverse, maint.init_value, maint.init_overwrite) == (
        "/run/maint", -10, True, 0, True)
    assert (old.name, old.weight) == ("old", 1)
    assert cfg.vrrp_instances[0].track_file == (
        K.TrackFileRef("maint"), K.TrackFileRef("old", 5, True), K.TrackFileRef("nosuch"))
    assert cfg.vrrp_sync_groups[0].track_file == (K.TrackFileRef("old", 0),)
    assert [d.message for d in cfg.diagnostics] == ["(VI_1) track_file nosuch not found, ignoring"]

