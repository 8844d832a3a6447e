"""pylvs: the Linux Virtual Server cluster (IPVS director, ipvsadm, keepalived, layer-7 proxy) in Python."""

__version__ = "0.1.0"
