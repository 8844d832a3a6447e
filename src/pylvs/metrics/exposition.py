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


def _num(v: int) -> str:
    """``floatToGoString`` for a counter: the common small integer without a float round trip."""
    if 0 <= v < 1_000_000:
        return f"{v}.0"
    return str(floatToGoString(v))  # type: ignore[no-untyped-call]


def _head(name: str, help_text: str, kind: str) -> str:
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"


def render_ipvs(sources: Sources) -> str:
    """The IPVSCollector's families in text format 0.0.4, as ``generate_latest`` writes them.

    Label values here are addresses, numbers, protocol names and hex marks: none holds a
    character the format escapes (backslash, quote, newline)."""
    parts: list[str] = []
    totals = ipvs_totals(sources)
    if totals is not None:
        for (name, help_text), v in zip(TOTALS, totals, strict=True):
            n = f"{name}_total"
            parts.append(f"{_head(n, help_text, 'counter')}{n} {_num(v)}\n")
    n_act, n_inact, n_w = (n for n, _h in BACKEND_GAUGES)
    act: list[str] = []
    inact: list[str] = []
    weight: list[str] = []
    svc_names = [f"{n}_total" for n, _h in SERVICE_COUNTERS]
    svc: list[list[str]] = [[] for _ in SERVICE_COUNTERS]
    for (la, lp, pr, mk), counts, dests in ipvs_rows(sources):
        # label names in sorted order, as generate_latest (and Go's client) write them
        sl = f'{{local_address="{la}",local_mark="{mk}",local_port="{lp}",proto="{pr}"}} '
        head = f'{{local_address="{la}",local_mark="{mk}",local_port="{lp}",proto="{pr}",'
        for i, v in enumerate(counts):
            svc[i].append(f"{svc_names[i]}{sl}{_num(v)}\n")
        for ra, rp, a, ia, w in dests:
            bl = f'{head}remote_address="{ra}",remote_port="{rp}"}} '
            act.append(f"{n_act}{bl}{_num(a)}\n")
            inact.append(f"{n_inact}{bl}{_num(ia)}\n")
            weight.append(f"{n_w}{bl}{_num(w)}\n")
    for (name, help_text), lines in zip(BACKEND_GAUGES, (act, inact, weight), strict=True):
        parts.append(_head(name, help_text, "gauge"))
        parts.append("".join(lines))
    for (name, help_text), lines in zip(SERVICE_COUNTERS, svc, strict=True):
        parts.append(_head(f"{name}_total", help_text, "counter"))
        parts.append("".join(lines))
    return "".join(parts)


class Exposition:
    """What ``/metrics`` answers for one daemon's sources."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(KeepalivedCollector(sources))
        self.registry.register(PylvsCollector(sources))

    def render(self) -> bytes:
        return render_ipvs(self.sources).encode() + generate_latest(self.registry)
