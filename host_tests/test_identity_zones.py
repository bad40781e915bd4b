"""Issue 12, items 1 and 5 on the host: zone IDs (fe80::1%2, fe80::1%eth0) in address
text, node keys and real sockets; and pins by identity (a key approved at one address
counts at every address of the peer)."""

import os
import shutil
import subprocess
import sys

import pytest

from pnpipsec import AUTHENTICATED, ENCRYPTED, inet
from pnpipsec.identity import fingerprint

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "mp"))
import test_identity_peers_mp as mem  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def test_zone_text_and_keys():
    assert inet.norm("FE80:0::1%02") == "fe80::1%2"
    assert inet.norm("fe80::1%lo") == "fe80::1%1"          # a name becomes its index
    assert inet.norm("fd00::2") == "fd00::2"
    assert inet.pton("fe80::1%2") == inet.pton("fe80::1")  # packed: 16 bytes, no zone
    assert inet.key("fe80::1%2") != inet.key("fe80::1%3") != inet.key("fe80::1")
    assert inet.unkey(inet.key("fe80::1%2")) == "fe80::1%2"
    assert inet.key("fd00::2") == inet.pton("fd00::2")     # pins stored by address stay valid
    with pytest.raises(ValueError):
        inet.norm("fd00::2%")


def test_two_zones_are_two_peers():
    w = mem.World()
    p2, p3 = w.a._peer("fe80::2%2"), w.a._peer("fe80::2%3")
    assert p2 is not p3 and w.a._peer("fe80::2%2") is p2
    assert w.a.by_host.get(inet.norm("fe80::2%02")) is p2


def test_an_approved_key_counts_at_every_address():
    w = mem.World()
    w.a.tofu = False                        # only approved keys reach AUTHENTICATED
    w.a._probe(mem.B, True)
    w.settle()
    w.timers()
    key = w.b.identity.public
    assert w.a.level(mem.B) == ENCRYPTED
    w.a.approve(mem.B, key)
    assert w.a.level(mem.B) == AUTHENTICATED
    blob = w.a.pins.storage.read("pins")      # the store's format: by address, as before
    from pnpipsec import pins
    assert list(pins.decode(blob)) == [inet.pton(mem.B)]
    # B comes back from fd00::3 with the same key: no approval there, still trusted
    del w.nodes[mem.B]
    b2, _ = w.node(mem.B2, b"B")
    b2._probe(mem.A, True)
    w.settle()
    w.timers()
    assert w.a.level(mem.B2) == AUTHENTICATED
    assert w.a.by_host[mem.B2].fp == fingerprint(key)
    assert w.a.pins.key_state(key) == "approved"


def test_link_local_peers_with_zones_over_real_sockets():
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip (a network namespace with a veth pair)")
    setup = ("ip link set lo up && ip link add v0 type veth peer name v1 && ip link set v0 up"
             " && ip link set v1 up && ip addr add fe80::1/64 dev v0 nodad"
             " && ip addr add fe80::2/64 dev v1 nodad && exec %s %s"
             % (sys.executable, os.path.join(HERE, "zone_ll_script.py")))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    p = subprocess.run(["unshare", "-n", "sh", "-c", setup], capture_output=True, text=True,
                       timeout=60, env=env, cwd=REPO)
    assert p.returncode == 0 and "ZONES_OK" in p.stdout, p.stdout[-3000:] + p.stderr[-3000:]
