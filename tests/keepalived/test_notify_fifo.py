"""keepalived's notify FIFOs: one line per VRRP and health-check change, for a reader program."""

from __future__ import annotations

import os
import select
import stat
import time
from pathlib import Path

import pytest

from pylvs.core.model import DestSpec, ForwardingMethod, ServiceKey, parse_address
from pylvs.keepalived.notify_fifo import Fifos, NotifyFifo
from tests.keepalived.conftest import Lab, instance_conf, wait_for


def _read_lines(fd: int, want: int, timeout: float) -> list[str]:
    buf = b""
    end = time.monotonic() + timeout
    while buf.count(b"\n") < want and time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            buf += os.read(fd, 4096)
    return buf.decode().splitlines()


def test_fifo_is_created_written_and_its_script_started(tmp_path: Path) -> None:
    fifo = tmp_path / "events"
    seen = tmp_path / "script-args"
    script = tmp_path / "reader.sh"
    script.write_text(f"#!/bin/sh\necho \"$@\" > {seen}\n")
    script.chmod(0o755)
    f = Fifos(common=NotifyFifo(str(fifo), str(script)))
    f.open()
    try:
        assert stat.S_ISFIFO(os.stat(fifo).st_mode)
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        key = ServiceKey.inet(6, "10.0.0.1", 80)
        f.vrrp('INSTANCE "VI_1" MASTER 100')
        f.lvs_event(key, DestSpec(parse_address("10.0.1.1"), 80, ForwardingMethod.DROUTE), False)
        f.lvs_event(key, None, False)
        assert _read_lines(fd, 3, 5) == [
            'INSTANCE "VI_1" MASTER 100',
            "RS [10.0.1.1]:tcp:80 [10.0.0.1]:tcp:80 DOWN",
            "VS [10.0.0.1]:tcp:80 DOWN",
        ]
        os.close(fd)
        assert wait_for(lambda: seen.exists() and seen.read_text().strip() == str(fifo), 5)
    finally:
        f.close()


def test_a_reader_that_stops_reading_never_blocks_the_daemon(tmp_path: Path) -> None:
    f = NotifyFifo(str(tmp_path / "full"))
    f.open()
    try:
        t0 = time.monotonic()
        for i in range(5000):  # far more than a pipe holds, with nobody reading
            f.write(f'INSTANCE "VI_{i}" BACKUP 100')
        assert time.monotonic() - t0 < 30
        assert f.dropped > 0
    finally:
        f.close()


def test_existing_non_fifo_file_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("x")
    with pytest.raises(OSError):
        NotifyFifo(str(plain)).open()


@pytest.mark.root
@pytest.mark.slow
def test_daemon_writes_vrrp_and_checker_lines(lab: Lab) -> None:
    fifo = lab.tmp / "keepalived.fifo"
    vs = """virtual_server 10.77.0.100 8080 {
    delay_loop 0.3
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server 127.0.0.1 9 {
        TCP_CHECK {
            connect_timeout 0.3
            retry 0
        }
    }
}
"""
    conf = instance_conf(prio=150, version=3, advert=0.2).replace(
        "    router_id test\n", f"    router_id test\n    notify_fifo {fifo}\n") + vs
    lab.pylvs("a", conf, "--control-socket", str(lab.tmp / "a.sock"))
    assert wait_for(lambda: fifo.exists(), 10)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        lines = _read_lines(fd, 4, 15)
    finally:
        os.close(fd)
    assert 'INSTANCE "VI_T" MASTER 150' in lines, lines
    assert "RS [127.0.0.1]:tcp:9 [10.77.0.100]:tcp:8080 DOWN" in lines
    assert "VS [10.77.0.100]:tcp:8080 DOWN" in lines
