"""Scale-out: several active directors behind a router's ECMP, each announcing its VIPs over BGP
while it can serve them (``pylvs scaleout``). See ``speaker`` for the BGP implementation chosen
and why, ``policy`` for when a VIP is announced, ``config`` for the ``pylvs_bgp`` block."""
