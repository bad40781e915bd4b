"""MOBIKE (RFC 4555) against strongSwan charon 5.9.8 (kernel-libipsec), in network
namespaces (issue 12, items 3 and 6).

- charon (mobike = yes, original initiator) moves its address: a new one is added, the
  old one removed; charon sends UPDATE_SA_ADDRESSES from the new address, our `pnp
  node` checks return routability and follows: same IKE and ESP SPIs, the datagram
  stream through the tunnel goes on. The datagrams lost and the time the stream stood
  still are measured and printed.
- The reverse: our node (original initiator) moves, is told so
  (node.local_addresses_changed), sends UPDATE_SA_ADDRESSES, charon follows.

charon's libipsec does tunnel mode only; the inner addresses live on `lo` so that they
outlast the outer ones that move.
"""

import subprocess
import time

import pytest

from host_tests.peers import charon as ch
from host_tests.peers import netns as nn
from host_tests.peers import require_real_peers
from host_tests.peers.udpapp import ECHO_SERVER

PSK = "interop-mobike-0123456789abcdef"
APP_PORT = 9999
CHARON_INNER = "fd00:99:e::2"
OUR_INNER = "fd00:99:f::1"

# Sends a numbered datagram every `gap` ms for `secs` s from `src`; reports per
# datagram when it was sent and whether its echo came back.
STREAM = r"""
import socket, sys, time, select
dst, port, secs, gap = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]) / 1000
src = sys.argv[5] if len(sys.argv) > 5 else None
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
if src:
    s.bind((src, 0))
s.setblocking(False)
print("ready", flush=True)
t0 = time.monotonic()
sent, got = {}, {}
n = 0
nxt = t0
while time.monotonic() - t0 < secs + 1.0:
    now = time.monotonic()
    if now >= nxt and now - t0 < secs:
        try:
            s.sendto(b"seq:%d" % n, (dst, port))
        except OSError:
            pass
        sent[n] = now - t0
        n += 1
        nxt += gap
    r, _, _ = select.select([s], [], [], 0.005)
    if r:
        data = s.recv(2000)
        if data.startswith(b"seq:"):          # (pnp node --echo sends it back unchanged)
            got[int(data[4:])] = time.monotonic() - t0
for i in range(n):
    print("%d %.4f %s" % (i, sent[i], ("%.4f" % got[i]) if i in got else "-"), flush=True)
"""


def stream_result(text):
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].isdigit():
            rows.append((int(parts[0]), float(parts[1]), None if parts[2] == "-" else float(parts[2])))
    return rows


def outage(rows, t_move):
    """(datagrams lost, seconds from the move until the first echo of a datagram sent
    after it)."""
    lost = sum(1 for r in rows if r[2] is None)
    after = [r for r in rows if r[1] >= t_move and r[2] is not None]
    lost_after = [r for r in rows if r[1] >= t_move and r[2] is None]
    # the last datagram lost after the move: until its successor's echo, nothing came
    took = None
    if lost_after:
        nxt = [r for r in after if r[0] > lost_after[-1][0]]
        took = (nxt[0][2] - t_move) if nxt else None
    elif after:
        took = after[0][2] - t_move
    return lost, took


@pytest.fixture(scope="module")
def env_ok():
    require_real_peers(charon=True, capture=False)


@pytest.fixture
def net(env_ok):
    with nn.Netns(2, net_id=12) as n:
        yield n
    assert not nn.leftover_namespaces()


@pytest.fixture
def charon(net, tmp_path):
    c = ch.Charon(net.ns[1], str(tmp_path / "charon"))
    c.start()
    yield c
    c.stop()


def new_addr(ns):
    return ns.addr(6)[:-1] + "1" + ns.addr(6)[-1]     # fd00:99:c::2 -> fd00:99:c::12


def move_address(ns):
    """Add the new address, then remove the old one (what a roaming host sees)."""
    ns.run(["ip", "-6", "addr", "add", new_addr(ns) + "/64", "dev", ns.ifname, "nodad"])
    ns.run(["ip", "-6", "addr", "del", ns.addr(6) + "/64", "dev", ns.ifname])


def node_config(tmp_path, me, peer, remote_ts=None, local_ts=None, addresses=None):
    lines = [
        f'state = "{tmp_path}/state"',
        f'addresses = ["{addresses or me.addr(6)}"]',
        "[[peer]]",
        f'address = "{peer.addr(6)}"',
        'auth = "psk"',
        f'psk = "{PSK}"',
        'local_id = "fqdn:node.example"',
        'remote_id = "fqdn:charon.example"',
        'mode = "tunnel"',
    ]
    if remote_ts:
        lines.append(f'remote_ts = ["{remote_ts}"]')
    if local_ts:
        lines.append(f'local_ts = ["{local_ts}"]')
    path = tmp_path / "node.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_charon_moves_we_follow(net, charon, tmp_path):
    ours, theirs = net.ns
    theirs.run(["ip", "-6", "addr", "add", CHARON_INNER + "/128", "dev", "lo", "nodad"])
    charon.add_conn("node", "%any", ours.addr(6), psk=PSK, local_id="charon.example",
                    remote_id="node.example", mobike=True,
                    children={"net": {"local_ts": CHARON_INNER + "/128",
                                      "remote_ts": ours.addr(6) + "/128"}})
    charon.load()
    cfg = node_config(tmp_path, ours, theirs, remote_ts=CHARON_INNER + "/128")
    node = ours.popen_python(["-m", "pnp.cli", "node", "--config", cfg, "--echo", str(APP_PORT), "-v"],
                             stdout=subprocess.PIPE, stderr=open(tmp_path / "node.err", "w"), text=True)
    try:
        assert node.stdout.readline().strip() == "ready"
        charon.initiate("net", "node", timeout=10)
        before = charon.list_sas()[0]
        assert before["children"], before
        cli = theirs.popen_python(["-c", STREAM, ours.addr(6), str(APP_PORT), "4", "20", CHARON_INNER],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert cli.stdout.readline().strip() == "ready"
        t0 = time.monotonic()
        time.sleep(1.0)
        t_move = time.monotonic() - t0
        move_address(theirs)
        out, err = cli.communicate(timeout=20)
        rows = stream_result(out)
        after = charon.list_sas()
    finally:
        node.terminate()
        node.wait(timeout=5)
    log = charon.log_text()
    nerr = open(tmp_path / "node.err").read()
    assert "N(UPD_SA_ADDR)" in log and "parsed INFORMATIONAL request 0 [ N(COOKIE2) ]" in log, log[-3000:]
    assert "local host is not behind NAT anymore" not in log     # NAT-D: still a NAT
    assert log.count("initiating IKE_SA") == 1                       # no new handshake
    assert len(after) == 1, after
    a = after[0]
    assert (a["spi_i"], a["spi_r"]) == (before["spi_i"], before["spi_r"])      # same IKE SA
    # charon's kernel-libipsec cannot update an installed SA's addresses, so charon
    # rekeys its CHILD SA after a move (our node answers as responder); the IKE SA,
    # and in memory (test_mobike_mp) the CHILD SAs, keep their SPIs.
    assert [c for c in a["children"] if c["state"] == "INSTALLED"], (a, rows[-20:])
    assert new_addr(theirs) in str(a), a
    assert f"moved: {theirs.addr(6)} -> {new_addr(theirs)}" in nerr, nerr[-3000:]
    lost, took = outage(rows, t_move)
    late = [r for r in rows if r[1] > t_move + 1.5]
    assert late and all(r[2] is not None for r in late), rows            # it goes on
    print(f"\n[charon moves, we follow] {len(rows)} datagrams every 20 ms, lost {lost}, "
          f"the stream flowed again {took * 1000:.0f} ms after the old address went")


OUR_MOVE = r"""
import asyncio, subprocess, sys, time
from pnp import config
from pnp.runtime import start_node

async def main(cfg_path, peer, port, ifname, old, new):
    node = await start_node(config.load(cfg_path), verbose=True)
    ep = node.endpoint(40000)
    got = {}
    async def rx():
        while True:
            data, _, _ = await ep.recv()
            got[data] = time.monotonic()
    task = asyncio.create_task(rx())
    await node.connect(peer, timeout=10)
    sa = node.ike_up[peer]
    print("mobike", sa.mobike, flush=True)
    spis = (sa.spi_i, sa.spi_r, node.out[peer].child.spi_in, node.out[peer].child.spi_out)
    sent = {}
    t0 = time.monotonic()
    t_move = None
    for i in range(200):
        if i == 50:
            subprocess.run(["ip", "-6", "addr", "add", new + "/64", "dev", ifname, "nodad"], check=True)
            subprocess.run(["ip", "-6", "addr", "del", old + "/64", "dev", ifname], check=True)
            t_move = time.monotonic()
            node.local_addresses_changed([new])
        msg = b"seq:%d" % i
        sent[b"echo:" + msg] = time.monotonic()
        try:
            await ep.send(msg, (peer, port), timeout=1)
        except Exception as e:
            print("send", i, e, file=sys.stderr, flush=True)
        await asyncio.sleep(0.02)
    await asyncio.sleep(1)
    lost = len([k for k in sent if k not in got])
    after = [got[k] for k in sent if k in got and sent[k] >= t_move]
    took = (min(after) - t_move) if after else -1
    tail = [k for k in sent if sent[k] > t_move + 1.5]
    sa2 = node.ike_up.get(peer)
    same = sa2 is sa and (sa.spi_i, sa.spi_r) == spis[:2]
    print("same", same, flush=True)
    # (charon's kernel-libipsec cannot update SA addresses: it rekeys the CHILD SA)
    print("child same", (node.out[peer].child.spi_in, node.out[peer].child.spi_out) == spis[2:],
          flush=True)
    print("tail", all(k in got for k in tail) and len(tail) > 0, flush=True)
    print("lost %d took %.0f ms" % (lost, took * 1000), flush=True)
    print("stats", node.engine.stats.get("mobike_update_sent"), flush=True)
    task.cancel()
    await node.stop()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]))
"""


def test_we_move_charon_follows(net, charon, tmp_path):
    ours, theirs = net.ns
    ours.run(["ip", "-6", "addr", "add", OUR_INNER + "/128", "dev", "lo", "nodad"])
    charon.add_conn("node", theirs.addr(6), "%any", psk=PSK, local_id="charon.example",
                    remote_id="node.example", mobike=True,
                    children={"net": {"local_ts": theirs.addr(6) + "/128",
                                      "remote_ts": OUR_INNER + "/128"}})
    charon.load()
    # echo server on charon's side, answering through the tunnel to our inner address
    srv = theirs.popen_python(["-c", ECHO_SERVER, theirs.addr(6), str(APP_PORT), "200"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert srv.stdout.readline().strip() == "ready"
    cfg = node_config(tmp_path, ours, theirs, local_ts=OUR_INNER + "/128")
    r = ours.run([nn.VENV_PYTHON, "-c", OUR_MOVE, cfg, theirs.addr(6), str(APP_PORT), ours.ifname,
                  ours.addr(6), new_addr(ours)], check=False, timeout=60)
    srv.kill()
    log = charon.log_text()
    assert r.returncode == 0, r.stderr[-3000:] + log[-3000:]
    lines = r.stdout.splitlines()
    open(tmp_path / "node.err", "w").write(r.stderr)
    assert "mobike True" in lines and "same True" in lines and "tail True" in lines, r.stdout + r.stderr[-2000:]
    assert "N(UPD_SA_ADDR)" in log and new_addr(ours) in log, log[-3000:]
    assert log.count("initiating IKE_SA") == 0 and log.count("IKE_SA_INIT request 0") == 1   # one handshake
    print(f"\n[we move, charon follows] {[x for x in lines if x.startswith('lost')][0]} "
          f"(200 datagrams every 20 ms; {[x for x in lines if x.startswith('child same')][0]})")
