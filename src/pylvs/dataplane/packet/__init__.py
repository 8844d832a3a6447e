"""The ``packet`` data plane: LVS forwarding (DR, NAT, TUN) of real frames on AF_PACKET rings.

What this is for: forwarding as kernel IPVS does, in Python, where kernel IPVS is unavailable:
``codec`` (sans-IO frame parsing and rewriting), ``forward`` (the sans-IO decision per frame, using
the director core), ``ring`` (the TPACKET_V3 socket driver), ``dataplane`` (the DataPlane the
daemon runs), ``decap`` (the real server's IPIP receive side for TUN) and ``_fastpath`` (optional C
extension: the ring walk and a flow table that forwards established connections without Python).
"""
