"""Ours <-> ours across a real link: two `pnp` nodes in network namespaces, IPv6 first.

Transport mode (our nodes' mode), UDP 500/4500 as on a LAN; tshark, fed only the
initiator's key log, judges every ESP and IKE ICV and sees no app datagram in clear.
"""

import subprocess

import pytest

from host_tests.peers import capture as cap
from host_tests.peers import netns as nn
from host_tests.peers import require_real_peers

APP = 7000


@pytest.fixture
def net():
    require_real_peers(charon=False, capture=True)
    with nn.Netns(2, net_id=6) as n:
        yield n
    assert not nn.leftover_namespaces()


def config(tmp_path, name, peer_addr, auth):
    lines = [f'state = "{tmp_path}/{name}"', f'keylog = "{tmp_path}/{name}-keys"']
    if auth == "zero":
        lines.append("zero_config = true")          # nothing about the peer at all
    else:
        lines += ["[[peer]]", f'address = "{peer_addr}"', 'auth = "psk"', 'psk = "ours-netns-psk-42"',
                  f'local_id = "fqdn:{name}.example"',
                  f'remote_id = "fqdn:{"b" if name == "a" else "a"}.example"']
    p = tmp_path / f"{name}.toml"
    p.write_text("\n".join(lines) + "\n")
    return str(p)


@pytest.mark.parametrize("fam,auth", [(6, "psk"), (4, "psk"), (6, "zero")],
                         ids=["ipv6-psk", "ipv4-psk", "ipv6-zero-config"])
def test_two_of_our_nodes_across_a_link(net, tmp_path, fam, auth):
    a, b = net.ns
    err = open(tmp_path / "b.err", "w")
    node = b.popen_python(["-m", "pnp.cli", "node", "--config", config(tmp_path, "b", a.addr(fam), auth),
                           "--echo", str(APP)], stdout=subprocess.PIPE, stderr=err, text=True)
    pcap = str(tmp_path / "link.pcap")
    try:
        assert node.stdout.readline().strip() == "ready"
        cfg = config(tmp_path, "a", b.addr(fam), auth)
        with cap.Capture(a, "veth0", "udp", pcap):
            if auth == "zero":
                # zero configuration: `connect` brings the SA up and waits for the proof
                r = a.run([nn.VENV_PYTHON, "-m", "pnp.cli", "connect", "--config", cfg, b.addr(fam),
                           "--hold", "0.5"], check=False)
                assert r.returncode == 0, r.stderr
            r = a.run([nn.VENV_PYTHON, "-m", "pnp.cli", "send", "--config", cfg, b.addr(fam), str(APP),
                       "across the link"], check=False)
    finally:
        node.terminate()
        node.wait(timeout=5)
    assert r.returncode == 0, r.stderr + open(tmp_path / "b.err").read()
    assert r.stdout.strip() == "across the link"
    want = "AUTHENTICATED"        # PSK; and zero-config NULL rises by the proof (TOFU)
    assert f"reply from {b.addr(fam)} port {APP} at level {want}" in r.stderr, r.stderr
    assert cap.tshark_fields(pcap, ["frame.number"], display_filter=f"udp.port == {APP}") == []
    res = cap.check_decryption(pcap, str(tmp_path / "a-keys"))
    assert res["esp"] >= 2 and res["esp_good"] == res["esp"], res
    assert res["ike_encrypted"] >= 2 and res["ike_correct"] == res["ike_encrypted"], res
    # transport mode: the decrypted ESP payload is our UDP datagram itself
    inner = cap.tshark_fields(pcap, ["udp.dstport"], options=cap.ESP_OPTIONS,
                              keydir=str(tmp_path / "a-keys"), display_filter="esp")
    assert any(str(APP) in row[0].split(",") for row in inner), inner
