"""Host settings for LVS directors and real servers (``pylvs rs-setup``, ``pylvs director-setup``).

What this is for: the sysctls, addresses and routes of SPEC.md §1.1, applied, undone or printed.
What this is not for: forwarding packets or running VRRP.
"""
