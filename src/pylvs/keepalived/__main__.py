"""``python -m pylvs.keepalived [options]``: the same as ``pylvs keepalived [options]`` without loading
the other subsystems' command modules, for the fastest start (a restarted master preempts one
Master_Down_Interval after it has started)."""

from __future__ import annotations

import argparse
import sys

from pylvs.keepalived import cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pylvs.keepalived")
    sub = parser.add_subparsers(dest="command")
    cli.register(sub)
    args = parser.parse_args(["keepalived", *(sys.argv[1:] if argv is None else argv)])
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
