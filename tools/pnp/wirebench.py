"""`pnp wirebench`: handshakes on the wire, ours beside strongSwan's and libreswan's.

Needs root, strongSwan, libreswan (unpacked by `python -m pnp.peers.pluto --ensure`) and
tcpdump; it drives the real daemons through pnp.peers (the harness the interop tests
use, in two network namespaces). Every figure comes from a
tcpdump capture on the veth: wire time = IKE_SA_INIT request -> IKE_AUTH response,
bytes = UDP payloads of the four messages (non-ESP markers included), medians of N.
Same suite everywhere: AES-CBC-128 / HMAC-SHA2-256-128 / PRF-SHA2-256 / Curve25519.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

PSK = "wirebench-psk-0123456789abcdef"


def add_arguments(p):
    p.add_argument("--runs", type=int, default=5, help="handshakes per scenario (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _our_config(tmp, me, peer, auth, childless=False, transport=True, names=("a", "b")):
    """A node config for `me` toward `peer`; names = (our id, the peer's id) labels."""
    path = os.path.join(tmp, "ours-%s-%s-%s-%s.toml" % (names[0], auth, childless, transport))
    lines = ['state = "%s/state-%s"' % (tmp, names[0]), 'addresses = ["%s"]' % me.ip6, "[[peer]]",
             'address = "%s"' % peer.ip6, 'auth = "%s"' % auth]
    if auth == "psk":
        lines += ['psk = "%s"' % PSK, 'local_id = "fqdn:%s.example"' % names[0],
                  'remote_id = "fqdn:%s.example"' % names[1]]
    lines.append('mode = "%s"' % ("transport" if transport else "tunnel"))
    if childless:
        lines.append("childless = true")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _connect(ns, cfg, peer, runs):
    from pnp.peers import netns as nn
    for _ in range(runs):
        r = ns.run([nn.VENV_PYTHON, "-m", "pnp.cli", "connect", "--config", cfg, peer], check=False)
        if r.returncode != 0:
            raise RuntimeError("pnp connect failed: " + r.stderr.strip())


def _captured(ns, tmp, name, work):
    from pnp.peers import capture as cap
    pcap = os.path.join(tmp, name + ".pcap")
    with cap.Capture(ns, "veth0", "udp", pcap):
        work()
    return [h for h in cap.handshakes(pcap) if h["wire_time"] is not None]


def scenarios(net, tmp, runs):
    from pnp.peers import charon as ch
    from pnp.peers import pluto as pl
    a, b = net.ns
    out = {}

    # strongSwan <-> strongSwan, PSK, tunnel CHILD SA
    A, B = ch.Charon(a, os.path.join(tmp, "ca")), ch.Charon(b, os.path.join(tmp, "cb"))
    try:
        A.start()
        B.start()
        A.add_conn("h", a.ip6, b.ip6, psk=PSK, local_id="a.example", remote_id="b.example", children={"net": {}})
        B.add_conn("h", b.ip6, "%any", psk=PSK, local_id="b.example", remote_id="a.example", children={"net": {}})
        A.load()
        B.load()

        def charons():
            for _ in range(runs):
                A.initiate("net", "h", timeout=10)
                A.terminate(ike="h")
                A.wait_for(lambda sas: not sas, timeout=5)
        out["charon -> charon, PSK"] = _captured(a, tmp, "cc", charons)
        # ours -> charon, PSK, tunnel CHILD SA (A's charon leaves the namespace's ports to us)
        A.stop()
        B.stop()
        B = ch.Charon(b, os.path.join(tmp, "cb2"))
        B.start()
        B.add_conn("h", b.ip6, "%any", psk=PSK, local_id="b.example", remote_id="a.example", children={"net": {}})
        B.load()
        cfg_t = _our_config(tmp, a, b, "psk", transport=False)
        out["ours -> charon, PSK"] = _captured(a, tmp, "oc", lambda: _connect(a, cfg_t, b.ip6, runs))
    finally:
        A.stop()
        B.stop()

    # ours <-> ours, PSK and NULL (transport CHILD SA), NULL childless
    for auth, childless in (("psk", False), ("null", False), ("null", True)):
        rcfg = _our_config(tmp, b, a, auth, childless, names=("b", "a"))
        icfg = _our_config(tmp, a, b, auth, childless)
        node = b.popen_python(["-m", "pnp.cli", "node", "--config", rcfg], stdout=subprocess.PIPE,
                              stderr=open(os.path.join(tmp, "node.err"), "w"), text=True)
        try:
            node.stdout.readline()
            label = "ours -> ours, %s%s" % (auth.upper(), ", childless" if childless else "")
            out[label] = _captured(a, tmp, "oo-%s-%s" % (auth, childless), lambda: _connect(a, icfg, b.ip6, runs))
        finally:
            node.terminate()
            node.wait(timeout=5)

    # libreswan <-> libreswan and ours -> libreswan, NULL, childless
    P, Q = pl.Pluto(a, os.path.join(tmp, "pa")), pl.Pluto(b, os.path.join(tmp, "pb"))
    try:
        P.add_conn("null", a.ip6, b.ip6)
        Q.add_conn("null", b.ip6, "%any")
        P.start()
        Q.start()
        P.impair("omit-v2-ike-auth-child")
        P.impair("revival")

        def plutos():
            for i in range(runs):
                P.initiate("null")
                Q.wait_log("authenticated peer using authby=null", timeout=5)
                P.terminate("null")
        out["pluto -> pluto, NULL, childless"] = _captured(a, tmp, "pp", plutos)
        P.stop()
        cfg = _our_config(tmp, a, b, "null", childless=True)
        out["ours -> pluto, NULL, childless"] = _captured(a, tmp, "op", lambda: _connect(a, cfg, b.ip6, runs))
    finally:
        P.stop()
        Q.stop()
    return out


def summarize(out):
    rows = []
    for name, hs in out.items():
        if not hs:
            rows.append({"scenario": name, "n": 0})
            continue
        rows.append({"scenario": name, "n": len(hs),
                     "wire_ms_median": statistics.median(h["wire_time"] for h in hs) * 1e3,
                     "wire_ms_min": min(h["wire_time"] for h in hs) * 1e3,
                     "bytes": statistics.median(h["bytes"] for h in hs),
                     "messages": [m[2] for m in hs[0]["messages"]]})
    return rows


def run(args) -> int:
    if os.geteuid() != 0:
        print("pnp wirebench: needs root (network namespaces, tcpdump)", file=sys.stderr)
        return 2
    from pnp.peers import netns as nn
    with tempfile.TemporaryDirectory() as tmp, nn.Netns(2, net_id=9) as net:
        rows = summarize(scenarios(net, tmp, args.runs))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("handshake on the wire (IKE_SA_INIT request -> IKE_AUTH response), IPv6, medians of %d" % args.runs)
    print("%-36s %4s %10s %10s %7s  %s" % ("scenario", "n", "wire ms", "min ms", "bytes", "message sizes"))
    for r in rows:
        if not r["n"]:
            print("%-36s %4d  (no complete handshake)" % (r["scenario"], 0))
            continue
        print("%-36s %4d %10.2f %10.2f %7d  %s" % (r["scenario"], r["n"], r["wire_ms_median"],
                                                   r["wire_ms_min"], r["bytes"], r["messages"]))
    return 0
