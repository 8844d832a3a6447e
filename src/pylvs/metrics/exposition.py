"""The ``/metrics`` text: the IPVS series written directly, the rest by ``prometheus_client``.

Why the IPVS part is written here: a director with 100,000 real servers has 300,000 backend
samples. ``prometheus_client`` builds a Sample tuple and a label dict per sample and formats each
through generic code, about 15 µs a sample: 4-6 s a scrape, longer than a scrape interval, and all
of it holding the GIL the data plane needs. The rows come from the same ``ipvs_rows`` the
``IPVSCollector`` uses, and this module writes the same bytes ``generate_latest`` would for that
collector (a test compares the two on a real table), at about 1 µs a sample. Everything else
(VRRP, checkers, data plane, reloads: hundreds of samples) goes through ``prometheus_client``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString

from pylvs.metrics.collectors import (
    BACKEND_GAUGES,
    SERVICE_COUNTERS,
    TOTALS,
    KeepalivedCollector,
    PylvsCollector,
    ipvs_rows,
    ipvs_totals,
)
from pylvs.metrics.sources import Sources

__all__ = ["CONTENT_TYPE_LATEST", "Exposition"]

log = logging.getLogger("pylvs.metrics")


def _num(v: int) -> str:
    """``floatToGoString`` for a counter: the common small integer without a float round trip."""
    if 0 <= v < 1_000_000:
        return f"{v}.0"
    return str(floatToGoString(v))  # type: ignore[no-untyped-call]


def _head(name: str, help_text: str, kind: str) -> str:
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"


CHUNK = 2000  # lines per piece: each join and encode holds the GIL for well under a millisecond


def render_ipvs(sources: Sources) -> str:
    """The IPVSCollector's families in text format 0.0.4, as ``generate_latest`` writes them."""
    return "".join(render_ipvs_chunks(sources))


def render_ipvs_chunks(sources: Sources) -> Iterator[str]:
    """``render_ipvs`` in pieces of at most ``CHUNK`` lines.

    Pieces, because one ``str.join`` or ``encode`` of 50 MB is a single C call that holds the
    GIL for tens of milliseconds: the data plane's event loop would stall for that long. In
    pieces, the interpreter can switch to it between any two (and does, every 5 ms).

    Label values here are addresses, numbers, protocol names and hex marks: none holds a
    character the format escapes (backslash, quote, newline)."""
    totals = ipvs_totals(sources)
    if totals is not None:
        parts = []
        for (name, help_text), v in zip(TOTALS, totals, strict=True):
            n = f"{name}_total"
            parts.append(f"{_head(n, help_text, 'counter')}{n} {_num(v)}\n")
        yield "".join(parts)
    backends: list[tuple[str, tuple[int, int, int]]] = []
    svc_rows: list[tuple[str, tuple[int, int, int, int, int]]] = []
    for (la, lp, pr, mk), counts, dests in ipvs_rows(sources):
        # label names in sorted order, as generate_latest (and Go's client) write them
        svc_rows.append(
            (f'{{local_address="{la}",local_mark="{mk}",local_port="{lp}",proto="{pr}"}} ',
             counts))
        head = f'{{local_address="{la}",local_mark="{mk}",local_port="{lp}",proto="{pr}",'
        for ra, rp, a, ia, w in dests:
            backends.append((f'{head}remote_address="{ra}",remote_port="{rp}"}} ', (a, ia, w)))
    for i, (name, help_text) in enumerate(BACKEND_GAUGES):
        yield _head(name, help_text, "gauge")
        for at in range(0, len(backends), CHUNK):
            yield "".join([f"{name}{labels}{_num(values[i])}\n"
                           for labels, values in backends[at:at + CHUNK]])
    for i, (name, help_text) in enumerate(SERVICE_COUNTERS):
        n = f"{name}_total"
        yield _head(n, help_text, "counter")
        for at in range(0, len(svc_rows), CHUNK):
            yield "".join([f"{n}{labels}{_num(counts[i])}\n"
                           for labels, counts in svc_rows[at:at + CHUNK]])


class Exposition:
    """What ``/metrics`` answers for one daemon's sources."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(KeepalivedCollector(sources))
        self.registry.register(PylvsCollector(sources))

    def render(self) -> bytes:
        return b"".join(self.chunks())

    def chunks(self) -> Iterator[bytes]:
        """The answer in pieces, for a writer that sends each as it comes."""
        for piece in render_ipvs_chunks(self.sources):
            yield piece.encode()
        if self.sources.text is not None:
            try:
                for piece in self.sources.text():
                    yield piece.encode()
            except Exception:  # as below: a source's bug costs its series (and is logged)
                log.exception("metrics: a text source failed; its series are left out")
        try:
            yield generate_latest(self.registry)
        except Exception:  # a source's bug costs its series, not the table's (and is logged)
            log.exception("metrics: a collector failed; its series are left out of this scrape")
