"""The ipvsadm language: ipvsadm 1.31's command line, its table commands, listings and rule files.

What this is for: every rule of ipvsadm in one small, separately testable place, shared by
``pylvsadm`` (``pylvs.cli.ipvsadm``, the entry points) and the director daemon (which restores
and saves its table as ipvsadm rule files).

- ``command``: ipvsadm.c's numbering of commands and options, the legal option/command table,
  and ``IpvsadmCommand`` (one parsed line: ``ParsedService``, ``ParsedDest``, ``ParsedDaemon``).
- ``parse``: ``parse_command`` (popt scanning, C number/address parsing, ipvsadm's checks in its
  order) and ``restore_words``.
- ``runner``: ``Runner`` and ``run``: a command line executed against an ``IPVSBackend``,
  ipvsadm's bytes and exit code.
- ``rules``: the strict rule-file form (``parse_restore``, ``apply_commands``, ``save_rules``).
- ``errors``: ``IpvsadmExit``, ``LineError``, ``RestoreError`` and libipvs's ``ipvs_strerror``.
- ``backend``: ``select_backend``, which table ``pylvsadm`` talks to by default.
- ``popt``, ``cparse``, ``names``, ``listing``, ``usage``: option scanning, the C library's
  parsing, hosts/services names, the listing formats, ``-h``/``-v`` text.

What this is not for: holding a table (``pylvs.core``) or a process's arguments, streams and
signals (``pylvs.cli``).
"""
