"""Observability: Prometheus metrics, the status page and ``pylvs top``.

What this is for: letting an operator watch a pylvs director with the tools already pointed at LVS
directors (node_exporter's IPVS series, keepalived-exporter's VRRP series, Grafana dashboards built
on them), in a browser (a self-refreshing status page in the spirit of HAProxy's) or in a terminal
(``pylvs top``). Every figure is read from the daemon's own live objects at the moment it is asked
for: the metrics keep no second set of counters.

What this is not for: collecting anything on the hot path. The daemons hand their live objects in
through the small protocols of ``pylvs.metrics.sources``; this package sits beside the data planes
and may not import them or the daemons.
"""
