"""Running pylvs as a host service: systemd's readiness protocol (``sdnotify``), the unit files
shipped with the package and their installer (``units``).

It sits just above ``core`` so that every daemon (``pylvsd``, ``pylvs keepalived``, ``pylvs
http``) can use it without importing another daemon.
"""
