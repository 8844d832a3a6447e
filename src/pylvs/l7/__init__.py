"""The layer-7 tier: an nginx-syntax HTTP/1.1 reverse proxy and static file server.

Each real server of the seed's cluster proxies ``*.jsp`` to a weighted upstream of app servers and
serves static pages itself; this package is that tier, configured with nginx's own directives.
``config`` reads nginx syntax into immutable dataclasses, ``location`` and ``balancer`` hold the
matching and smooth weighted round robin rules without I/O, ``server``/``upstream`` are the
asyncio drivers, ``app`` is a small dynamic app standing in for Tomcat in tests and labs.

Not for: layer-4 balancing (that is the director's job) or TLS termination.
"""
