"""Self-check of the real-peer harness (host_tests/peers) against the real daemons.

Needs root (network namespaces), strongSwan charon/swanctl/pki, tcpdump, tshark and
libreswan unpacked in .deps/libreswan.  Skips loudly when something is missing;
fails instead when CI=true.  Run with ``-s`` to see the measured numbers.
"""

import os
import statistics
import subprocess
import sys
import time

import pytest

# importable as host_tests.peers also under a bare `pytest` (rootdir not on sys.path)
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from host_tests.peers import require_real_peers

from host_tests.peers import capture as cap
from host_tests.peers import charon as ch
from host_tests.peers import netns as nn
from host_tests.peers import pluto as pl

UDP_PORT = 9999
RUNS = 5


@pytest.fixture(scope="module")
def env_ok():
    require_real_peers(charon=True, capture=True)


@pytest.fixture
def net(env_ok):
    with nn.Netns(2) as n:
        yield n
    assert not nn.leftover_namespaces()


@pytest.fixture
def charons(net, tmp_path):
    """Factory: make_pair() -> (A, B) started charons in net.ns[0] / net.ns[1]."""
    made = []

    def make_pair(**kw):
        a, b = net.ns
        A = ch.Charon(a, str(tmp_path / "a"), **kw)
        made.append(A)
        B = ch.Charon(b, str(tmp_path / "b"), **kw)
        made.append(B)
        A.start()
        B.start()
        return A, B

    yield make_pair
    for c in made:
        c.stop()


def _psk_pair(make_pair, net, fam):
    a, b = net.ns
    A, B = make_pair()
    A.add_conn("host", a.addr(fam), b.addr(fam), psk="selfcheck-psk-0123456789",
               local_id="a.example", remote_id="b.example", children={"net": {}})
    B.add_conn("host", b.addr(fam), "%any", psk="selfcheck-psk-0123456789",
               local_id="b.example", remote_id="a.example", children={"net": {}})
    A.load()
    B.load()
    return A, B


from host_tests.peers.udpapp import CLIENT, ECHO_SERVER  # noqa: E402


def _udp_roundtrip(net, fam, text):
    """A UDP datagram from ns a to ns b and its echo back, both with the venv python."""
    a, b = net.ns
    srv = b.popen_python(["-c", ECHO_SERVER, b.addr(fam), str(UDP_PORT)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert srv.stdout.readline().strip() == "ready"
    cli = a.popen_python(["-c", CLIENT, b.addr(fam), str(UDP_PORT), text],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = cli.communicate(timeout=10)
    sout, serr = srv.communicate(timeout=10)
    assert cli.returncode == 0, err
    assert out.strip() == "echo:" + text
    assert sout.splitlines()[-1] == "got %s %s" % (text, a.addr(fam))


def _flip_keys(esp_rows, ike):
    esp_bad = [dict(r, int=bytes([r["int"][0] ^ 1]) + r["int"][1:]) for r in esp_rows]
    ike_bad = [dict(e, sk_ai=bytes([e["sk_ai"][0] ^ 1]) + e["sk_ai"][1:],
                    sk_ar=bytes([e["sk_ar"][0] ^ 1]) + e["sk_ar"][1:]) for e in ike]
    return esp_bad, ike_bad


@pytest.mark.parametrize("fam", [6, 4], ids=["ipv6", "ipv4"])
def test_charon_psk_tunnel_judged_by_tshark(net, charons, tmp_path, fam):
    a, b = net.ns
    A, B = _psk_pair(charons, net, fam)
    pcap = str(tmp_path / "psk.pcap")
    with cap.Capture(a, "veth0", "udp", pcap):
        A.initiate("net", "host", timeout=10)
        _udp_roundtrip(net, fam, "hello-through-esp")
        # rekey from the responder side: CHILD initiator != IKE initiator
        before = A.list_sas()[0]["children"][0]["spi_in"]
        B.rekey_child("net")
        A.wait_for(lambda sas: any(c["state"] == "INSTALLED" and c["spi_in"] != before
                                   for c in sas[0]["children"]), timeout=5)
        _udp_roundtrip(net, fam, "after-rekey")
        # IKE SA rekey from the initiator: the new IKE SA's keys and SPIs must be found too
        old_ike = A.list_sas()[0]["spi_i"]
        A.rekey_ike("host")
        A.wait_for(lambda sas: len(sas) == 1 and sas[0]["spi_i"] != old_ike
                   and sas[0]["state"] == "ESTABLISHED", timeout=5)
        _udp_roundtrip(net, fam, "after-ike-rekey")
    sa_a, sa_b = A.list_sas(), B.list_sas()
    assert sa_a[0]["state"] == "ESTABLISHED" and sa_a[0]["initiator"]
    assert sa_a[0]["spi_i"] == sa_b[0]["spi_i"] and sa_a[0]["spi_r"] == sa_b[0]["spi_r"]
    A.stop()
    B.stop()

    ka, kb = A.keys(), B.keys()
    # both logs tell the same keys
    assert len(ka["ike"]) == 2 and len(ka["esp"]) == 2, ka
    for x, y in zip(ka["ike"], kb["ike"]):
        assert {k: v for k, v in x.items() if k != "ike"} == {k: v for k, v in y.items() if k != "ike"}
    assert (ka["ike"][-1]["spi_i"], ka["ike"][-1]["spi_r"]) == (sa_a[0]["spi_i"], sa_a[0]["spi_r"])
    assert ka["ike"][0]["spi_i"] == old_ike
    rows_a = ch.esp_sa_rows(ka)
    rows_b = ch.esp_sa_rows(kb)
    assert sorted((r["spi"], r["enc"], r["int"]) for r in rows_a) == \
        sorted((r["spi"], r["enc"], r["int"]) for r in rows_b)
    assert len(rows_a) == 4

    # nothing in the clear
    assert cap.tshark_fields(pcap, ["frame.number"], display_filter="udp.port == %d" % UDP_PORT) == []

    keydir = cap.write_keydir(str(tmp_path / "keys"), rows_a, ka["ike"])
    res = cap.check_decryption(pcap, keydir)
    print("\n[selfcheck ipv%d] tshark verdict with charon's keys: %r" % (fam, res))
    assert res["esp"] >= 6 and res["esp_good"] == res["esp"] and res["esp_bad"] == 0
    # IKE_AUTH x2, CREATE_CHILD_SA x4 (child + IKE rekey), INFORMATIONAL (deletes) x4
    assert res["ike_encrypted"] >= 10
    assert res["ike_correct"] == res["ike_encrypted"] == res["ike_decrypted"]
    # the decrypted plaintext is our datagram
    inner = cap.tshark_fields(pcap, ["udp.payload"], options=cap.ESP_OPTIONS, keydir=keydir,
                              display_filter="esp && udp.port == %d" % UDP_PORT)
    assert any(bytes.fromhex(r[0].split(",")[-1].replace(":", "")) == b"hello-through-esp" for r in inner)

    # the same keys as -o uat: options
    n_good = len(cap.tshark_fields(pcap, ["esp.spi"], options=cap.uat_options(rows_a, ka["ike"]),
                                   display_filter="esp.icv_good == 1"))
    assert n_good == res["esp"]

    # negative control: one flipped key bit
    bad_esp, bad_ike = _flip_keys(rows_a, ka["ike"])
    baddir = cap.write_keydir(str(tmp_path / "badkeys"), bad_esp, bad_ike)
    bad = cap.check_decryption(pcap, baddir)
    assert bad["esp_good"] == 0 and bad["esp_bad"] == res["esp"], bad
    assert bad["ike_correct"] == 0 and bad["ike_incorrect"] == res["ike_encrypted"], bad
    assert "incorrect, should be" in cap.tshark_verbose(pcap, options=cap.ESP_OPTIONS, keydir=baddir)


def test_charon_ed25519_raw_keys(net, charons, tmp_path):
    a, b = net.ns
    ka_priv, ka_pub = ch.gen_ed25519(str(tmp_path / "keys"), "a")
    kb_priv, kb_pub = ch.gen_ed25519(str(tmp_path / "keys"), "b")
    with open(ka_pub) as f:
        assert f.read().startswith("-----BEGIN PUBLIC KEY-----")   # PEM SPKI
    A, B = charons()
    A.add_conn("host", a.ip6, b.ip6, local_id="a.example", remote_id="b.example",
               local_key=ka_priv, local_pubkey=ka_pub, remote_pubkey=kb_pub, children={"net": {}})
    with open(ka_pub) as f:   # the peer's key given as PEM text
        B.add_conn("host", b.ip6, "%any", local_id="b.example", remote_id="a.example",
                   local_key=kb_priv, local_pubkey=kb_pub, remote_pubkey=f.read(),
                   children={"net": {}})
    A.load()
    B.load()
    pcap = str(tmp_path / "ed.pcap")
    with cap.Capture(a, "veth0", "udp", pcap):
        A.initiate("net", "host")
    sas = A.list_sas()
    assert sas[0]["state"] == "ESTABLISHED"
    assert sas[0]["children"][0]["state"] == "INSTALLED"
    assert "authentication of 'b.example' with ED25519 successful" in A.log_text()
    assert "authentication of 'a.example' with ED25519 successful" in B.log_text()
    keys = A.keys()
    keydir = cap.write_keydir(str(tmp_path / "kd"), ch.esp_sa_rows(keys), keys["ike"])
    methods = cap.tshark_fields(pcap, ["isakmp.auth.method"], keydir=keydir,
                                display_filter="isakmp.auth.method")
    assert [r[0] for r in methods] == ["14", "14"]      # RFC 7427 Digital Signature
    hs = cap.handshake_stats(pcap)
    print("\n[selfcheck] charon<->charon Ed25519: wire %.2f ms, %d bytes UDP payload %r"
          % (hs["wire_time"] * 1e3, hs["bytes"], hs["messages"]))


def test_charon_handshake_numbers(net, charons, tmp_path):
    """Wire time IKE_SA_INIT request -> IKE_AUTH response and handshake bytes, PSK."""
    a, b = net.ns
    A, B = _psk_pair(charons, net, 6)
    pcap = str(tmp_path / "hs.pcap")
    t_init = []
    with cap.Capture(a, "veth0", "udp", pcap):
        for i in range(RUNS):
            t0 = time.monotonic()
            A.initiate("net", "host")
            t_init.append(time.monotonic() - t0)
            A.terminate(ike="host", timeout=5, check=True)
    hs = cap.handshakes(pcap)
    assert len(hs) == RUNS and all(h["wire_time"] is not None for h in hs)
    wire = statistics.median(h["wire_time"] for h in hs)
    print("\n[selfcheck] charon<->charon PSK aes128-sha256-x25519 (IPv6, tunnel child):"
          "\n    wire IKE_SA_INIT req -> IKE_AUTH resp: median %.2f ms of %d (%s)"
          "\n    handshake UDP payload bytes: %d (IKE bytes without non-ESP markers: %d) %r"
          "\n    swanctl --initiate wall time: median %.1f ms"
          % (wire * 1e3, RUNS, ", ".join("%.2f" % (h["wire_time"] * 1e3) for h in hs),
             hs[0]["bytes"], hs[0]["ike_bytes"], hs[0]["messages"],
             statistics.median(t_init) * 1e3))
    assert len({h["bytes"] for h in hs}) == 1


@pytest.fixture(scope="module")
def pluto_ok(env_ok):
    require_real_peers(charon=False, pluto=True, capture=True)


@pytest.mark.parametrize("fam", [6, 4], ids=["ipv6", "ipv4"])
def test_pluto_null_childless(pluto_ok, net, tmp_path, fam):
    a, b = net.ns
    A = pl.Pluto(a, str(tmp_path / "pa"))
    B = pl.Pluto(b, str(tmp_path / "pb"))
    try:
        A.add_conn("null", a.addr(fam), b.addr(fam))
        B.add_conn("null", b.addr(fam), "%any")
        A.start()
        B.start()
        A.impair("omit-v2-ike-auth-child")
        A.impair("revival")
        pcap = str(tmp_path / "null.pcap")
        with cap.Capture(a, "veth0", "udp", pcap):
            for i in range(RUNS):
                r = A.initiate("null")
                assert "established IKE SA" in r.stdout, r.stdout + r.stderr
                B.wait_log("authenticated peer using authby=null")
                A.terminate("null")
                time.sleep(0.02)
        assert B.log_text().count("responder established IKE SA; authenticated peer using authby=null") == RUNS
        assert "creating childless SA" in B.log_text()
    finally:
        A.stop()
        B.stop()
    hs = [h for h in cap.handshakes(pcap) if h["wire_time"] is not None]
    assert len(hs) == RUNS
    wire = statistics.median(h["wire_time"] for h in hs)
    print("\n[selfcheck] pluto<->pluto NULL auth childless (IPv%d):"
          "\n    wire IKE_SA_INIT req -> IKE_AUTH resp: median %.2f ms of %d (%s)"
          "\n    handshake UDP payload bytes: %d %r"
          % (fam, wire * 1e3, RUNS, ", ".join("%.2f" % (h["wire_time"] * 1e3) for h in hs),
             hs[0]["bytes"], hs[0]["messages"]))


def test_netns_three_on_a_bridge(env_ok):
    with nn.Netns(3, net_id=7) as net:
        a, b, c = net.ns
        assert c.ip6 == "fd00:99:7::3" and c.ip4 == "10.99.7.3"
        srv = c.popen_python(["-c", ECHO_SERVER, c.ip4, str(UDP_PORT)],
                             stdout=subprocess.PIPE, text=True)
        assert srv.stdout.readline().strip() == "ready"
        out = a.run([nn.VENV_PYTHON, "-c", CLIENT, c.ip4, str(UDP_PORT), "x"]).stdout
        assert out.strip() == "echo:x"
        srv.wait(5)
        sleeper = b.popen(["sleep", "60"])
    assert sleeper.poll() is not None          # killed on teardown
    assert not nn.leftover_namespaces()


def test_no_leftovers(env_ok):
    assert nn.leftover_namespaces() == []
