"""RFC 7217 stable IIDs and RFC 8981 temporary addresses (pnpboard.addrgen, issue 12 item 4),
checked against the RFCs' requirements."""

import hashlib
import os
import sys

import pytest

from .conftest import REPO

COMMON = os.path.join(REPO, "boards", "common")
if COMMON not in sys.path:
    sys.path.insert(0, COMMON)

from pnpboard import addrgen as ag  # noqa: E402
from pnpboard import net  # noqa: E402

SECRET = bytes(range(16))
P1 = "2001:db8:1:2::/64"
P2 = "2001:db8:1:3::/64"


def test_reserved_iids_rfc5453():
    R = ag.is_reserved_iid
    assert R(bytes(8))                                              # Subnet-Router anycast
    assert R(bytes.fromhex("fdffffffffffff80")) and R(bytes.fromhex("fdffffffffffffff"))   # RFC 2526
    assert not R(bytes.fromhex("fdffffffffffff7f"))
    assert R(bytes.fromhex("02005efffe005213"))                     # proxy MIPv6 (RFC 6543)
    assert R(bytes.fromhex("02005efffe000000")) and R(bytes.fromhex("02005efffeffffff"))
    assert not R(bytes.fromhex("02005efffd000000")) and not R(bytes.fromhex("0000000000000001"))
    with pytest.raises(ValueError):
        R(b"\x00" * 7)


def test_stable_iid_is_F_of_prefix_iface_netid_counter_secret():
    iid, n = ag.stable_iid(P1, "wlan0", SECRET)
    assert n == 0 and len(iid) == 8
    # F = SHA-256 over the length-prefixed fields, the IID its first 64 bits (RFC 7217 section 5)
    h = hashlib.sha256()
    for part in (bytes.fromhex("20010db800010002"), b"wlan0", b"", (0).to_bytes(4, "big"), SECRET):
        h.update(len(part).to_bytes(2, "big") + part)
    assert iid == h.digest()[:8]
    # stable: the same inputs give the same IID (also from the full address or the /64 bytes)
    assert ag.stable_iid("2001:db8:1:2::", "wlan0", SECRET)[0] == iid
    assert ag.stable_iid(bytes.fromhex("20010db800010002") + bytes(8), "wlan0", SECRET)[0] == iid
    # different per prefix, interface, network, counter, secret
    others = {ag.stable_iid(P2, "wlan0", SECRET)[0], ag.stable_iid(P1, "eth0", SECRET)[0],
              ag.stable_iid(P1, "wlan0", SECRET, network_id="home-ssid")[0],
              ag.stable_iid(P1, "wlan0", SECRET, dad_counter=1)[0],
              ag.stable_iid(P1, "wlan0", bytes(16))[0]}
    assert iid not in others and len(others) == 5
    addr, n = ag.stable_address(P1, "wlan0", SECRET)
    assert addr.startswith("2001:db8:1:2:") and n == 0
    # not a MAC-derived (EUI-64) IID: nothing of the interface's hardware address in it
    assert iid[3:5] != b"\xff\xfe"


def test_stable_iid_skips_reserved(monkeypatch):
    real = ag._rid

    def rid(p, iface, netid, counter, secret):
        if counter == 0:
            return bytes.fromhex("02005efffe005213") + bytes(24)    # reserved: try the next counter
        return real(p, iface, netid, counter, secret)
    monkeypatch.setattr(ag, "_rid", rid)
    iid, n = ag.stable_iid(P1, "wlan0", SECRET)
    assert n == 1 and not ag.is_reserved_iid(iid)


def test_refuses_short_secret_and_other_prefix_lengths():
    with pytest.raises(ValueError):
        ag.stable_iid(P1, "wlan0", b"short")
    with pytest.raises(ValueError):
        ag.stable_iid("2001:db8::/48", "wlan0", SECRET)


def test_secret_made_once_and_kept():
    class St(dict):
        def read(self, k):
            return self.get(k)

        def write(self, k, v):
            self[k] = v
    st = St()
    k = ag.load_secret(st, os.urandom)
    assert len(k) == 16 and ag.load_secret(st, os.urandom) == k and st[ag.SECRET_FILE] == k


def test_temporary_iid_random_not_reserved():
    seq = [bytes(8), bytes.fromhex("02005efffe001234"), bytes.fromhex("1122334455667788")]
    it = iter(seq)
    assert ag.temporary_iid(lambda n: next(it)) == bytes.fromhex("1122334455667788")
    it = iter([bytes.fromhex("1122334455667788"), bytes.fromhex("99aabbccddeeff00")])
    assert ag.temporary_iid(lambda n: next(it), avoid=[bytes.fromhex("1122334455667788")]) == \
        bytes.fromhex("99aabbccddeeff00")
    assert len({ag.temporary_iid(os.urandom) for _ in range(50)}) == 50


def test_temporaries_rotate_by_lifetimes():
    t = ag.TemporaryAddresses(P1, os.urandom, 0, preferred=100, valid=300, regen_advance=5)
    evs = t.tick(0)
    assert [e[0] for e in evs] == ["added"] and evs[0][5] == ("temporary",)
    first = t.current()
    assert first.startswith("2001:db8:1:2:") and 60 <= evs[0][3] <= 100 and evs[0][4] == 300
    seen = {first}
    deprecated_at = None
    for now in range(1, 700):
        for kind, addr, _z, pref, valid, fl in t.tick(now):
            assert fl == ("temporary",)
            if kind == "added":
                assert addr not in seen         # a new random IID every time
                seen.add(addr)
            if kind == "deprecated" and addr == first:
                deprecated_at = now
                # its successor exists already (REGEN_ADVANCE before), and is preferred
                assert t.current() != first and t.current() is not None
            if kind == "removed" and addr == first:
                assert now == 300
        assert t.current() is not None         # always one to use for new exchanges
    assert deprecated_at is not None and 60 <= deprecated_at <= 100
    assert len(seen) >= 7                       # ~ one per preferred lifetime (desynchronised)
    # net.order_addresses puts a stable address before every temporary one
    stable = ag.stable_address(P1, "wlan0", SECRET)[0]
    entries = [(stable, "preferred", 100, 200, None, ("stable",))] + t.entries(700)
    assert net.order_addresses(entries)[0] == stable
    assert net.order_addresses(entries)[1] == t.current()


def test_temporaries_follow_the_prefix_deprecation():
    t = ag.TemporaryAddresses(P1, os.urandom, 0, preferred=1000, valid=3000)
    t.tick(0)
    a = t.current()
    t.prefix(10, 0, 600)                          # the router deprecates the prefix
    evs = t.tick(10)
    assert ("deprecated", a) in [(e[0], e[1]) for e in evs]
    assert t.current() is None                    # no new temporary on a deprecated prefix
    assert [e[0] for e in t.tick(11)] == []
    assert [(e[0], e[1]) for e in t.tick(610)] == [("removed", a)]
