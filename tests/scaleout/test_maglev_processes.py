"""Every director builds the same Maglev table from the same configuration, across processes.

Why it matters: behind ECMP a flow may reach any director, and a director that never saw it
(sloppy_tcp) schedules it afresh; the flow survives only if that director picks the real server
the first one did. With ``mh`` that holds when every director's table is identical. Here two (and
three) separate Python processes, each with its own PYTHONHASHSEED (so no dict or set order can
leak into the table), read the same keepalived.conf, build the table and schedule the same
10,000 random flows; their tables and every pick must agree. A third process with the servers
in another order builds a different table: the order in the file is part of the configuration
(as in the kernel, which populates in list order), and the test says so by failing otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

# Run in the child: load the file, fill a table, dump the table and 10,000 picks.
CHILD = textwrap.dedent('''
    import hashlib, ipaddress, json, random, sys
    import pylvs.health.checkers  # the checker registry the parser reads
    from pylvs.config.keepalived import load_full
    from pylvs.core.schedulers.mh import build_table
    from pylvs.core.director import Director
    from pylvs.core.table import IPVSTable

    path, seed = sys.argv[1], int(sys.argv[2])
    _, lvs = load_full(path)
    table = IPVSTable()
    for vs in lvs.virtual_servers:
        for spec in vs.services:
            table.add_service(spec)
            for rs in vs.real_servers:
                table.add_dest(spec.key, rs.dest)
    d = Director(table)
    d.table.set_sysctl({"sloppy_tcp": 1})
    (spec,) = lvs.virtual_servers[0].services
    svc = table.lookup(spec.key)
    dests = list(svc.destinations)
    built = build_table(dests, [x.weight for x in dests])
    slots = [f"{s.addr}:{s.port}" if s is not None else "-" for s in built]
    vip = spec.key.addr.packed
    rng = random.Random(seed)
    picks = []
    for i in range(10000):
        caddr = rng.getrandbits(32).to_bytes(4, "big")
        cport = rng.randrange(1024, 65536)
        conn = d.schedule_sloppy(6, caddr, cport, vip, spec.key.port, 0x10)
        picks.append(str(conn.dest.addr) if conn is not None else "-")
    print(json.dumps({
        "table": hashlib.sha256("\\n".join(slots).encode()).hexdigest(),
        "slots": len(slots),
        "picks": hashlib.sha256("\\n".join(picks).encode()).hexdigest(),
        "servers": sorted(set(picks)),
        "first": picks[:20],
    }))
''')

SERVERS = ["10.1.0.11", "10.1.0.12", "10.1.0.13", "10.1.0.14", "10.1.0.15"]


def _conf(servers: list[str]) -> str:
    rs = "".join(f"    real_server {a} 80 {{\n        weight {1 + i % 3}\n    }}\n"
                 for i, a in enumerate(servers))
    return ("virtual_server 192.0.2.10 80 {\n    lb_algo mh\n    mh-port\n    lb_kind DR\n"
            f"    protocol TCP\n{rs}}}\n")


def _run(conf: Path, seed: int, hashseed: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    out = subprocess.run([sys.executable, "-c", CHILD, str(conf), str(seed)], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_two_processes_build_the_same_table_and_pick_the_same_server(tmp_path: Path) -> None:
    conf = tmp_path / "keepalived.conf"
    conf.write_text(_conf(SERVERS))
    a = _run(conf, 20, "1")
    b = _run(conf, 20, "987654")
    c = _run(conf, 20, "random")
    assert a["slots"] == 4093
    assert a["table"] == b["table"] == c["table"]
    assert a["picks"] == b["picks"] == c["picks"] and a["first"] == b["first"]
    assert a["servers"] == sorted(SERVERS)  # the flows spread over every server


def test_the_order_of_the_servers_is_part_of_the_configuration(tmp_path: Path) -> None:
    conf = tmp_path / "keepalived.conf"
    conf.write_text(_conf(SERVERS))
    other = tmp_path / "reordered.conf"
    other.write_text(_conf(list(reversed(SERVERS))))
    assert _run(conf, 21, "1")["table"] != _run(other, 21, "1")["table"]
