"""Bulk-transfer ends for ``bench_proxy.py``: a source that streams N bytes to every client, and a
sink that reads until EOF and reports the rate.

What this is for: timing a long one-way stream through a proxy (the "bulk MB/s" column) with ends
that cost as little CPU as possible: blocking sockets, 1 MiB sends, ``recv_into`` a reused buffer.
What it is not for: checking data (the tests do that with hashes) or many connections.

    python bench/_proxy_bulk.py source HOST PORT BYTES   # serves until killed
    python bench/_proxy_bulk.py sink HOST PORT BYTES     # prints {"bytes": n, "seconds": t}
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time

CHUNK = 1 << 20


def source(host: str, port: int, size: int) -> None:
    block = memoryview(b"\x5a" * CHUNK)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(64)
    print("READY", flush=True)

    def serve(conn: socket.socket) -> None:
        with conn:
            left = size
            try:
                while left > 0:
                    n = min(left, CHUNK)
                    conn.sendall(block[:n])
                    left -= n
                conn.shutdown(socket.SHUT_WR)
                conn.recv(1)  # wait for the client's close
            except OSError:
                pass

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def sink(host: str, port: int, size: int) -> None:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    got = 0
    t0 = time.perf_counter()
    with socket.create_connection((host, port), timeout=60) as s:
        while True:
            n = s.recv_into(view)
            if not n:
                break
            got += n
    dt = time.perf_counter() - t0
    print(json.dumps({"bytes": got, "seconds": dt, "expected": size}), flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 5 or argv[1] not in ("source", "sink"):
        print(__doc__, file=sys.stderr)
        return 2
    role, host, port, size = argv[1], argv[2], int(argv[3]), int(argv[4])
    (source if role == "source" else sink)(host, port, size)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
