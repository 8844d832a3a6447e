"""``python -m pylvs.demo`` (``make demo``): the best demo this machine allows.

As root with iproute2 (network namespaces), the lab demo runs the seed's cluster with real
packets: DR with a VRRP failover, then NAT and TUN. Otherwise the loopback demo runs it with the
proxy data plane and no privileges. ``PYLVS_DEMO=lab|loopback`` chooses explicitly.
"""

from __future__ import annotations

import os
import shutil
import sys


def main() -> int:
    mode = os.environ.get("PYLVS_DEMO", "auto")
    if mode == "auto":
        mode = "lab" if os.geteuid() == 0 and shutil.which("ip") else "loopback"
    if mode == "lab":
        from pylvs.demo import lab

        return lab.main()
    from pylvs.demo import loopback

    return loopback.main()


if __name__ == "__main__":
    sys.exit(main())
