"""VRRP high availability: the VRRPv2/v3 codec, the router state machine (sans-IO), and the
asyncio driver that moves VIPs between directors, interoperating with keepalived.

Not for: health checks of real servers or programming IPVS (see the checker and director parts).
"""
