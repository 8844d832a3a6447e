"""Traffic counters and the rate estimator of IPVS, per service, per real server and in total.

What this is for: the numbers ``ipvsadm -L --stats`` and ``--rate`` print, computed as the
kernel's ``ip_vs_est.c`` does, so that the same traffic gives the same figures here and there.

The estimator runs every 2 seconds (the caller drives it, there is no timer here): the counter
delta over the period is scaled to fixed point (<< 9 for connections and packets, << 4 for bytes,
which already folds in the division by the 2-second period) and smoothed with an EWMA of weight
1/4. Readers round the fixed-point value back (``(x + 0x1FF) >> 10`` and ``(x + 0xF) >> 5``).
"""

from __future__ import annotations

from dataclasses import dataclass

ESTIMATOR_PERIOD = 2.0  # seconds between estimator ticks, as in the kernel


@dataclass(slots=True)
class Stats:
    """Counters plus the estimator state (the kernel's ``ip_vs_stats`` and ``ip_vs_estimator``)."""

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0
    # estimator state: last counter values and smoothed fixed-point rates
    _last_conns: int = 0
    _last_inpkts: int = 0
    _last_outpkts: int = 0
    _last_inbytes: int = 0
    _last_outbytes: int = 0
    _cps: int = 0
    _inpps: int = 0
    _outpps: int = 0
    _inbps: int = 0
    _outbps: int = 0

    def estimate(self) -> None:
        """One estimator tick (call every ESTIMATOR_PERIOD seconds)."""
        n = self.conns
        self._cps += (((n - self._last_conns) << 9) - self._cps) >> 2
        self._last_conns = n
        n = self.inpkts
        self._inpps += (((n - self._last_inpkts) << 9) - self._inpps) >> 2
        self._last_inpkts = n
        n = self.outpkts
        self._outpps += (((n - self._last_outpkts) << 9) - self._outpps) >> 2
        self._last_outpkts = n
        n = self.inbytes
        self._inbps += (((n - self._last_inbytes) << 4) - self._inbps) >> 2
        self._last_inbytes = n
        n = self.outbytes
        self._outbps += (((n - self._last_outbytes) << 4) - self._outbps) >> 2
        self._last_outbytes = n

    @property
    def cps(self) -> int:
        return (self._cps + 0x1FF) >> 10 if self._cps > 0 else 0

    @property
    def inpps(self) -> int:
        return (self._inpps + 0x1FF) >> 10 if self._inpps > 0 else 0

    @property
    def outpps(self) -> int:
        return (self._outpps + 0x1FF) >> 10 if self._outpps > 0 else 0

    @property
    def inbps(self) -> int:
        return (self._inbps + 0xF) >> 5 if self._inbps > 0 else 0

    @property
    def outbps(self) -> int:
        return (self._outbps + 0xF) >> 5 if self._outbps > 0 else 0

    def zero(self) -> None:
        """``ipvsadm -Z``: counters and rates back to zero."""
        for name in self.__slots__:
            setattr(self, name, 0)

    def add(self, other: Stats) -> None:
        """Accumulate another set of counters (for the totals the director reports)."""
        self.conns += other.conns
        self.inpkts += other.inpkts
        self.outpkts += other.outpkts
        self.inbytes += other.inbytes
        self.outbytes += other.outbytes

    def snapshot(self) -> StatsSnapshot:
        return StatsSnapshot(
            self.conns, self.inpkts, self.outpkts, self.inbytes, self.outbytes,
            self.cps, self.inpps, self.outpps, self.inbps, self.outbps,
        )


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """Counters and rates at one moment, as reported over the control API or netlink."""

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0
    cps: int = 0
    inpps: int = 0
    outpps: int = 0
    inbps: int = 0
    outbps: int = 0

    def to_wire(self) -> list[int]:
        return [
            self.conns, self.inpkts, self.outpkts, self.inbytes, self.outbytes,
            self.cps, self.inpps, self.outpps, self.inbps, self.outbps,
        ]

    @classmethod
    def from_wire(cls, v: list[int]) -> StatsSnapshot:
        return cls(*(int(x) for x in v))
