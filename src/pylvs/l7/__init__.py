"""The layer-7 tier: an nginx-syntax HTTP/1.1 reverse proxy and static file server.

Each real server of the seed's cluster proxies ``*.jsp`` to a weighted upstream of app servers and
serves static pages itself; this package is that tier, configured with nginx's own directives.

Reading a configuration: ``syntax`` (tokens, blocks) -> ``config`` (the block structure, each
directive checked against its row in ``directives``) -> ``model`` (immutable dataclasses).
Serving, lowest first: ``status``/``request``/``reply`` (bytes of statuses, the request and its
$variables, response heads), ``worker`` (what a worker shares; the ``Connection`` protocol),
``static``, ``proxying`` (with ``upstream``, ``balancer``, ``message``), ``routing`` (nginx's
phases), ``errorpages``, ``connection`` (one client socket), ``listen`` (sockets, ``L7Server``).
Sans-IO rules: ``location``, ``balancer``, ``message``, ``rewrite``, ``variables``, ``files``.
``app`` is a small dynamic app standing in for Tomcat in tests and labs.

Not for: layer-4 balancing (that is the director's job) or TLS termination.
"""
