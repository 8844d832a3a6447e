"""The status page: one self-contained HTML page drawn from the status document.

What this is for: a glance at a director from a browser, in the spirit of HAProxy's stats page:
every virtual service and real server with a state colour, weight, connection counts, rates and
the last check result with its reason; the VRRP instances, their master and split brain on top.
It refreshes itself every ``REFRESH`` seconds (a meta refresh: no script, no external asset, so
it works from a locked-down console).

Every string that comes from the configuration or from the outside (service names, checker
results, script output, addresses) goes through ``html.escape``: a real server's check reason is
text a real server chose.
"""

from __future__ import annotations

from html import escape
from typing import Any

REFRESH = 2  # seconds

STATE_COLOURS = {
    "up": "#c8f0c8", "down": "#f5b5b5", "drained": "#f3e0a0", "unchecked": "#dde8f5",
    "MASTER": "#c8f0c8", "BACKUP": "#dde8f5", "FAULT": "#f5b5b5", "INIT": "#eeeeee",
    "STOP": "#eeeeee",
}

_STYLE = """
body{font-family:sans-serif;font-size:13px;margin:12px;background:#fafafa;color:#222}
h1{font-size:18px;margin:0 0 8px 0} h2{font-size:15px;margin:16px 0 4px 0}
table{border-collapse:collapse;margin-bottom:10px;min-width:60%}
th,td{border:1px solid #bbb;padding:2px 6px;text-align:right;white-space:nowrap}
th{background:#445;color:#fff} td.l{text-align:left} tr.svc td{background:#e4e4ee;font-weight:bold}
.banner{padding:6px 10px;margin:6px 0;font-weight:bold;border:1px solid #a33}
.split{background:#f5b5b5} .ok{background:#c8f0c8;border-color:#3a3}
.small{color:#666;font-size:11px}
"""


def _e(v: Any) -> str:
    return escape("" if v is None else str(v), quote=True)


def _cell(v: Any, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f"<td{c}>{_e(v)}</td>"


def _rate(n: int) -> str:
    for unit, div in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def _vrrp(doc: dict[str, Any]) -> list[str]:
    v = doc.get("vrrp")
    if not v:
        return []
    out = []
    if v.get("split_brain"):
        peers = ", ".join(str(i["split_brain"]) for i in v["instances"] if i["split_brain"])
        out.append(f'<div class="banner split" id="split-brain">SPLIT BRAIN: another master '
                   f'seen ({_e(peers)})</div>')
    else:
        out.append('<div class="banner ok" id="split-brain">no split brain</div>')
    out.append("<h2>VRRP</h2><table id=\"vrrp\"><tr><th>instance</th><th>state</th><th>vrid</th>"
               "<th>interface</th><th>priority</th><th>effective</th><th>master</th>"
               "<th>peers</th><th>VIPs</th><th>faults</th></tr>")
    for i in v["instances"]:
        colour = STATE_COLOURS.get(str(i["state"]), "#fff")
        out.append(
            f'<tr style="background:{colour}">' + _cell(i["name"], "l") + _cell(i["state"], "l")
            + _cell(i["vrid"]) + _cell(i["interface"], "l") + _cell(i["priority"])
            + _cell(i["effective_priority"]) + _cell(i["master"] or "", "l")
            + _cell(" ".join(i["peers"]), "l") + _cell(" ".join(i["vips"]), "l")
            + _cell(" ".join(i["faults"]), "l") + "</tr>")
    out.append("</table>")
    return out


def _bgp(doc: dict[str, Any]) -> list[str]:
    """pylvs scaleout: each VIP announced or withdrawn (and why), each BGP session."""
    b = doc.get("bgp")
    if not b:
        return []
    out = [f"<h2>BGP (scale-out){' &mdash; draining' if b['draining'] else ''}</h2>",
           '<table id="bgp"><tr><th>VIP</th><th>announced</th><th>why</th></tr>']
    for v in b["vips"]:
        colour = "#cfc" if v["announced"] else "#fcc"
        out.append(f'<tr style="background:{colour}">' + _cell(v["prefix"], "l")
                   + _cell("yes" if v["announced"] else "no", "l") + _cell(v["reason"], "l")
                   + "</tr>")
    out.append('</table><table id="bgp-neighbors"><tr><th>neighbor</th><th>AS</th>'
               "<th>state</th><th>last error</th></tr>")
    for n in b["neighbors"]:
        colour = "#cfc" if n["state"] == "Established" else "#fcc"
        out.append(f'<tr style="background:{colour}">' + _cell(n["address"], "l")
                   + _cell(n["remote_as"]) + _cell(n["state"], "l")
                   + _cell(n["last_error"], "l") + "</tr>")
    out.append("</table>")
    return out


def render_page(doc: dict[str, Any]) -> str:
    """The whole page for one status document."""
    rows: list[str] = []
    for s in doc["services"]:
        st = s["stats"]
        rows.append(
            f'<tr class="svc" data-service="{_e(s["name"])}">'
            + _cell(s["name"], "l") + _cell(s["scheduler"], "l") + _cell("") + _cell("")
            + _cell(sum(r["weight"] for r in s["real_servers"]))
            + _cell(sum(r["active"] for r in s["real_servers"]))
            + _cell(sum(r["inactive"] for r in s["real_servers"]))
            + _cell(st["conns"]) + _cell(st["cps"]) + _cell(_rate(st["inpps"] + st["outpps"]))
            + _cell(_rate(st["inbps"] + st["outbps"])) + _cell("", "l") + "</tr>")
        for r in s["real_servers"]:
            h = r["health"]
            colour = STATE_COLOURS.get(h["state"], "#fff")
            rst = r["stats"]
            rows.append(
                f'<tr class="rs" data-server="{_e(r["name"])}" data-state="{_e(h["state"])}" '
                f'style="background:{colour}">'
                + _cell("  -> " + r["name"], "l") + _cell(r["forward"], "l")
                + _cell(h["state"], "l") + _cell(h["virtual_server"] or "", "l")
                + f'<td class="weight">{_e(r["weight"])}</td>'
                + _cell(r["active"]) + _cell(r["inactive"]) + _cell(rst["conns"])
                + _cell(rst["cps"]) + _cell(_rate(rst["inpps"] + rst["outpps"]))
                + _cell(_rate(rst["inbps"] + rst["outbps"]))
                + _cell(h["last_result"] or "", "l") + "</tr>")
    dp = doc.get("dataplane") or {}
    parts = [
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">",
        f'<meta http-equiv="refresh" content="{REFRESH}">',
        f"<title>pylvs status: {_e(doc['daemon'])}</title><style>{_STYLE}</style></head><body>",
        f"<h1>pylvs {_e(doc['daemon'])}</h1>",
        f'<div class="small">data plane {_e(dp.get("name", "none"))}, up {_e(doc["uptime"])} s,'
        f" refreshes every {REFRESH} s; <a href=\"/status.json\">JSON</a></div>",
        *_vrrp(doc),
        *_bgp(doc),
        "<h2>Virtual services</h2><table id=\"services\"><tr><th>service / real server</th>"
        "<th>sched / fwd</th><th>health</th><th>virtual_server</th><th>weight</th>"
        "<th>active</th><th>inactive</th><th>conns</th><th>conn/s</th><th>pkt/s</th>"
        "<th>bytes/s</th><th>last check</th></tr>",
        *rows,
        "</table></body></html>",
    ]
    return "\n".join(parts)
