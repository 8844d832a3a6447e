"""keepalived's e-mail alerts: the SMTP conversation, the message, and a daemon that mails its
VRRP transitions and real servers going down to an SMTP server (a small sink, on loopback)."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from pathlib import Path

import pytest

from pylvs.keepalived.smtp_alert import SmtpAlerter, message
from tests.keepalived.conftest import Lab, instance_conf, wait_for

# An SMTP sink: answers every command, appends each message (envelope + data) to a file.
SINK = r"""
import asyncio, sys
addr, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
async def handle(r, w):
    w.write(b"220 sink ESMTP\r\n")
    env = []
    while True:
        line = await r.readline()
        if not line:
            break
        cmd = line.decode().strip()
        if cmd.upper() == "DATA":
            w.write(b"354 go ahead\r\n")
            data = b""
            while not data.endswith(b"\r\n.\r\n"):
                chunk = await r.readline()
                if not chunk:
                    return
                data += chunk
            with open(out, "a") as f:
                f.write("\n".join(env) + "\n" + data.decode() + "\n=====\n")
            w.write(b"250 queued\r\n")
        elif cmd.upper() == "QUIT":
            w.write(b"221 bye\r\n")
            await w.drain()
            break
        else:
            env.append(cmd)
            w.write(b"250 ok\r\n")
        await w.drain()
    w.close()
async def main():
    srv = await asyncio.start_server(handle, addr, port)
    print("ready", flush=True)
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
"""


async def _sink(tmp: Path) -> tuple[asyncio.subprocess.Process, int, Path]:
    out = tmp / "mail.txt"
    port = random.randint(20000, 60000)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", SINK, "127.0.0.1", str(port),
                                                str(out), stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    assert (await proc.stdout.readline()).strip() == b"ready"
    return proc, port, out


async def test_alert_speaks_smtp_as_keepalived_does(tmp_path: Path) -> None:
    proc, port, out = await _sink(tmp_path)
    try:
        mailer = SmtpAlerter(("127.0.0.1", port), "Director <lvs@example.org>",
                             ("ops@example.org", "oncall@example.org"), "LVS_1", "director1", 5.0)
        assert await mailer.alert("VRRP Instance VI_1 - Entering MASTER state",
                                  "=> VRRP Instance is now owning VRRP VIPs <=\n.dot line")
        text = out.read_bytes().decode()
        assert "HELO director1\nMAIL FROM:<lvs@example.org>\nRCPT TO:<ops@example.org>\n" \
               "RCPT TO:<oncall@example.org>" in text
        assert "Subject: [LVS_1] VRRP Instance VI_1 - Entering MASTER state\r\n" in text
        assert "From: Director <lvs@example.org>\r\n" in text
        assert "To: ops@example.org,\r\n oncall@example.org\r\n\r\n" in text
        assert "=> VRRP Instance is now owning VRRP VIPs <=\r\n..dot line\r\n" in text
        assert mailer.sent == 1
    finally:
        proc.kill()
        await proc.wait()


async def test_unreachable_or_refusing_server_costs_only_the_alert() -> None:
    # a listening socket that never says 220: the alert gives up at the timeout
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        mailer = SmtpAlerter(("127.0.0.1", port), "a@b", ("c@d",), "r", "h", 0.5)
        assert not await mailer.alert("x", "y")
        assert mailer.failed == 1
    finally:
        silent.close()
    closed = SmtpAlerter(("127.0.0.1", 9), "a@b", ("c@d",), "r", "h", 2.0)
    assert not await closed.alert("x", "y")


def test_message_is_dot_stuffed_and_ends_with_a_lone_dot() -> None:
    m = message("a@b", ("c@d",), "s", ".hidden\nplain").decode()
    assert m.endswith("\r\n..hidden\r\nplain\r\n\r\n.\r\n")


@pytest.mark.root
@pytest.mark.slow
def test_daemon_mails_its_transitions_and_failed_real_servers(lab: Lab) -> None:
    out = lab.tmp / "mail.txt"
    port = random.randint(20000, 60000)
    p = subprocess.Popen(["ip", "netns", "exec", lab.ns("a"), sys.executable, "-c", SINK,
                          "127.0.0.1", str(port), str(out)], stdout=subprocess.PIPE)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
        mail = f"""    notification_email {{
        ops@example.org
    }}
    notification_email_from lvs@example.org
    smtp_server 127.0.0.1 {port}
    smtp_connect_timeout 5
"""
        vs = """virtual_server 10.77.0.100 8080 {
    delay_loop 0.3
    lb_algo rr
    lb_kind NAT
    protocol TCP
    smtp_alert
    real_server 127.0.0.1 9 {
        TCP_CHECK {
            connect_timeout 0.3
            retry 0
        }
    }
}
"""
        conf = instance_conf(prio=150, version=3, advert=0.2, extra="    smtp_alert\n").replace(
            "    router_id test\n", "    router_id test\n" + mail) + vs
        py = lab.pylvs("a", conf, "--control-socket", str(lab.tmp / "a.sock"))

        def subjects() -> list[str]:
            if not out.exists():
                return []
            return [ln for ln in out.read_text().splitlines() if ln.startswith("Subject: ")]

        master = "Subject: [test] VRRP Instance VI_T - Entering MASTER state"
        assert wait_for(lambda: master in subjects(), 20), (subjects(), py.logtext()[-2000:])
        got = subjects()
        assert got.count(master) == 1
        assert ("Subject: [test] Realserver [127.0.0.1]:tcp:9 of virtual server "
                "[10.77.0.100]:tcp:8080 - DOWN") in got
    finally:
        p.kill()
        p.wait()
