"""The seed's layer 7 in the namespace lab: the client curls the VIP, the packet director (DR)
spreads connections over RS1/RS2 running ``pylvs http`` (or real nginx, from the same file) with
the seed's configuration, and they proxy ``*.jsp`` 2:1 to the app servers .40/.90 (the built-in
dynamic app standing in for Tomcat, which is not installed for the tests) while serving static
pages themselves."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from pylvs.lab import Lab
from pylvs.lab.tomcat import start_tomcat, tomcat_available
from tests.dataplane.packet.conftest import VIP, Cluster
from tests.lab.conftest import lab_id, need_root

RS_CONF = """
user root;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log {d}/access.log;
    error_log {d}/error.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream tomcat {{
        server 192.168.168.40:8080 weight=2;
        server 192.168.168.90:8080 weight=1;
    }}
    server {{
        listen 80;
        root {d}/html;
        index index.html;
        location ~ .*.jsp$ {{
            proxy_pass http://tomcat;
            proxy_set_header HOST $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
        keepalive_timeout 65;
    }}
}}
"""


def _wait_listening(lab: Lab, host: str, port: int, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = lab.run(host, ["ss", "-Htln", f"sport = :{port}"], timeout=10)
        if r.stdout.strip():
            return
        assert proc.poll() is None, f"server on {host} exited"
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {host}:{port}")


@pytest.fixture(scope="module", params=["pylvs", "nginx", "pylvs+tomcat"])
def l7_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The RS tier runs ``pylvs http`` or, as the lab option, real nginx: same config file; the
    app tier runs the built-in app or real Tomcat with the seed's JSP page."""
    need_root()
    if shutil.which("curl") is None or shutil.which("ss") is None:
        pytest.skip("needs curl and ss (iproute2)")
    rs_server, _, app_server = request.param.partition("+")
    if rs_server == "nginx" and shutil.which("nginx") is None:
        pytest.skip("needs nginx (Debian nginx-light)")
    if app_server == "tomcat" and not tomcat_available():
        pytest.skip("needs Tomcat (Debian tomcat10)")
    lab = Lab(lab_id(), servers=False)
    c = Cluster(lab, "dr")
    try:
        lab.up()
        c.start()
        for n, app in (("1", "app1"), ("2", "app2")):
            if app_server == "tomcat":
                p = start_tomcat(lab, app, int(n))
            else:
                p = lab.popen(app, [sys.executable, "-m", "pylvs.cli.main", "http-app", "--listen",
                                    "0.0.0.0:8080", "--page", n])
            c.procs.append(p)
            _wait_listening(lab, app, 8080, p)
        for n, rs in (("1", "rs1"), ("2", "rs2")):
            d = lab.state_dir / f"l7-{rs}"
            (d / "html").mkdir(parents=True)
            (d / "html" / "index.html").write_text(f"this is nginx{n}\n")
            (d / "nginx.conf").write_text(RS_CONF.format(d=d))
            for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
                (d / sub).mkdir()
            argv = [sys.executable, "-m", "pylvs.cli.main", "http", "-c", str(d / "nginx.conf")]
            if rs_server == "nginx":
                argv = ["nginx", "-g", "daemon off;", "-p", str(d), "-c", str(d / "nginx.conf")]
            log = open(d / "stderr.log", "w")  # noqa: SIM115 - handed to the child
            p = lab.popen(rs, argv, stdout=log, stderr=subprocess.STDOUT)
            c.procs.append(p)
            _wait_listening(lab, rs, 80, p)
        c.service("rr")
        yield c
    finally:
        c.stop()
        lab.down()


def _curl(c: Cluster, path: str, *extra: str) -> str:
    r = c.lab.run("client", ["curl", "-sS", "--max-time", "5", *extra, f"http://{VIP}{path}"],
                  timeout=20)
    assert r.returncode == 0, f"curl {path}: {r.stderr}"
    return r.stdout


@pytest.mark.root
def test_jsp_through_the_director_is_two_to_one(l7_cluster: Cluster) -> None:
    pages = Counter(_curl(l7_cluster, "/index.jsp").strip() for _ in range(12))
    # each RS runs its own smooth WRR over the same 2:1 upstream; rr alternates RSs, so each sees
    # 6 requests: 4 + 2 per RS
    assert pages == Counter({"dynamic page 1": 8, "dynamic page 2": 4})


@pytest.mark.root
def test_static_pages_come_from_the_rs_tier(l7_cluster: Cluster) -> None:
    bodies = Counter(_curl(l7_cluster, "/").strip() for _ in range(4))
    assert bodies == Counter({"this is nginx1": 2, "this is nginx2": 2})


@pytest.mark.root
def test_app_sees_the_client_address(l7_cluster: Cluster) -> None:
    head = _curl(l7_cluster, "/x.jsp?echo=headers", "-H", "X-Forwarded-For: 203.0.113.9")
    # curl's output is text here: line ends are normalised; header names are case-insensitive
    # (Tomcat reports them in lower case)
    lines = [f"{n.lower()}:{v}" for n, _, v in (ln.partition(":") for ln in head.splitlines())]
    assert "x-real-ip: 192.168.168.60" in lines
    assert "x-forwarded-for: 203.0.113.9, 192.168.168.60" in lines
    assert f"host: {VIP}" in lines
