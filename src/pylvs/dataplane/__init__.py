"""Data planes: the ways traffic is actually forwarded (proxy, packet, kernel)."""
