"""``python -m pylvs.demo`` (``make demo``): the best demo this machine allows.

As root with iproute2 (network namespaces), the lab demo runs the seed's cluster with real
packets: DR with a VRRP failover, then NAT and TUN, then the scale-out act (three directors
active behind an ECMP router, one killed, one added back: ``pylvs.demo.scaleout``). Otherwise the
loopback demo runs it with the proxy data plane and no privileges.

``PYLVS_DEMO=lab|loopback|scaleout`` chooses explicitly (``scaleout``: that act alone);
``PYLVS_DEMO_SKIP=scaleout`` leaves the scale-out act out of the lab demo (its test does, and
tests the act on its own).
"""

from __future__ import annotations

import os
import shutil
import sys


def main() -> int:
    mode = os.environ.get("PYLVS_DEMO", "auto")
    skip = {w.strip() for w in os.environ.get("PYLVS_DEMO_SKIP", "").split(",") if w.strip()}
    if mode == "auto":
        mode = "lab" if os.geteuid() == 0 and shutil.which("ip") else "loopback"
    if mode == "scaleout":
        from pylvs.demo import scaleout

        return scaleout.main()
    if mode == "lab":
        from pylvs.demo import lab

        rc = lab.main()
        if "scaleout" not in skip:
            from pylvs.demo import scaleout

            ok = scaleout.act()
            if ok is not None:
                scaleout.console.print("scale-out act: " + (
                    "[green]as expected[/]" if ok else "[red]unexpected[/]"))
                rc = rc or (0 if ok else 1)
        return rc
    from pylvs.demo import loopback

    return loopback.main()


if __name__ == "__main__":
    sys.exit(main())
