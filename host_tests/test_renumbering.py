"""Renumbering with radvd (issue 12, item 6): SLAAC from the Linux kernel, prefix A
deprecated, prefix B advertised, the nodes follow.

Three network namespaces on one bridge (pnp.peers.netns.Netns(3)): `r` runs radvd
advertising prefix A (2001:db8:a::/64); `a` and `b` take SLAAC addresses from it
(accept_ra=2, autoconf=1, no static IPv6). Each host runs the node of `pnp node`
(pnp.runtime.start_node: the same node, board and address glue) in a small driver that
writes its state every 0.1 s: `b` echoes UDP 7000, `a` is configured with b's SLAAC
address only (b is zero config) and sends a numbered datagram to it every 20 ms.
Both reach AUTHENTICATED (NULL auth + the channel-bound proof, keys pinned on first
use). Then radvd is given A with AdvPreferredLifetime 0 and B (2001:db8:b::/64), and
reloaded (SIGHUP). tcpdump records every UDP datagram on a's link all along.

What works without MOBIKE (test_renumbering_events_and_addresses):
  * each host board reports "deprecated" for its A address and "added" for its B
    address (rtnetlink, pnp_hostboard.netlink), and the node's address list moves to B
    (B present, A gone), also in `pnp`'s log lines;
  * the level stays AUTHENTICATED, datagrams keep flowing, and tcpdump sees no clear
    datagram between the hosts (every UDP datagram is IKE or ESP on the NAT-T port).
What needs MOBIKE (test_renumbering_moves_sas_by_mobike, xfail until the node has
`local_addresses_changed`, the MOBIKE engineer's hook):
  * both IKE SAs end with their peer at the peer's B address (each side sent
    UPDATE_SA_ADDRESSES or followed the other's), with the SPIs of before the move
    (IKE and CHILD alike), and no IKE_SA_INIT on the wire after the move;
  * the app, still sending to b's first (A) address, loses at most a few datagrams.
Every process (radvd, nodes, tcpdump) is stopped and the namespaces deleted on exit.
"""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from .conftest import missing

pytestmark = pytest.mark.needs_root

PREFIX_A = "2001:db8:a:0:"
PREFIX_B = "2001:db8:b:0:"
APP_PORT = 7000

RADVD_CONF = """interface veth0 {
    AdvSendAdvert on;
    MinRtrAdvInterval 3;
    MaxRtrAdvInterval 4;
    AdvDefaultLifetime 0;
%s};
"""
PREFIX = """    prefix %s {
        AdvOnLink on;
        AdvAutonomous on;
        AdvPreferredLifetime %d;
        AdvValidLifetime %d;
    };
"""

# The node of `pnp node` (pnp.runtime.start_node) plus an app: echo (b) or a numbered
# sender (a); writes its state to the status file every 0.1 s.
DRIVER = r'''
import asyncio, json, os, signal, sys
from pnp import config, logs
from pnp.runtime import start_node
from pnpipsec import LEVEL_NAMES

cfg_path, status_path, role = sys.argv[1], sys.argv[2], sys.argv[3]
peer = sys.argv[4] if len(sys.argv) > 4 else None
PORT = 7000

async def main():
    logs.setup(0)
    node = await start_node(config.load(cfg_path))
    events = []
    node.board.on_address_change(lambda evs: events.extend(list(e) for e in evs))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ep = node.endpoint(PORT)
    sent, got, fails = [], set(), [0]

    async def echo():
        while True:
            data, addr, _ = await ep.recv()
            try:
                await ep.send(data, addr, timeout=2)
            except Exception:
                pass

    async def recv():
        while True:
            data, addr, lv = await ep.recv()
            got.add(int(data))

    async def send():
        n = 0
        while True:
            n += 1
            sent.append(n)
            try:
                await ep.send(b"%d" % n, (peer, PORT), timeout=0.5)
            except Exception:
                fails[0] += 1
            await asyncio.sleep(0.02)

    tasks = [asyncio.create_task(echo() if role == "echo" else send())]
    if role == "send":
        tasks.append(asyncio.create_task(recv()))
    print("ready", flush=True)
    while not stop.is_set():
        sas = [{"spi_i": sa.spi_i.hex(), "spi_r": sa.spi_r.hex(), "peer": sa.peer_addr[0],
                "local": getattr(sa, "local_addr", None) and sa.local_addr[0], "state": sa.state}
               for sa in node.engine.sas.values()]
        children = sorted("%08x/%08x" % (c.child.spi_in, c.child.spi_out)
                          for p in node._records() for c in p.children)   # each record once
        st = {"t": loop.time(), "addresses": list(node.addresses), "events": events,
              "levels": {h: LEVEL_NAMES[node.level(h)] for h in list(node.by_host)},
              "sas": sas, "children": children, "sent": sent[-1] if sent else 0,
              "got": sorted(got), "send_failures": fails[0], "engine": dict(node.engine.stats),
              "peer_addrs": [getattr(sa, "peer_addrs", None) for sa in node.engine.sas.values()]}
        with open(status_path + ".tmp", "w") as f:
            json.dump(st, f)
        os.replace(status_path + ".tmp", status_path)
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except asyncio.TimeoutError:
            pass
    for t in tasks:
        t.cancel()
    await node.stop()

asyncio.run(main())
'''


def mobike_in_node():
    from pnpipsec.node import Node
    return hasattr(Node, "local_addresses_changed")


def _read(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _wait(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out (%g s) waiting for %s" % (timeout, what))


def _slaac(ns, prefix):
    """ns's global address in `prefix` once DAD is over (preferred or deprecated), or None.
    (A tentative address is no source: the kernel would send from the link-local one.)"""
    out = ns.run(["ip", "-6", "-o", "addr", "show", "dev", "veth0", "scope", "global"]).stdout
    for line in out.splitlines():
        a = line.split()[3].split("/")[0]
        if a.startswith(prefix) and "tentative" not in line.split():
            return a
    return None


def _level_of(st, host):
    return (st or {}).get("levels", {}).get(host)


@pytest.fixture(scope="module")
def renumbered(tmp_path_factory):
    from pnp.peers import capture as cap
    from pnp.peers import netns as nn

    ok, why = nn.can_use_netns()
    if not ok:
        missing(why)
    radvd = shutil.which("radvd") or ("/usr/sbin/radvd" if os.path.exists("/usr/sbin/radvd") else None)
    if radvd is None:
        missing("radvd not found: apt-get install radvd (scripts/debian-packages.txt)")
    ok, why = cap.available()
    if not ok:
        missing(why)
    tmp = tmp_path_factory.mktemp("renumber")
    t0 = time.monotonic()
    res = {"tmp": tmp}
    with nn.Netns(3, warmup=False) as net:
        a, b, r = net.ns
        for ns in (a, b):
            ns.run(["ip", "-6", "addr", "del", ns.ip6 + "/64", "dev", "veth0"])
            for k, v in (("accept_ra", 2), ("autoconf", 1), ("dad_transmits", 0), ("use_tempaddr", 0)):
                ns.run(["sysctl", "-qw", "net.ipv6.conf.veth0.%s=%d" % (k, v)])
        r.run(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        conf = str(tmp / "radvd.conf")
        with open(conf, "w") as f:
            f.write(RADVD_CONF % (PREFIX % ("2001:db8:a::/64", 120, 600)))
        rlog = open(str(tmp / "radvd.log"), "wb")
        rad = r.popen([radvd, "-n", "-C", conf, "-p", str(tmp / "radvd.pid"), "-m", "stderr"],
                      stdout=rlog, stderr=subprocess.STDOUT)
        # the hosts ask at once (a router solicitation on link up)
        for ns in (a, b):
            ns.run(["ip", "link", "set", "veth0", "down"])
            ns.run(["ip", "link", "set", "veth0", "up"])
        a_A = _wait(lambda: _slaac(a, PREFIX_A), 15, "a's SLAAC address in A")
        b_A = _wait(lambda: _slaac(b, PREFIX_A), 15, "b's SLAAC address in A")
        res.update(a_A=a_A, b_A=b_A, t_slaac=time.monotonic() - t0)

        pcap = str(tmp / "a.pcap")
        capture = cap.Capture(a, "veth0", "udp", pcap)
        capture.start()
        cfg_a = tmp / "a.toml"
        cfg_a.write_text('state = "%s"\nike_port = 4500\nnatt_port = 4500\n[[peer]]\naddress = "%s"\n'
                         % (tmp / "sta", b_A))
        cfg_b = tmp / "b.toml"
        cfg_b.write_text('state = "%s"\nike_port = 4500\nnatt_port = 4500\n' % (tmp / "stb"))
        st_a, st_b = str(tmp / "a.json"), str(tmp / "b.json")
        logs = {}
        procs = {}
        for name, ns, args in (("b", b, [str(cfg_b), st_b, "echo"]), ("a", a, [str(cfg_a), st_a, "send", b_A])):
            logs[name] = str(tmp / (name + ".log"))
            with open(logs[name], "wb") as err:
                procs[name] = ns.popen_python(["-c", DRIVER] + args, stdout=subprocess.PIPE, stderr=err)
            line = procs[name].stdout.readline()
            assert b"ready" in line, (name, line, open(logs[name]).read())
        _wait(lambda: _level_of(_read(st_a), b_A) == "AUTHENTICATED"
              and _level_of(_read(st_b), a_A) == "AUTHENTICATED", 20, "AUTHENTICATED both ways")
        res["t_auth"] = time.monotonic() - t0
        res["t_auth_wall"] = time.time()
        time.sleep(1.0)
        res["before"] = {"a": _read(st_a), "b": _read(st_b)}

        # renumber: A deprecated (preferred 0), B advertised
        with open(conf, "w") as f:
            f.write(RADVD_CONF % (PREFIX % ("2001:db8:a::/64", 0, 600) + PREFIX % ("2001:db8:b::/64", 120, 600)))
        t_move = time.time()
        res["t_move_wall"] = t_move
        rad.send_signal(signal.SIGHUP)

        def moved():
            sa, sb = _read(st_a), _read(st_b)
            return sa and sb and any(x.startswith(PREFIX_B) for x in sa["addresses"]) \
                and any(x.startswith(PREFIX_B) for x in sb["addresses"]) \
                and a_A not in sa["addresses"] and b_A not in sb["addresses"]
        try:
            _wait(moved, 15, "both nodes' address lists in B")
        except AssertionError:
            res["moved_error"] = "address lists: a %s, b %s" % ((_read(st_a) or {}).get("addresses"),
                                                                  (_read(st_b) or {}).get("addresses"))
        res["a_B"], res["b_B"] = _slaac(a, PREFIX_B), _slaac(b, PREFIX_B)
        res["t_moved"] = time.monotonic() - t0
        time.sleep(3.0)                       # traffic after the move (and MOBIKE's time)
        res["after"] = {"a": _read(st_a), "b": _read(st_b)}
        res["t_stop_wall"] = time.time()
        for name in ("a", "b"):
            procs[name].send_signal(signal.SIGTERM)
        for name in ("a", "b"):
            try:
                procs[name].wait(5)
            except subprocess.TimeoutExpired:
                procs[name].kill()
        capture.stop()
        nn.stop_process(rad)
        rlog.close()
        res["logs"] = {k: open(v).read() for k, v in logs.items()}
        res["radvd_log"] = open(str(tmp / "radvd.log")).read()
        res["pcap"] = pcap
        res["ips"] = {"a": {a_A, res["a_B"]}, "b": {b_A, res["b_B"]}}
        # every UDP datagram on a's link: (time, src, dst, sport, dport, isakmp exchange, esp spi)
        rows = cap.tshark_fields(pcap, ["frame.time_epoch", "ipv6.src", "ipv6.dst", "udp.srcport",
                                        "udp.dstport", "isakmp.exchangetype", "esp.spi"],
                                 decode_as=["udp.port==4500,udpencap"])
        res["udp"] = rows
    res["elapsed"] = time.monotonic() - t0
    assert not nn.leftover_namespaces()
    return res


def test_renumbering_events_and_addresses(renumbered):
    res = renumbered
    assert "moved_error" not in res, res["moved_error"] + "\n" + res["logs"]["a"][-3000:]
    a_A, b_A, a_B, b_B = res["a_A"], res["b_A"], res["a_B"], res["b_B"]
    assert a_B and b_B, "no SLAAC address in B: radvd log:\n" + res["radvd_log"]
    for side, old, new in (("a", a_A, a_B), ("b", b_A, b_B)):
        after = res["after"][side]
        kinds = {(e[0], e[1]) for e in after["events"]}
        # the host board reported what the kernel did with the router's advertisements
        assert ("deprecated", old) in kinds, (side, after["events"])
        assert ("added", new) in kinds, (side, after["events"])
        ev = [e for e in after["events"] if e[:2] == ["added", new]][0]
        assert ev[5] == ["stable"] and ev[3] and ev[3] <= 120 and ev[4] <= 600, ev
        # the node's own list: B (stable first), no A
        assert new in after["addresses"] and old not in after["addresses"], after["addresses"]
        assert after["addresses"][0] == new, after["addresses"]
        # the app callback (pnp's log): one line per event
        log = res["logs"][side]
        assert "address deprecated: %s on veth0 (stable;" % old in log, log[-2000:]
        assert "address added: %s on veth0 (stable;" % new in log, log[-2000:]
    # the level stays; traffic went on across the renumbering
    assert res["after"]["a"]["levels"].get(b_A) == "AUTHENTICATED", res["after"]["a"]["levels"]
    before_got = len(res["before"]["a"]["got"])
    assert len(res["after"]["a"]["got"]) > before_got + 50, (before_got, len(res["after"]["a"]["got"]))
    # not one clear datagram between the hosts from AUTHENTICATED until the nodes stop,
    # across the renumbering: every UDP datagram is IKE or ESP on 4500. (Before the SA,
    # zero config lets the first datagram go in clear while it probes: not this test's.)
    hosts = res["ips"]["a"] | res["ips"]["b"]
    between = [r for r in res["udp"] if r[1] in hosts and r[2] in hosts
               and res["t_auth_wall"] <= float(r[0]) < res["t_stop_wall"]]
    assert between, "tcpdump saw nothing between the hosts"
    clear = [r for r in between if not (r[3] == r[4] == "4500" and (r[5] or r[6]))]
    assert clear == [], clear[:5]
    assert res["elapsed"] < 60, res


@pytest.mark.xfail(not mobike_in_node(), strict=False,
                   reason="needs MOBIKE in the node: pnpipsec.node.Node.local_addresses_changed(addrs) "
                          "(issue 12 item 3, another branch); until then the SAs stay on prefix A")
def test_renumbering_moves_sas_by_mobike(renumbered):
    res = renumbered
    a_A, b_A, a_B, b_B = res["a_A"], res["b_A"], res["a_B"], res["b_B"]
    before, after = res["before"], res["after"]

    def ike_pairs(st):
        return sorted((s["spi_i"], s["spi_r"]) for s in st["sas"] if s["state"] == "established")
    # the same IKE SA (one per side, same SPIs), the same CHILD SAs
    assert len(ike_pairs(before["a"])) == 1 and ike_pairs(before["a"]) == ike_pairs(before["b"])
    assert ike_pairs(after["a"]) == ike_pairs(before["a"]) and ike_pairs(after["b"]) == ike_pairs(before["b"])
    assert after["a"]["children"] == before["a"]["children"] and after["b"]["children"] == before["b"]["children"]
    # ... now between the B addresses, both ways
    assert [s["peer"] for s in after["a"]["sas"] if s["state"] == "established"] == [b_B], (after["a"]["sas"], after["a"]["engine"], after["a"]["peer_addrs"], after["b"]["engine"], after["b"]["sas"], after["b"]["addresses"])
    assert [s["peer"] for s in after["b"]["sas"] if s["state"] == "established"] == [a_B], after["b"]["sas"]
    # no new handshake on the wire after the move; ESP between the B addresses
    later = [r for r in res["udp"] if res["t_move_wall"] <= float(r[0]) < res["t_stop_wall"]]
    assert not [r for r in later if r[5] == "34"], "IKE_SA_INIT after the move"
    assert [r for r in later if r[6] and r[1] == a_B and r[2] == b_B], "no ESP from a's B to b's B"
    assert [r for r in later if r[6] and r[1] == b_B and r[2] == a_B], "no ESP from b's B to a's B"
    # the level stayed (the app still names b by its first address: the peer record
    # stays with the address that did IKE_SA_INIT) and little was lost across the move
    assert after["a"]["levels"].get(b_A) == "AUTHENTICATED", after["a"]["levels"]
    sent, got = after["a"]["sent"], after["a"]["got"]
    lost = [n for n in range(max(1, min(got or [1])), sent - 10) if n not in set(got)]
    print("renumbering: %d sent, %d echoed, %d lost across the move" % (sent, len(got), len(lost)))
    assert len(lost) <= 25, lost
