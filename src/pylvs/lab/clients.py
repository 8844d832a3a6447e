"""Small client programs the lab runs inside its client namespace (``python -c``).

What this is for: showing what a real client sees across a director failover, from the demo and
from the tests alike. What this is not for: load generation (``bench/``).
"""

# One keep-alive HTTP connection to VIP:80 (argv: VIP TRIGGER OUT): a request, then a second one
# on the same socket once the file TRIGGER exists. Writes "<client port> <first answer>" to OUT,
# then the second answer (or "error: ..." when the connection no longer works).
KEEPALIVE_CLIENT = r"""
import os, socket, sys, time
vip, trigger, out = sys.argv[1:4]
s = socket.create_connection((vip, 80), timeout=5)
def ask():
    s.sendall(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    size = next(int(h.split(b":")[1]) for h in head.split(b"\r\n")
                if h.lower().startswith(b"content-length"))
    while len(body) < size:
        body += s.recv(4096)
    return body.decode().strip()
first = ask()
with open(out, "w") as f:
    f.write(f"{s.getsockname()[1]} {first}\n")
while not os.path.exists(trigger):
    time.sleep(0.05)
s.settimeout(20)
try:
    second = ask()
except OSError as exc:
    second = f"error: {exc}"
with open(out, "a") as f:
    f.write(second + "\n")
"""


