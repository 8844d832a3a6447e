"""VRRP high availability: the VRRPv2/v3 codec, the router state machine (sans-IO), the raw
socket and address I/O (``netio``), and instance planning, interoperating with keepalived.

Not for: running a keepalived.conf (``pylvs.keepalived``), health checks of real servers
(``pylvs.health``) or programming IPVS (``pylvs.dataplane``).
"""
