"""When a table already holds what is wanted: the one rule for "same destination", shared by
everything that reconciles a table with a wanted state (the health checkers' manager with any
IPVS table, the kernel data plane mirroring pylvs' table into kernel IPVS).

Why a module of its own: two copies of this rule drifted apart once a field was added; with one,
a new DestSpec setting is compared everywhere or nowhere.
"""

from __future__ import annotations

from pylvs.core.model import DestSpec

__all__ = ["same_dest"]


def same_dest(a: DestSpec, b: DestSpec) -> bool:
    """Whether a real server entry needs no edit: its forwarding settings are the same (address
    and port are the entry's key and are compared by the caller's lookup; the counters are not
    settings)."""
    return (a.fwd, a.weight, a.u_threshold, a.l_threshold, a.tun_type, a.tun_port,
            a.tun_flags) == (b.fwd, b.weight, b.u_threshold, b.l_threshold, b.tun_type,
                             b.tun_port, b.tun_flags)
