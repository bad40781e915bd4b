# IKEv2 engine under MicroPython (and CPython): full handshakes between two engines in
# memory with PureAES and a deterministic rand. Plain asserts; imports only pnpipsec
# and modules MicroPython has.

import hashlib

from pnpipsec.crypto.aes_pure import PureAES
from pnpipsec.ike import codec
from pnpipsec.ike import const as C
from pnpipsec.ike.engine import Engine
from pnpipsec.ike.sa import LocalIdentity, PeerConfig

A_ADDR = ("fd00:1::1", 500)
B_ADDR = ("fd00:1::2", 500)


class Rand:
    """Deterministic rand(n): SHA-256 in counter mode over a seed."""

    def __init__(self, seed):
        self.seed = seed
        self.n = 0

    def __call__(self, n):
        out = b""
        while len(out) < n:
            self.n += 1
            out += hashlib.sha256(self.seed + self.n.to_bytes(4, "big")).digest()
        return out[:n]


def _pair(a_cfg, b_policy=None):
    aes = PureAES()
    a = Engine(Rand(b"a"), aes, LocalIdentity())
    b = Engine(Rand(b"b"), aes, LocalIdentity(), b_policy)
    return a, b


def _run(a, b, now=0):
    sizes = []
    for _ in range(10):
        moved = False
        for d, to in a.pop_datagrams():
            moved = True
            sizes.append(len(d))
            b.receive(d, (A_ADDR[0], to[1]), now)
        for d, to in b.pop_datagrams():
            moved = True
            sizes.append(len(d))
            a.receive(d, (B_ADDR[0], to[1]), now)
        if not moved:
            break
    return sizes


def _events(eng):
    return [(e.kind, e) for e in eng.pop_events()]


def _check_up(a, b):
    ea, eb = _events(a), _events(b)
    assert [k for k, _ in ea] == ["ike_up", "child_up"], ea
    assert [k for k, _ in eb] == ["ike_up", "child_up"], eb
    ca, cb = ea[1][1].child, eb[1][1].child
    assert ca.spi_in == cb.spi_out and ca.spi_out == cb.spi_in
    assert ca.enc_out == cb.enc_in and ca.int_out == cb.int_in
    assert ca.enc_in == cb.enc_out and ca.int_in == cb.int_out
    assert len(ca.enc_in) == 16 and len(ca.int_in) == 32 and ca.enc_in != ca.enc_out
    sa_a, sa_b = ea[0][1].sa, eb[0][1].sa
    assert sa_a.sk_ei == sa_b.sk_ei and sa_a.sk_ar == sa_b.sk_ar
    assert ca.mode == "transport"
    me = codec.encode_ts([(b"\xfd\x00\x00\x01" + bytes(11) + b"\x01",) * 2])
    assert codec.encode_ts(ca.local_ts) == me
    return sa_a, sa_b, ca, cb


def test_null_handshake():
    a, b = _pair(PeerConfig())
    a.initiate(B_ADDR, PeerConfig(), 0)
    sizes = _run(a, b)
    assert len(sizes) == 4
    sa_a, sa_b, ca, cb = _check_up(a, b)
    assert sa_b.auth == "null" and sa_b.peer_id == (C.ID_NULL, b"")
    assert sa_a.peer_addr == (B_ADDR[0], 4500)


def test_psk_handshake_and_delete():
    psk = b"mp-psk"

    def policy(addr, peer_id, method):
        return PeerConfig(auth="psk", psk=psk, local_id=(C.ID_FQDN, b"b"))
    a, b = _pair(None, policy)
    sa = a.initiate(B_ADDR, PeerConfig(auth="psk", psk=psk, local_id=(C.ID_FQDN, b"a"),
                                       remote_id=(C.ID_FQDN, b"b")), 0)
    _run(a, b)
    sa_a, sa_b, ca, cb = _check_up(a, b)
    assert sa_a is sa and sa_b.peer_id == (C.ID_FQDN, b"a")
    a.delete(sa_a, 1000)
    _run(a, b, 1000)
    assert [k for k, _ in _events(a)] == ["child_down", "ike_down"]
    assert [k for k, _ in _events(b)] == ["child_down", "ike_down"]
    assert not a.sas and not b.sas


def test_wrong_psk_refused():
    def policy(addr, peer_id, method):
        return PeerConfig(auth="psk", psk=b"right")
    a, b = _pair(None, policy)
    a.initiate(B_ADDR, PeerConfig(auth="psk", psk=b"wrong"), 0)
    _run(a, b)
    assert [k for k, _ in _events(b)] == ["auth_failed", "ike_down"]
    assert [k for k, _ in _events(a)] == ["auth_failed", "ike_down"]


def test_child_rekey_with_ke():
    a, b = _pair(None)
    a.initiate(B_ADDR, PeerConfig(pfs=True), 0)
    _run(a, b)
    sa_a, sa_b, ca, cb = _check_up(a, b)
    a.rekey_child(ca, 1000)
    _run(a, b, 1000)
    ea = _events(a)
    eb = _events(b)
    assert [k for k, _ in ea] == ["child_rekeyed", "child_down"]
    assert [k for k, _ in eb] == ["child_rekeyed", "child_down"]
    na, nb = ea[0][1].new, eb[0][1].new
    assert na.enc_out == nb.enc_in and na.int_in == nb.int_out and na.enc_out != ca.enc_out


def test_ed25519_handshake():
    from pnpipsec.crypto import ed25519
    sa_seed, sb_seed = Rand(b"ka")(32), Rand(b"kb")(32)
    a_pub, b_pub = ed25519.public_key(sa_seed), ed25519.public_key(sb_seed)
    a_id, b_id = (C.ID_FQDN, b"a.example"), (C.ID_KEY_ID, b"b")

    def policy(addr, peer_id, method):
        if peer_id is not None and peer_id != a_id:
            return None
        return PeerConfig(auth="pubkey", local_id=b_id, peer_pubkey=a_pub)
    aes = PureAES()
    a = Engine(Rand(b"a"), aes, LocalIdentity(ed25519_seed=sa_seed))
    b = Engine(Rand(b"b"), aes, LocalIdentity(ed25519_seed=sb_seed), policy)
    a.initiate(B_ADDR, PeerConfig(auth="pubkey", local_id=a_id, remote_id=b_id,
                                  peer_pubkey=b_pub), 0)
    _run(a, b)
    sa_a, sa_b, ca, cb = _check_up(a, b)
    assert sa_b.peer_pubkey == a_pub and sa_a.peer_pubkey == b_pub
    assert sa_b.auth == "pubkey" and sa_b.peer_id == a_id


def test_invalid_ke_cookie_and_ike_rekey():
    a, b = _pair(None)
    b.cookie_threshold = 0                    # every IKE_SA_INIT must carry a cookie
    a.first_ke_group = 19                     # and our first KE is of a group B refuses
    a.ike_proposals = [(1, C.PROTO_IKE, b"", [(1, 12, 128), (2, 5, None), (3, 12, None),
                                             (4, 19, None), (4, 31, None)])]
    a.initiate(B_ADDR, PeerConfig(), 0)
    sizes = _run(a, b)
    assert len(sizes) == 8, sizes             # cookie, INVALID_KE, then the exchange
    assert b.stats["cookie_sent"] == 1 and b.stats["invalid_ke_sent"] == 1
    sa_a, sa_b, ca, cb = _check_up(a, b)
    a.rekey_ike(sa_a, 1000)
    _run(a, b, 1000)
    ea, eb = _events(a), _events(b)
    assert [k for k, _ in ea] == ["ike_rekeyed"] and [k for k, _ in eb] == ["ike_rekeyed"]
    na, nb = ea[0][1].new, eb[0][1].new
    assert na.sk_ei == nb.sk_ei and na.sk_ei != sa_a.sk_ei and na.children == [ca]
    assert list(a.sas.values()) == [na] and list(b.sas.values()) == [nb]
    assert a.auth_octets(na) == b.auth_octets(nb, False)


if __name__ == "__main__":
    for name in sorted(dir()):
        if name.startswith("test_"):
            globals()[name]()
            print("ok", name)


def test_restart_with_initial_contact_replaces_the_old_sa():
    # a peer that reboots (a fresh engine) sends INITIAL_CONTACT; the old SA goes
    aes = PureAES()
    b = Engine(Rand(b"b"), aes, LocalIdentity())
    for i in range(3):
        a = Engine(Rand(b"a%d" % i), aes, LocalIdentity())
        a.initiate(B_ADDR, PeerConfig(childless=True), i * 1000)
        _run(a, b, i * 1000)
        up = [sa for sa in b.sas.values() if sa.state == "established"]
        assert len(up) == 1, up
    assert b.stats["initial_contact"] == 2


def test_under_load_a_flood_is_answered_statelessly_and_a_proven_peer_gets_in():
    aes = PureAES()
    b = Engine(Rand(b"b"), aes, LocalIdentity(), max_answer_rate=3)
    m = Engine(Rand(b"m"), aes, LocalIdentity())
    for i in range(12):
        m.initiate(B_ADDR, PeerConfig(), 0)
    flood = [d for d, _ in m.pop_datagrams()]
    for i, d in enumerate(flood):
        b.receive(d, ("fd00:9::%d" % (i + 1), 500), 0)
    answers = b.pop_datagrams()
    assert b.half_open() == b.cookie_threshold           # then: cookies, no state
    assert b.stats["cookie_sent"] == 3 and b.stats["drop_rate"] == 1   # budget of 3
    for d, _ in answers[b.cookie_threshold:]:
        assert codec.parse(d).notify(C.N_COOKIE) is not None
    a = Engine(Rand(b"a"), aes, LocalIdentity())
    sa = a.initiate(B_ADDR, PeerConfig(), 1000)           # a second later: budget refilled
    _run(a, b, 1000)
    assert sa.state == "established"
    assert b.half_open() <= b.max_half_open


def test_a_flood_from_many_sources_cannot_starve_a_quiet_initiator_of_its_cookie():
    # The global answer budget (50/s) is smaller than the flood (20 sources x 10);
    # each source gets 2 answers a second, so the quiet one's request is answered.
    aes = PureAES()
    b = Engine(Rand(b"b"), aes, LocalIdentity(), max_answer_rate=50, answer_sources=32)
    m = Engine(Rand(b"m"), aes, LocalIdentity())
    for i in range(b.cookie_threshold):               # fill the half-open budget
        b.receive(m.initiate(B_ADDR, PeerConfig(), 0) and m.pop_datagrams()[0][0],
                  ("fd00:8::%d" % i, 500), 0)
    b.pop_datagrams()
    req = m.initiate(B_ADDR, PeerConfig(), 0) and m.pop_datagrams()[0][0]
    for rnd in range(10):
        for s in range(20):
            b.receive(req, ("fd00:9::%d" % s, 500), 100 + rnd * 10)
    assert len(b.pop_datagrams()) == 40                # 2 per source
    assert b.stats["drop_rate_source"] == 160
    quiet = Engine(Rand(b"q"), aes, LocalIdentity())
    quiet.initiate(B_ADDR, PeerConfig(), 500)
    b.receive(quiet.pop_datagrams()[0][0], A_ADDR, 500)
    got = b.pop_datagrams()
    assert len(got) == 1 and codec.parse(got[0][0]).notify(C.N_COOKIE) is not None
    # A new second: every source is answered again.
    b.receive(req, ("fd00:9::0", 500), 1200)
    assert len(b.pop_datagrams()) == 1
