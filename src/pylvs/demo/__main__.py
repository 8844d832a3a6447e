"""``python -m pylvs.demo`` (``make demo``): the best demo this machine allows.

As root with network namespaces, the namespace lab's demo runs the seed's cluster with real
packets when the lab's demo module is present; otherwise, and without root, the loopback demo
runs it with the proxy data plane.
"""

from __future__ import annotations

import importlib
import os
import sys


def main() -> int:
    mode = os.environ.get("PYLVS_DEMO", "auto")
    if mode in ("auto", "lab") and os.geteuid() == 0:
        try:
            lab_demo = importlib.import_module("pylvs.lab.demo")
        except ModuleNotFoundError:
            if mode == "lab":
                print("pylvs demo: the namespace lab demo is not available", file=sys.stderr)
                return 1
        else:
            rc: int = lab_demo.main()
            return rc
    from pylvs.demo import loopback

    return loopback.main()


if __name__ == "__main__":
    sys.exit(main())
