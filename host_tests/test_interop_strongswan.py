"""Our node <-> strongSwan charon 5.9.8 (kernel-libipsec), in network namespaces.

The judge is not our code: charon must accept our IKE and ESP, the datagram must come
back through its TUN device, and tshark, fed only with OUR key log, must find every
ESP and IKE ICV correct (a flipped key bit must make it say otherwise).
charon's libipsec does tunnel mode only, so our node runs in tunnel mode here.
"""

import os
import subprocess
import time

import pytest

from host_tests.peers import capture as cap
from host_tests.peers import charon as ch
from host_tests.peers import netns as nn
from host_tests.peers import require_real_peers
from host_tests.peers.udpapp import CLIENT, ECHO_SERVER

PSK = "interop-psk-0123456789abcdef"
APP_PORT = 9999


@pytest.fixture(scope="module")
def env_ok():
    require_real_peers(charon=True, capture=True)


@pytest.fixture
def net(env_ok):
    with nn.Netns(2, net_id=7) as n:
        yield n
    assert not nn.leftover_namespaces()


@pytest.fixture
def charon(net, tmp_path):
    c = ch.Charon(net.ns[1], str(tmp_path / "charon"))
    c.start()
    yield c
    c.stop()


def node_config(tmp_path, me, peer, fam, auth, peer_pub=None):
    lines = [
        f'state = "{tmp_path}/state"',
        f'addresses = ["{me.addr(fam)}"]',
        f'keylog = "{tmp_path}/keys"',
        "[[peer]]",
        f'address = "{peer.addr(fam)}"',
        f'auth = "{auth}"',
        'local_id = "fqdn:node.example"',
        'remote_id = "fqdn:charon.example"',
        'mode = "tunnel"',
    ]
    if auth == "psk":
        lines.append(f'psk = "{PSK}"')
    if auth == "pubkey":
        lines.append(f'peer_pubkey = "{peer_pub}"')
    path = tmp_path / "node.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def our_pubkey(net, tmp_path):
    net.ns[0].run([nn.VENV_PYTHON, "-m", "pnp.cli", "keygen", "--state", f"{tmp_path}/state"])
    return f"{tmp_path}/state/identity.pub.pem"


def charon_conn(charon, net, fam, auth, tmp_path, initiator):
    me, peer = net.ns[1], net.ns[0]
    kw = dict(local_id="charon.example", remote_id="node.example", children={"net": {}})
    if auth == "psk":
        kw["psk"] = PSK
    else:
        priv, pub = ch.gen_ed25519(str(tmp_path / "ck"), "charon")
        kw.update(local_key=priv, local_pubkey=pub, remote_pubkey=our_pubkey(net, tmp_path))
    charon.add_conn("node", me.addr(fam), peer.addr(fam) if initiator else "%any", **kw)
    charon.load()
    return kw.get("local_pubkey")


def judge(pcap, keydir, tmp_path):
    """tshark with our key log: every ICV right; with one key bit flipped, none."""
    res = cap.check_decryption(pcap, keydir)
    assert res["esp"] >= 2 and res["esp_good"] == res["esp"] and res["esp_bad"] == 0, res
    assert res["ike_encrypted"] >= 2 and res["ike_correct"] == res["ike_encrypted"], res
    bad = str(tmp_path / "badkeys")
    os.makedirs(bad, exist_ok=True)
    for name in ("esp_sa", "ikev2_decryption_table"):
        text = open(os.path.join(keydir, name)).read()
        flipped = []
        for line in text.splitlines():
            parts = line.split(",")
            for k in ((7,) if name == "esp_sa" else (5, 6)):   # the integrity keys
                v = parts[k].strip('"')
                pre = "0x" if v.startswith("0x") else ""
                h = v[len(pre):]
                h = "%x" % (int(h[0], 16) ^ 1) + h[1:]
                parts[k] = ('"%s%s"' if parts[k].startswith('"') else "%s%s") % (pre, h)
            flipped.append(",".join(parts))
        open(os.path.join(bad, name), "w").write("\n".join(flipped) + "\n")
    res_bad = cap.check_decryption(pcap, bad)
    assert res_bad["esp_good"] == 0 and res_bad["esp_bad"] == res["esp"], res_bad
    assert res_bad["ike_correct"] == 0, res_bad
    return res


@pytest.mark.parametrize("fam,auth", [(6, "psk"), (4, "psk"), (6, "pubkey"), (4, "pubkey")],
                         ids=["ipv6-psk", "ipv4-psk", "ipv6-ed25519", "ipv4-ed25519"])
def test_we_initiate_charon_responds(net, charon, tmp_path, fam, auth):
    ours, theirs = net.ns
    cpub = charon_conn(charon, net, fam, auth, tmp_path, initiator=False)
    cfg = node_config(tmp_path, ours, theirs, fam, auth, peer_pub=cpub)
    srv = theirs.popen_python(["-c", ECHO_SERVER, theirs.addr(fam), str(APP_PORT), "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert srv.stdout.readline().strip() == "ready"
    pcap = str(tmp_path / "we-init.pcap")
    with cap.Capture(ours, "veth0", "udp", pcap):
        r = ours.run([nn.VENV_PYTHON, "-m", "pnp.cli", "send", "--config", cfg,
                      theirs.addr(fam), str(APP_PORT), "hello-charon", "--timeout", "10"], check=False)
    assert r.returncode == 0, r.stderr + charon.log_text()[-3000:]
    assert r.stdout.strip() == "echo:hello-charon"
    assert "level AUTHENTICATED" in r.stderr
    sout, _ = srv.communicate(timeout=10)
    assert f"got hello-charon {ours.addr(fam)}" in sout   # charon's kernel saw our inner packet
    log = charon.log_text()
    assert "IKE_SA node[1] established between" in log            # charon, as responder
    assert "received DELETE for IKE_SA node[1]" in log             # our node said goodbye
    assert not charon.list_sas()                                   # ... and charon freed it
    assert cap.tshark_fields(pcap, ["frame.number"], display_filter=f"udp.port == {APP_PORT}") == []
    judge(pcap, str(tmp_path / "keys"), tmp_path)
    stats = cap.handshake_stats(pcap)
    print(f"\n[ours -> charon, {auth}, IPv{fam}] wire time {stats['wire_time'] * 1000:.2f} ms, "
          f"{stats['bytes']} UDP payload bytes {[m[2] for m in stats['messages']]}")


@pytest.mark.parametrize("fam,auth", [(6, "psk"), (4, "pubkey")], ids=["ipv6-psk", "ipv4-ed25519"])
def test_charon_initiates_we_respond_and_child_rekey(net, charon, tmp_path, fam, auth):
    ours, theirs = net.ns
    cpub = charon_conn(charon, net, fam, auth, tmp_path, initiator=True)
    cfg = node_config(tmp_path, ours, theirs, fam, auth, peer_pub=cpub)
    node = ours.popen_python(["-m", "pnp.cli", "node", "--config", cfg, "--echo", str(APP_PORT)],
                             stdout=subprocess.PIPE, stderr=open(tmp_path / "node.err", "w"), text=True)
    assert node.stdout.readline().strip() == "ready"
    pcap = str(tmp_path / "they-init.pcap")
    try:
        with cap.Capture(ours, "veth0", "udp", pcap):
            charon.initiate("net", "node", timeout=10)
            out = theirs.run([nn.VENV_PYTHON, "-c", CLIENT, ours.addr(fam), str(APP_PORT), "ping-1"])
            assert out.stdout.strip() == "ping-1"   # our node echoed it (unchanged) through the tunnel
            before = charon.list_sas()[0]["children"][0]["spi_in"]
            charon.rekey_child("net")
            charon.wait_for(lambda sas: any(c["state"] == "INSTALLED" and c["spi_in"] != before
                                            for c in sas[0]["children"]), timeout=5)
            time.sleep(0.2)
            out = theirs.run([nn.VENV_PYTHON, "-c", CLIENT, ours.addr(fam), str(APP_PORT), "ping-2"])
            assert out.stdout.strip() == "ping-2"   # traffic on the rekeyed CHILD SA
            kids = charon.list_sas()[0]["children"]
            assert [c for c in kids if c["state"] == "INSTALLED" and c["spi_in"] != before]
            # charon rekeys the IKE SA: our node answers as responder, children move over.
            old_ike = charon.list_sas()[0]["spi_i"]
            charon.rekey_ike("node")
            charon.wait_for(lambda sas: len(sas) == 1 and sas[0]["spi_i"] != old_ike
                            and sas[0]["state"] == "ESTABLISHED", timeout=5)
            time.sleep(0.2)
            out = theirs.run([nn.VENV_PYTHON, "-c", CLIENT, ours.addr(fam), str(APP_PORT), "ping-3"])
            assert out.stdout.strip() == "ping-3"
    finally:
        node.terminate()
        node.wait(timeout=5)
    assert cap.tshark_fields(pcap, ["frame.number"], display_filter=f"udp.port == {APP_PORT}") == []
    judge(pcap, str(tmp_path / "keys"), tmp_path)


OUR_REKEYS = r"""
import asyncio, sys
from pnp import config
from pnp.runtime import start_node

async def main(cfg_path, peer, port):
    node = await start_node(config.load(cfg_path), verbose=False)
    ep = node.endpoint(40000)
    async def roundtrip(text):
        await ep.send(text.encode(), (peer, port))
        data, _, _ = await asyncio.wait_for(ep.recv(), 5)
        print(data.decode(), flush=True)
    await node.connect(peer, timeout=10)
    await roundtrip("before")
    old_child = node.out[peer].child
    node.engine.rekey_child(old_child, node.board.now_ms()); node._pump()
    for _ in range(100):
        await asyncio.sleep(0.05)
        if node.out[peer].child is not old_child and old_child.spi_in not in node.children:
            break
    print("child rekeyed", node.out[peer].child.spi_out != old_child.spi_out, flush=True)
    await roundtrip("after-child-rekey")
    old_ike = node.ike_up[peer]
    node.engine.rekey_ike(old_ike, node.board.now_ms()); node._pump()
    for _ in range(100):
        await asyncio.sleep(0.05)
        if node.ike_up.get(peer) is not None and node.ike_up[peer] is not old_ike:
            break
    print("ike rekeyed", node.ike_up[peer].spi_i != old_ike.spi_i, flush=True)
    await roundtrip("after-ike-rekey")
    await node.stop()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def test_we_rekey_child_and_ike_toward_charon(net, charon, tmp_path):
    ours, theirs = net.ns
    charon_conn(charon, net, 6, "psk", tmp_path, initiator=False)
    cfg = node_config(tmp_path, ours, theirs, 6, "psk")
    srv = theirs.popen_python(["-c", ECHO_SERVER, theirs.addr(6), str(APP_PORT), "3"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert srv.stdout.readline().strip() == "ready"
    pcap = str(tmp_path / "our-rekeys.pcap")
    with cap.Capture(ours, "veth0", "udp", pcap):
        r = ours.run([nn.VENV_PYTHON, "-c", OUR_REKEYS, cfg, theirs.addr(6), str(APP_PORT)], check=False)
    assert r.returncode == 0, r.stderr + charon.log_text()[-3000:]
    assert r.stdout.split("\n")[:5] == ["echo:before", "child rekeyed True", "echo:after-child-rekey",
                                        "ike rekeyed True", "echo:after-ike-rekey"]
    log = charon.log_text()
    assert log.count("CHILD_SA net{") >= 2 and "rekeyed" in log.lower()   # charon saw both rekeys
    assert "received DELETE for IKE_SA" in log and not charon.list_sas()  # our node's goodbye
    res = judge(pcap, str(tmp_path / "keys"), tmp_path)
    assert res["ike_encrypted"] >= 8   # IKE_AUTH, CREATE_CHILD_SA x4, INFORMATIONAL deletes
