"""nginx's ``stub_status`` figures and the per-upstream-server counters, shared by the workers.

Why shared memory: nginx's stub_status counters live in shared memory, so any worker's page
shows the whole server's figures. Here the master maps one anonymous shared region before it
forks (``SharedStats``); each worker is given a slot of its own and is the only writer of it
(plain 8-byte stores into a ``memoryview``: no lock, no atomic operation on the request path),
and a reader sums the slots. A slot is taken back when its worker is reaped: its counters are
folded into the region's retired totals first (then zeroed), so ``accepts``, ``handled``,
``requests`` and the upstream counters only ever grow across reloads and respawns, as nginx's
do, while the gauges of a dead worker vanish. A reader may see a sum taken while a fold is under
way: it is then briefly high by the folded slot, never low.

Slot layout (int64): active, accepts, handled, requests, reading, writing, then for each upstream
server (numbered over the configuration's upstreams in order) requests, 1xx..5xx responses, the
sum of response times in microseconds and the number of timed responses. A worker's
configuration names its slot's upstream servers (``peer_labels``).

With ``master_process off`` (or a server run by tests) the region is private to the process.

Not for: the HTTP side of the metrics (``pylvs.metrics``) or the page's routing (``routing``).
"""

from __future__ import annotations

import mmap
import threading
from collections.abc import Iterator

from pylvs.l7.directives import LOCATION, SERVER, Level, setting
from pylvs.l7.model import Config
from pylvs.l7.syntax import Directive

ACTIVE, ACCEPTS, HANDLED, REQUESTS, READING, WRITING = range(6)
CONN_FIELDS = 6
PEER_FIELDS = 8  # requests, 1xx, 2xx, 3xx, 4xx, 5xx, time (us), timed
MAX_PEERS = 256  # upstream servers counted per worker (more are served, not counted)
SLOT = CONN_FIELDS + MAX_PEERS * PEER_FIELDS
HEADER = 8  # retired accepts, handled, requests at 0..2
STAT_SLOTS = 64  # a master's region: live workers at once, retiring ones included


@setting("stub_status", (SERVER, LOCATION), 0, 1)
def stub_status_row(lv: Level, d: Directive) -> None:
    lv.s["stub_status"] = True  # nginx < 1.7.5's "stub_status on" argument is accepted too


def peer_labels(cfg: Config) -> list[tuple[str, str]]:
    """(upstream, server address) of each counted upstream server, in slot order."""
    out = []
    for name, u in cfg.upstreams.items():
        for s in u.servers:
            out.append((name, s.address))
    return out[:MAX_PEERS]


def peer_bases(cfg: Config) -> dict[str, int]:
    """Each upstream's first server's index in the slot's peer table."""
    out, n = {}, 0
    for name, u in cfg.upstreams.items():
        out[name] = n
        n += len(u.servers)
    return out


class SharedStats:
    """The region: a header and ``slots`` worker slots."""

    # Whether workers count per upstream server. Only the Prometheus exposition reads those
    # counters, so a master serving no ``--metrics-address`` turns this off: four shared
    # stores (and a call) less per proxied request. stub_status's figures are always counted.
    count_peers = True

    def __init__(self, slots: int = 1) -> None:
        self.slots = slots
        self._mm = mmap.mmap(-1, 8 * (HEADER + slots * SLOT))
        self.a = memoryview(self._mm).cast("q")
        self._free = list(range(slots - 1, -1, -1))
        self._owner: dict[int, list[tuple[str, str]]] = {}
        self.retired_peers: dict[tuple[str, str], list[int]] = {}
        self.lock = threading.Lock()

    def take(self, cfg: Config) -> int:
        """A free slot for a worker about to start with ``cfg`` (-1: none left: it then counts
        nothing, which only happens with more live workers than slots)."""
        with self.lock:
            if not self._free:
                return -1
            i = self._free.pop()
            self._owner[i] = peer_labels(cfg)
            return i

    def release(self, i: int) -> None:
        """A reaped worker's slot: fold its counters into the retired totals, then clear it."""
        if i < 0:
            return
        with self.lock:
            a, base = self.a, HEADER + i * SLOT
            a[0] += a[base + ACCEPTS]
            a[1] += a[base + HANDLED]
            a[2] += a[base + REQUESTS]
            for k, label in enumerate(self._owner.pop(i, [])):
                p = base + CONN_FIELDS + k * PEER_FIELDS
                acc = self.retired_peers.setdefault(label, [0] * PEER_FIELDS)
                for f in range(PEER_FIELDS):
                    acc[f] += a[p + f]
            for f in range(SLOT):
                a[base + f] = 0
            self._free.append(i)

    def figures(self) -> tuple[int, int, int, int, int, int, int]:
        """active, accepts, handled, requests, reading, writing, waiting over every slot."""
        a = self.a
        tot = [0] * CONN_FIELDS
        for i in range(self.slots):
            base = HEADER + i * SLOT
            for f in range(CONN_FIELDS):
                tot[f] += a[base + f]
        tot[ACCEPTS] += a[0]
        tot[HANDLED] += a[1]
        tot[REQUESTS] += a[2]
        active, reading, writing = (max(0, tot[ACTIVE]), max(0, tot[READING]),
                                    max(0, tot[WRITING]))
        return (active, tot[ACCEPTS], tot[HANDLED], tot[REQUESTS], reading, writing,
                max(0, active - reading - writing))

    def peers(self) -> dict[tuple[str, str], list[int]]:
        """Per upstream server: requests, 1xx..5xx, response time (us), timed responses."""
        with self.lock:
            out = {k: list(v) for k, v in self.retired_peers.items()}
            owners = dict(self._owner)
        a = self.a
        for i, labels in owners.items():
            base = HEADER + i * SLOT + CONN_FIELDS
            for k, label in enumerate(labels):
                p = base + k * PEER_FIELDS
                acc = out.setdefault(label, [0] * PEER_FIELDS)
                for f in range(PEER_FIELDS):
                    acc[f] += a[p + f]
        return out


def private(cfg: Config) -> tuple[SharedStats, int]:
    """A region of one slot for a process that serves alone."""
    s = SharedStats(1)
    return s, s.take(cfg)


def stub_page(s: SharedStats) -> bytes:
    """nginx's stub_status text, byte for byte (its trailing spaces included)."""
    active, accepts, handled, requests, reading, writing, waiting = s.figures()
    return (f"Active connections: {active} \nserver accepts handled requests\n"
            f" {accepts} {handled} {requests} \n"
            f"Reading: {reading} Writing: {writing} Waiting: {waiting} \n").encode()


_CONN_SERIES = (
    ("nginx_connections_active", "Active client connections", "gauge", 0),
    ("nginx_connections_accepted", "Accepted client connections", "counter", 1),
    ("nginx_connections_handled", "Handled client connections", "counter", 2),
    ("nginx_connections_reading", "Connections where NGINX is reading the request header",
     "gauge", 4),
    ("nginx_connections_writing",
     "Connections where NGINX is writing the response back to the client", "gauge", 5),
    ("nginx_connections_waiting", "Idle client connections", "gauge", 6),
    ("nginx_http_requests_total", "Total http requests", "counter", 3),
)


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(s: SharedStats) -> Iterator[str]:
    """The series in Prometheus text: nginx-prometheus-exporter's stub_status names (v1.x:
    counters without ``_total`` but for requests, as that exporter writes them), ``nginx_up``,
    and per upstream server the NGINX Plus exporter's names (``nginxplus_upstream_server_*``,
    labels ``upstream`` and ``server``) for requests, responses by class and the average
    response time in milliseconds, plus ``pylvs_http_upstream_server_response_seconds`` as a
    summary (sum and count) for rates of the time."""
    figs = s.figures()
    out = ["# HELP nginx_up Status of the last metric scrape\n# TYPE nginx_up gauge\nnginx_up 1\n"]
    for name, text, kind, idx in _CONN_SERIES:
        out.append(f"# HELP {name} {text}\n# TYPE {name} {kind}\n{name} {figs[idx]}\n")
    yield "".join(out)
    peers = s.peers()
    if not peers:
        return
    rows = sorted(peers.items())
    req = ["# HELP nginxplus_upstream_server_requests Total client requests\n"
           "# TYPE nginxplus_upstream_server_requests counter\n"]
    resp = ["# HELP nginxplus_upstream_server_responses Total responses sent to clients\n"
            "# TYPE nginxplus_upstream_server_responses counter\n"]
    avg = ["# HELP nginxplus_upstream_server_response_time Average time to get the full "
           "response from the server\n# TYPE nginxplus_upstream_server_response_time gauge\n"]
    secs = ["# HELP pylvs_http_upstream_server_response_seconds Time to get the full response "
            "from the server\n# TYPE pylvs_http_upstream_server_response_seconds summary\n"]
    for (up, server), v in rows:
        lab = f'server="{_label(server)}",upstream="{_label(up)}"'
        req.append(f"nginxplus_upstream_server_requests{{{lab}}} {v[0]}\n")
        for k, code in enumerate(("1xx", "2xx", "3xx", "4xx", "5xx")):
            resp.append(f'nginxplus_upstream_server_responses{{code="{code}",{lab}}} '
                        f"{v[1 + k]}\n")
        avg.append(f"nginxplus_upstream_server_response_time{{{lab}}} "
                   f"{(v[6] / v[7] / 1000.0) if v[7] else 0.0}\n")
        secs.append(f"pylvs_http_upstream_server_response_seconds_sum{{{lab}}} "
                    f"{v[6] / 1e6}\n"
                    f"pylvs_http_upstream_server_response_seconds_count{{{lab}}} {v[7]}\n")
    yield "".join(req + resp + avg + secs)
