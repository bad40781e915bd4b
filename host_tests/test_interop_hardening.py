"""Hardening against real peers (issue 8): a gateway that crashes and comes back, a host
behind a gateway's tunnel, and a responder that sees many short-lived initiators.

Judges we did not write: charon's own SA list and log, tcpdump captures read by tshark."""

import os
import signal
import subprocess
import time

import pytest

from host_tests.peers import capture as cap
from host_tests.peers import charon as ch
from host_tests.peers import netns as nn
from host_tests.peers import require_real_peers
from host_tests.peers import statusnode

PSK = "hardening-psk-0123456789abcdef"
APP_PORT = 9999
BEHIND = "fd00:b0:2::2"          # a host on charon's side, reached through its tunnel

# A plain UDP client bound to a source address: one datagram, print the answer.
CLIENT_FROM = r"""
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
s.settimeout(5)
s.sendto(sys.argv[4].encode(), (sys.argv[2], int(sys.argv[3])))
print(s.recvfrom(2000)[0].decode(), flush=True)
"""


@pytest.fixture(scope="module")
def env_ok():
    require_real_peers(charon=True, capture=True)


@pytest.fixture
def net(env_ok):
    with nn.Netns(2, net_id=8) as n:
        yield n
    assert not nn.leftover_namespaces()


def node_toml(tmp_path, me, peer, extra=()):
    lines = [f'state = "{tmp_path}/state"', f'addresses = ["{me.addr(6)}"]',
             "[[peer]]", f'address = "{peer.addr(6)}"', 'auth = "psk"', f'psk = "{PSK}"',
             'local_id = "fqdn:node.example"', 'remote_id = "fqdn:charon.example"',
             'mode = "tunnel"'] + list(extra)
    path = tmp_path / "node.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def start_status_node(ns, cfg, status, tmp_path):
    p = ns.popen_python(["-m", "host_tests.peers.statusnode", "--config", cfg, "--status",
                         status, "--echo", str(APP_PORT)], stdout=subprocess.PIPE,
                        stderr=open(tmp_path / "node.err", "w"), text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def wait_status(path, pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    st = None
    while time.monotonic() < deadline:
        try:
            st = statusnode.read(path)
            if pred(st):
                return st
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return st


def test_a_gateway_that_crashes_ten_times_joins_at_once_each_time(net, tmp_path):
    """Before: INITIAL_CONTACT was ignored and after 4 restarts the gateway's IKE_SA_INIT
    was dropped (drop_per_host) for about 50 minutes."""
    ours, theirs = net.ns
    cfg = node_toml(tmp_path, ours, theirs)
    status = str(tmp_path / "status.json")
    node = start_status_node(ours, cfg, status, tmp_path)
    c = None
    try:
        for i in range(10):
            c = ch.Charon(theirs, str(tmp_path / ("charon%d" % i)))
            c.start()
            c.add_conn("node", theirs.addr(6), ours.addr(6), psk=PSK, local_id="charon.example",
                       remote_id="node.example", children={"net": {}})
            c.load()
            t0 = time.monotonic()
            r = c.initiate("net", "node", timeout=10, check=False)
            assert r.returncode == 0, (i, r.stdout, c.log_text()[-2000:])
            assert time.monotonic() - t0 < 5, i               # at once, not after a back-off
            sas = c.list_sas()
            assert len(sas) == 1 and sas[0]["state"] == "ESTABLISHED"
            # (the status file is rewritten every 0.1 s: wait for this round's snapshot)
            st = wait_status(status, lambda s: s["engine"].get("initial_contact", 0) == i
                             and s["established_with"])
            assert st["established_with"] == {theirs.addr(6): 1}, (i, st)
            c.proc.send_signal(signal.SIGKILL)                 # crash: no DELETE
            c.proc.wait(timeout=5)
            c.proc = None
        st = statusnode.read(status)
        assert st["engine"].get("initial_contact", 0) == 9, st["engine"]   # one per restart
        assert "drop_full" not in st["engine"] and st["child_sas"] <= 2
    finally:
        if c is not None and c.proc is not None:
            c.stop()
        node.terminate()
        node.wait(timeout=10)


def test_a_host_behind_the_gateway_gets_its_replies_through_the_tunnel(net, tmp_path):
    """Before: the echo to fd00:b0:2::2 (arrived through the tunnel at level 2) left in
    clear: the send path looked SAs up by the outer address only."""
    ours, theirs = net.ns
    theirs.run(["ip", "-6", "addr", "add", BEHIND + "/64", "dev", "lo", "nodad"])
    cfg = node_toml(tmp_path, ours, theirs, ['remote_ts = ["fd00:b0:2::/64"]'])
    status = str(tmp_path / "status.json")
    node = start_status_node(ours, cfg, status, tmp_path)
    c = ch.Charon(theirs, str(tmp_path / "charon"))
    c.start()
    pcap = str(tmp_path / "behind.pcap")
    try:
        c.add_conn("node", theirs.addr(6), ours.addr(6), psk=PSK, local_id="charon.example",
                   remote_id="node.example",
                   children={"net": {"local_ts": "fd00:b0:2::/64", "remote_ts": ours.addr(6) + "/128"}})
        c.load()
        with cap.Capture(ours, "veth0", "udp", pcap):
            r = c.initiate("net", "node", timeout=10, check=False)
            assert r.returncode == 0, r.stdout + c.log_text()[-2000:]
            for i in range(3):
                out = theirs.run([nn.VENV_PYTHON, "-c", CLIENT_FROM, BEHIND, ours.addr(6),
                                  str(APP_PORT), "behind-%d" % i], check=False)
                assert out.stdout.strip() == "behind-%d" % i, out.stderr
        kids = c.list_sas()[0]["children"]
        assert sum(int(k["packets_in"]) for k in kids) >= 3          # our replies, in ESP
        assert sum(int(k["packets_out"]) for k in kids) >= 3
    finally:
        c.stop()
        node.terminate()
        node.wait(timeout=10)
    clear = cap.tshark_fields(pcap, ["frame.number"], display_filter=f"udp.port == {APP_PORT}")
    assert clear == [], "datagrams in clear on the app port: %s" % clear
    esp = cap.tshark_fields(pcap, ["frame.number"], display_filter="esp")
    assert len(esp) >= 6


def test_twenty_connects_in_a_row_against_one_responder(net, tmp_path):
    """Before: each `pnp connect` queued its DELETE behind the proof exchange and exited,
    the responder kept every SA, and the 5th connect failed (no SA after 10 s)."""
    ours, theirs = net.ns
    resp = tmp_path / "resp.toml"
    resp.write_text(f'state = "{tmp_path}/rstate"\nike_port = 4500\nnatt_port = 4500\n'
                    "zero_config = true\n")
    init = tmp_path / "init.toml"
    init.write_text(f'state = "{tmp_path}/istate"\nike_port = 4500\nnatt_port = 4500\n'
                    "zero_config = true\n")
    status = str(tmp_path / "status.json")
    node = theirs.popen_python(["-m", "host_tests.peers.statusnode", "--config", str(resp),
                                "--status", status], stdout=subprocess.PIPE,
                               stderr=open(tmp_path / "resp.err", "w"), text=True)
    assert node.stdout.readline().strip() == "ready"
    try:
        most = 0
        for i in range(20):
            r = ours.run([nn.VENV_PYTHON, "-m", "pnp.cli", "connect", "--config", str(init),
                          theirs.addr(6), "--timeout", "10"], check=False)
            assert r.returncode == 0, (i, r.stderr)
            assert "IKE SA up" in r.stdout
            st = wait_status(status, lambda s: not s["established_with"], timeout=2)
            most = max(most, sum(st["established_with"].values()))
        st = statusnode.read(status)
        assert most == 0, most          # every connect's DELETE arrived: nothing lingers
        assert st["engine"].get("drop_full", 0) == 0
    finally:
        node.terminate()
        node.wait(timeout=10)
