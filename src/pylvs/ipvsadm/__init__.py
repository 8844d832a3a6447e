"""Pieces of ``pylvsadm`` (the ipvsadm drop-in): option scanning, C-compatible number and address
parsing, name lookups and the listing formats. ``pylvs.cli.ipvsadm`` puts them together.

What this is for: keeping each of ipvsadm's rules in one small, separately testable place.
What this is not for: talking to a table; only ``pylvs.cli.ipvsadm`` calls the backend.
"""
