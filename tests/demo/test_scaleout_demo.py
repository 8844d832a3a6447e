"""``make demo``'s scale-out act on its own (``PYLVS_DEMO=scaleout``): three directors active
behind the BIRD router, dir2's data plane killed, dir2 added back, live counts printed each
second, no long-lived connection broken; bounded (about 35 s) and it leaves nothing behind."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(240)]


def test_scaleout_act_kills_one_director_adds_it_back_and_keeps_every_connection() -> None:
    if os.geteuid() != 0:
        pytest.skip("the scale-out act needs root (network namespaces)")
    for tool in ("ip", "bird", "birdc"):
        if shutil.which(tool) is None:
            pytest.skip(f"the scale-out act needs {tool} (iproute2, bird2)")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "pylvs.demo"], capture_output=True, text=True,
                       timeout=200, env=dict(os.environ, PYLVS_DEMO="scaleout", COLUMNS="160"))
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    out = r.stdout
    assert "scale-out act: as expected" in out
    assert took < 90, took  # the act is meant to stay under about a minute
    # the router's multipath route, as pylvs lab exec router -- ip route show VIP prints it
    assert out.count("nexthop via 10.170.0.1") == 3, out
    # live lines, one a second: open and broken counts and the router's next hops
    live = re.findall(r"t=\s*([\d.]+) s\s+open\s+(\d+)\s+broken\s+(\d+)\s+exchanges\s+(\d+)"
                      r"\s+router -> ([\w ]+)", out)
    assert len(live) >= 15, out
    assert all(int(b) == 0 for _, _, b, _, _ in live), out
    hops = [h.strip() for *_, h in live]
    assert hops[0] == "dir1 dir2 dir3" and "dir1 dir3" in hops and hops[-1] == "dir1 dir2 dir3"
    assert "dir2's data plane killed: route withdrawn after" in out
    assert "dir2 back (data plane + announcer): next hop again after" in out
    assert "40/40 kept, 0 broken" in out
    # nothing left behind: its lab's namespaces are gone
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "dsx" not in left, left
