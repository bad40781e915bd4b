"""NULL authentication (RFC 7619) judged by libreswan 4.10's pluto, in network namespaces.

strongSwan has no NULL auth, so pluto is the judge. This kernel has no ESP, so pluto
can never install a CHILD SA: both directions use childless IKE SAs (RFC 6023).
"""

import subprocess

import pytest

from host_tests.peers import capture as cap
from host_tests.peers import netns as nn
from host_tests.peers import pluto as pl
from host_tests.peers import require, require_real_peers

OK = "authenticated peer using authby=null"

# Our CLI with every AUTH we compute corrupted by one bit: the negative control.
CORRUPT_AUTH = r"""
import sys
from pnpipsec.ike import auth
_make = auth.make
def _bad(*a, **k):
    method, data = _make(*a, **k)
    return method, bytes([data[0] ^ 1]) + data[1:]
auth.make = _bad
from pnp.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def env_ok():
    require_real_peers(charon=False, pluto=True, capture=True)
    require(pl.available())


@pytest.fixture
def net(env_ok):
    with nn.Netns(2, net_id=8) as n:
        yield n
    assert not nn.leftover_namespaces()


@pytest.fixture
def pluto(net, tmp_path):
    p = pl.Pluto(net.ns[1], str(tmp_path / "pluto"))
    yield p
    p.stop()


def node_config(tmp_path, me, peer, fam):
    path = tmp_path / "node.toml"
    path.write_text("\n".join([
        f'state = "{tmp_path}/state"',
        f'keylog = "{tmp_path}/keys"',
        "[[peer]]",
        f'address = "{peer.addr(fam)}"',
        'auth = "null"',
        "childless = true",
    ]) + "\n")
    return str(path)


@pytest.mark.parametrize("fam", [6, 4], ids=["ipv6", "ipv4"])
def test_we_initiate_pluto_accepts_null_auth(net, pluto, tmp_path, fam):
    ours, theirs = net.ns
    pluto.add_conn("null", theirs.addr(fam), "%any")
    pluto.start()
    cfg = node_config(tmp_path, ours, theirs, fam)
    pcap = str(tmp_path / "null.pcap")
    with cap.Capture(ours, "veth0", "udp", pcap):
        r = ours.run([nn.VENV_PYTHON, "-m", "pnp.cli", "connect", "--config", cfg, theirs.addr(fam)], check=False)
    assert r.returncode == 0, r.stderr + pluto.log_text()[-2000:]
    assert "auth null, level ENCRYPTED, 0 CHILD SA(s)" in r.stdout
    assert pluto.wait_log(OK, timeout=5), pluto.log_text()[-2000:]
    assert "childless" in pluto.log_text()
    stats = cap.handshake_stats(pcap)
    print(f"\n[ours -> pluto, NULL, IPv{fam}] wire {stats}")
    # tshark with our key log decrypts pluto's IKE_AUTH too (ICV correct both ways)
    res = cap.check_decryption(pcap, str(tmp_path / "keys"))
    assert res["ike_encrypted"] >= 2 and res["ike_correct"] == res["ike_encrypted"], res


def test_corrupted_auth_is_refused_by_pluto(net, pluto, tmp_path):
    ours, theirs = net.ns
    pluto.add_conn("null", theirs.addr(6), "%any")
    pluto.start()
    cfg = node_config(tmp_path, ours, theirs, 6)
    r = ours.run([nn.VENV_PYTHON, "-c", CORRUPT_AUTH, "connect", "--config", cfg, theirs.addr(6),
                  "--timeout", "5"], check=False)
    assert r.returncode == 1
    assert "AUTHENTICATION_FAILED" in r.stderr, r.stderr
    log = pluto.log_text()
    assert "authentication failed" in log.lower()
    assert OK not in log


@pytest.mark.parametrize("fam", [6, 4], ids=["ipv6", "ipv4"])
def test_pluto_initiates_we_respond_null_auth(net, pluto, tmp_path, fam):
    ours, theirs = net.ns
    pluto.add_conn("null", theirs.addr(fam), ours.addr(fam))
    pluto.start()
    pluto.impair("omit-v2-ike-auth-child")   # childless initiator (no kernel ESP here)
    pluto.impair("revival")
    cfg = node_config(tmp_path, ours, theirs, fam)
    err = open(tmp_path / "node.err", "w")
    node = ours.popen_python(["-m", "pnp.cli", "node", "--config", cfg],
                             stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert node.stdout.readline().strip() == "ready"
        pluto.initiate("null")
        assert pluto.wait_log(OK, timeout=5), pluto.log_text()[-2000:]
    finally:
        node.terminate()
        node.wait(timeout=5)
    assert "IkeUp" in open(tmp_path / "node.err").read()
