"""The HTTP side: ``/metrics``, ``/status``, ``/status.json`` and the optional ``/admin``.

What this is for: serving the metrics and the status page of one daemon from its own threads
(``ThreadingHTTPServer``), so a scrape never waits for the event loop and the event loop never
waits for a scrape. The reads are of live objects (see ``pylvs.metrics.sources`` for why that is
safe across threads); the cost a large scrape puts on the data plane is GIL time only, and the
``/metrics`` writer keeps it small (``pylvs.metrics.exposition``, ``bench/bench_metrics.py``).

Admin (off unless ``--status-admin-secret-file`` is given): ``POST /admin`` with
``Authorization: Bearer SECRET`` and a JSON body drains, enables or re-weights a real server.
The change goes through an ``IPVSBackend`` (the daemon's own control socket, the path
``pylvsadm -e`` takes), so the table's own checks apply and a refusal comes back as ipvsadm words.

When ``--metrics-address`` and ``--status-address`` name the same address, one server answers
all paths. Any other path is a 404.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import hmac
import ipaddress
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pylvs.core.api import IPVSBackend, IPVSError
from pylvs.core.model import Protocol, ServiceKey, format_addr_port, parse_address
from pylvs.ipvsadm.errors import ipvs_strerror
from pylvs.metrics.page import render_page
from pylvs.metrics.sources import Sources, build_document

log = logging.getLogger("pylvs.metrics")

DEFAULT_HOST = "127.0.0.1"
MAX_BODY = 4096


class MetricsError(Exception):
    """A bad ``--metrics-address`` / ``--status-address`` / secret file, or a port in use."""


def parse_listen(text: str, option: str = "--metrics-address") -> tuple[str, int]:
    """``PORT``, ``:PORT``, ``HOST:PORT`` or ``[V6]:PORT``; a bare port binds loopback."""
    t = text.strip()
    host = DEFAULT_HOST
    port_text = t
    if t.startswith("["):
        inner, sep, rest = t[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise MetricsError(f"{option}: {text!r} is not HOST:PORT")
        host, port_text = inner, rest[1:]
    elif ":" in t:
        h, _, port_text = t.rpartition(":")
        host = h or DEFAULT_HOST
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise MetricsError(f"{option}: {host!r} is not an IP address") from None
    if not port_text.isdigit() or int(port_text) > 65535:
        raise MetricsError(f"{option}: {port_text!r} is not a port (0-65535)")
    return host, int(port_text)


def parse_service(text: str) -> ServiceKey:
    """A service as the status document names it: ``TCP 10.0.0.1:80``, ``UDP [::1]:53``,
    ``FWM 7``."""
    proto, _, rest = text.strip().partition(" ")
    proto = proto.upper()
    try:
        if proto == "FWM":
            return ServiceKey.mark(int(rest.split()[0]))
        addr, _, port = rest.rpartition(":")
        return ServiceKey.inet(Protocol[proto], addr.strip("[]"), int(port))
    except (KeyError, ValueError, IndexError):
        raise ValueError(f"bad service {text!r} (TCP|UDP|SCTP ADDR:PORT, or FWM MARK)") from None


class Admin:
    """Drain, enable and weight changes, authorised by a shared secret."""

    def __init__(self, secret: str, backend: Callable[[], IPVSBackend]) -> None:
        self.secret = secret.encode()
        self.backend = backend
        self.drained: dict[tuple[ServiceKey, str], int] = {}  # weight before a drain
        self.lock = threading.Lock()

    def authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode(), self.secret)

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        """One action; ValueError for a bad request, IPVSError when the table refuses it."""
        action = body.get("action")
        if action not in ("drain", "enable", "weight"):
            raise ValueError("action must be drain, enable or weight")
        key = parse_service(str(body.get("service", "")))
        try:
            raddr, _, rport = str(body.get("server", "")).rpartition(":")
            addr, port = parse_address(raddr.strip("[]")), int(rport)
        except ValueError:
            raise ValueError(f"bad server {body.get('server')!r} (ADDR:PORT)") from None
        name = format_addr_port(addr, port)
        with self.lock:
            backend = self.backend()
            try:
                weight = self._change(backend, action, key, addr, port, body)
            finally:
                close = getattr(backend, "close", None)
                if close is not None:
                    close()
        log.info("admin: %s %s %s -> weight %d", action, key, name, weight)
        return {"service": str(key), "server": name, "weight": weight}

    def _change(self, backend: IPVSBackend, action: str, key: ServiceKey, addr: Any, port: int,
                body: dict[str, Any]) -> int:
        name = format_addr_port(addr, port)
        status = backend.get_service(key)
        spec = next((d.spec for d in status.dests
                     if d.spec.addr == addr and d.spec.port == port), None)
        if spec is None:
            raise IPVSError(errno.ENOENT)  # "No such destination", as ipvsadm -e says
        if action == "drain":
            weight = 0
            if spec.weight:
                self.drained[(key, name)] = spec.weight
        elif action == "enable":
            weight = self.drained.pop((key, name), 0) or max(spec.weight, 1)
            if "weight" in body:
                weight = _weight(body["weight"])
        else:
            weight = _weight(body.get("weight"))
        backend.edit_dest(key, dataclasses.replace(spec, weight=weight))
        return weight


def _weight(v: Any) -> int:
    try:
        w = int(v)
    except (TypeError, ValueError):
        raise ValueError("weight must be an integer 0-2147483647") from None
    if not 0 <= w <= 2147483647:
        raise ValueError("weight must be an integer 0-2147483647")
    return w


class _Handler(BaseHTTPRequestHandler):
    server_version = "pylvs"
    sys_version = ""
    # set per server class
    app: ObservabilityServer
    paths: frozenset[str]
    root_is_metrics: bool = False

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, obj: Any) -> None:
        self._send(code, json.dumps(obj, indent=1).encode() + b"\n", "application/json")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in self.paths or path == "/admin":
            self._send(404, b"404 not found\n", "text/plain; charset=utf-8")
            return
        try:
            if path == "/metrics" or (path == "/" and self.root_is_metrics):
                self._metrics()
            elif path == "/status.json":
                self._json(200, build_document(self.app.sources))
            else:
                page = render_page(build_document(self.app.sources))
                self._send(200, page.encode(), "text/html; charset=utf-8")
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # a bug in a source: one line to the client, the trace to the log
            log.exception("%s failed", path)
            with contextlib.suppress(OSError):
                self._send(500, f"500 {type(exc).__name__}: {exc}\n".encode(),
                           "text/plain; charset=utf-8")

    do_HEAD = do_GET

    def _metrics(self) -> None:
        """Written piece by piece as it is made (HTTP/1.0: the end of the body is the end of
        the connection), so neither a 50 MB string nor a long GIL hold is ever needed."""
        from pylvs.metrics.exposition import CONTENT_TYPE_LATEST

        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        for piece in self.app.exposition().chunks():
            self.wfile.write(piece)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        admin = self.app.admin
        if path != "/admin" or "/admin" not in self.paths or admin is None:
            self._send(404, b"404 not found\n", "text/plain; charset=utf-8")
            return
        if not admin.authorised(self.headers.get("Authorization")):
            self._json(403, {"error": "forbidden: admin needs Authorization: Bearer SECRET"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            self._json(400, {"error": f"a JSON body of 1-{MAX_BODY} bytes is required"})
            return
        try:
            body = json.loads(self.rfile.read(length))
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            self._json(200, admin.apply(body))
        except ValueError as exc:
            self._json(400, {"error": str(exc)})
        except IPVSError as exc:
            self._json(409, {"error": ipvs_strerror("edit_dest", exc.errno)})
        except Exception as exc:  # the daemon is gone, the socket broke: a reply, not a trace
            log.warning("admin request failed: %s", exc)
            self._json(503, {"error": f"the change could not be made: {exc}"})


class ObservabilityServer:
    """The metrics and status listeners of one daemon, each in its own thread."""

    def __init__(self, sources: Sources, metrics: tuple[str, int] | None = None,
                 status: tuple[str, int] | None = None, admin: Admin | None = None,
                 metrics_at_root: bool = False) -> None:
        """``metrics_at_root``: ``/`` answers the metrics too (what ``--metrics-port`` always
        did, prometheus_client's own server answering every path), unless the status page
        shares the address."""
        self.sources = sources
        self.admin = admin
        self._exposition: Any = None
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        wanted: dict[tuple[str, int], set[str]] = {}
        if metrics is not None:
            wanted.setdefault(metrics, set()).update({"/metrics", "/"} if metrics_at_root
                                                     else {"/metrics"})
        if status is not None:
            wanted.setdefault(status, set()).update({"/", "/status", "/status.json", "/admin"})
        root_is_metrics = metrics_at_root and metrics != status
        try:
            for (host, port), paths in wanted.items():
                handler = type("Handler", (_Handler,), {
                    "app": self, "paths": frozenset(paths),
                    "root_is_metrics": root_is_metrics and (host, port) == metrics})
                cls = _V6Server if ":" in host else ThreadingHTTPServer
                srv = cls((host, port), handler)
                srv.daemon_threads = True
                self._servers.append(srv)
        except OSError as exc:
            self.close()
            raise MetricsError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None

    def exposition(self) -> Any:
        if self._exposition is None:
            from pylvs.metrics.exposition import Exposition

            self._exposition = Exposition(self.sources)
        return self._exposition

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(str(s.server_address[0]), int(s.server_address[1])) for s in self._servers]

    def start(self) -> None:
        for srv in self._servers:
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2},
                                 name=f"pylvs-http-{srv.server_address[1]}", daemon=True)
            t.start()
            self._threads.append(t)
            log.info("serving %s on http://%s:%d",
                     ", ".join(sorted(srv.RequestHandlerClass.paths)),  # type: ignore[attr-defined]
                     *srv.server_address[:2])

    def close(self) -> None:
        """Stop serving and close the sockets. Safe to call twice."""
        for srv in self._servers:
            if self._threads:
                srv.shutdown()
            srv.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> ObservabilityServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _V6Server(ThreadingHTTPServer):
    import socket as _socket

    address_family = _socket.AF_INET6


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options every daemon takes for its metrics and status page."""
    p.add_argument("--metrics-address", metavar="[HOST:]PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (a bare port: "
                        "127.0.0.1; off when not given)")
    p.add_argument("--status-address", metavar="[HOST:]PORT",
                   help="serve the status page (/status, /status.json) here (a bare port: "
                        "127.0.0.1); the same address as --metrics-address shares one port")
    p.add_argument("--status-admin-secret-file", metavar="FILE",
                   help="allow POST /admin (drain, enable, weight) with this file's secret as "
                        "Authorization: Bearer SECRET")


def read_secret(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            secret = f.read().strip()
    except OSError as exc:
        raise MetricsError(f"--status-admin-secret-file: {path}: {exc.strerror}") from None
    if len(secret) < 8:
        raise MetricsError(f"--status-admin-secret-file: {path}: the secret must have 8 or more "
                           "characters")
    return secret


def from_args(args: object, sources: Sources,
              backend: Callable[[], IPVSBackend] | None = None,
              metrics_port: int | None = None) -> ObservabilityServer | None:
    """The server the options ask for (not started), or None when they ask for none. ``args``
    is an argparse namespace or a daemon's settings (read with getattr). ``metrics_port`` is
    the older ``pylvs keepalived --metrics-port`` (127.0.0.1:PORT)."""
    metrics_text = getattr(args, "metrics_address", None)
    status_text = getattr(args, "status_address", None)
    secret_file = getattr(args, "status_admin_secret_file", None)
    metrics = parse_listen(metrics_text) if metrics_text else None
    if metrics is None and metrics_port:
        metrics = parse_listen(str(metrics_port), "--metrics-port")
    status = parse_listen(status_text, "--status-address") if status_text else None
    admin = None
    if secret_file:
        if status is None:
            raise MetricsError("--status-admin-secret-file needs --status-address")
        if backend is None:
            raise MetricsError("--status-admin-secret-file: this daemon has no table to change")
        admin = Admin(read_secret(secret_file), backend)
    if metrics is None and status is None:
        return None
    return ObservabilityServer(sources, metrics, status, admin,
                               metrics_at_root=not metrics_text and bool(metrics_port))


def observe_op(sources: Sources) -> Callable[[dict[str, Any]], Any]:
    """The ``observe`` control operation: the status document (what ``pylvs top`` reads)."""
    def op(_args: dict[str, Any]) -> Any:
        return build_document(sources)
    return op


def close_quietly(server: ObservabilityServer | None) -> None:
    if server is not None:
        with contextlib.suppress(Exception):
            server.close()
