"""Talking to the Linux kernel over netlink: the IPVS generic-netlink family (``ipvs``)."""
