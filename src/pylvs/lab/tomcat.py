"""Real Tomcat (Debian's ``tomcat10``) as the seed's app servers .40 and .90 in the lab.

What this is for: SPEC §1.4's dynamic tier with the real thing: each app host gets its own
CATALINA_BASE (a minimal server.xml with one HTTP connector, no shutdown port) and the seed's
JSP page answering "dynamic page N", which also echoes the request head with ``?echo=headers``
so tests can see what the layer-7 proxy forwarded (X-Real-IP, X-Forwarded-For, Host).

What this is not for: configuring Tomcat in general; the built-in app (``pylvs http-app``) is
the stand-in where Tomcat is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol


class LabHosts(Protocol):
    """What Tomcat needs of the lab (``pylvs.lab.topology.Lab``, which starts it): a state
    directory and a way to run a process in a host. A protocol, so this module does not import
    the topology that imports it."""

    @property
    def state_dir(self) -> Path: ...

    def popen(self, host: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]: ...


CATALINA_HOME = Path("/usr/share/tomcat10")
SYSTEM_CONF = Path("/etc/tomcat10")

SERVER_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Server port="-1" shutdown="SHUTDOWN">
  <Service name="Catalina">
    <Connector port="{port}" protocol="HTTP/1.1" connectionTimeout="20000"/>
    <Engine name="Catalina" defaultHost="localhost">
      <Host name="localhost" appBase="webapps" unpackWARs="false" autoDeploy="false"/>
    </Engine>
  </Service>
</Server>
"""

# The seed's page (out.println of "dynamic page N"), plus the request head on ?echo=headers.
PAGE_JSP = """<%@ page language="java" import="java.util.*" pageEncoding="UTF-8" trimDirectiveWhitespaces="true"%>
<%
if ("headers".equals(request.getParameter("echo"))) {{
    response.setContentType("text/plain");
    for (Enumeration<String> names = request.getHeaderNames(); names.hasMoreElements();) {{
        String name = names.nextElement();
        for (Enumeration<String> values = request.getHeaders(name); values.hasMoreElements();) {{
            out.println(name + ": " + values.nextElement());
        }}
    }}
}} else {{
    out.println("dynamic page {page}");
}}
%>
"""


def tomcat_available() -> bool:
    return (CATALINA_HOME / "bin" / "catalina.sh").exists() and (SYSTEM_CONF / "web.xml").exists() \
        and shutil.which("java") is not None


def start_tomcat(lab: LabHosts, host: str, page: int, port: int = 8080, **popen: Any) -> subprocess.Popen[Any]:
    """Start Tomcat on lab ``host`` serving the seed's JSP as ``/index.jsp`` (any ``*.jsp``
    name below the root answers the same); the caller ends the process (``Lab.down`` does too)."""
    base = lab.state_dir / host / "tomcat"
    if base.exists():
        shutil.rmtree(base)
    for sub in ("conf", "webapps/ROOT", "logs", "work", "temp"):
        (base / sub).mkdir(parents=True)
    for name in ("web.xml", "logging.properties", "catalina.properties", "context.xml"):
        shutil.copy(SYSTEM_CONF / name, base / "conf" / name)
    (base / "conf" / "server.xml").write_text(SERVER_XML.format(port=port))
    jsp = PAGE_JSP.format(page=page)
    for name in ("index.jsp", "x.jsp"):
        (base / "webapps" / "ROOT" / name).write_text(jsp)
    env = dict(os.environ, CATALINA_HOME=str(CATALINA_HOME), CATALINA_BASE=str(base),
               CATALINA_TMPDIR=str(base / "temp"))
    popen.setdefault("stdout", open(base / "logs" / "console.log", "w"))  # noqa: SIM115
    popen.setdefault("stderr", subprocess.STDOUT)
    return lab.popen(host, [str(CATALINA_HOME / "bin" / "catalina.sh"), "run"], env=env, **popen)
