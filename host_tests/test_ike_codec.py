"""IKEv2 codec, key schedule and AUTH formulas.

Oracles: RFC 7296 section 3 layouts written out by hand in this file, the
`cryptography` package (AES-CBC, HMAC-SHA256) for SK payloads and prf+."""

import os
import struct

import pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from pnp_hostboard.crypto import CryptographyAES
from host_tests.oracles import o_prf, o_prf_plus
from pnpipsec.crypto.aes_pure import PureAES
from pnpipsec.ike import codec, const as C, keys, auth
from pnpipsec.ike.codec import IkeParseError

AES = CryptographyAES()
SPI_I = bytes.fromhex("0102030405060708")
SPI_R = bytes.fromhex("1112131415161718")
IKE_SUITE = [(1, 12, 128), (2, 5, None), (3, 12, None), (4, 31, None)]


def sample_init():
    return codec.encode(SPI_I, bytes(8), C.IKE_SA_INIT, C.F_INITIATOR, 0, [
        (C.PT_SA, codec.encode_sa([(1, 1, b"", IKE_SUITE)])),
        (C.PT_KE, codec.encode_ke(31, bytes(range(32)))),
        (C.PT_NONCE, bytes(32)),
        (C.PT_N, codec.encode_notify(C.N_NAT_DETECTION_SOURCE_IP, bytes(20))),
    ])


def sample_sk(ek=bytes(16), ak=bytes(32)):
    return codec.encode_sk(SPI_I, SPI_R, C.IKE_AUTH, C.F_INITIATOR, 1, [
        (C.PT_IDI, codec.encode_id(C.ID_NULL, b"")),
        (C.PT_AUTH, codec.encode_auth(13, bytes(32))),
        (C.PT_SA, codec.encode_sa([(1, 3, b"\x00\x00\x12\x34", [(1, 12, 128), (3, 12, None), (5, 0, None)])])),
        (C.PT_TSI, codec.encode_ts([(bytes(4), b"\xff" * 4)])),
        (C.PT_TSR, codec.encode_ts([(bytes(16), b"\xff" * 16)])),
    ], ek, ak, AES, os.urandom)


# ---------------------------------------------------------------- layouts

def test_header_layout_by_hand():
    m = codec.encode(SPI_I, SPI_R, C.INFORMATIONAL, C.F_RESPONSE | C.F_INITIATOR, 7, [])
    assert m == SPI_I + SPI_R + bytes([0, 0x20, 37, 0x28]) + struct.pack(">II", 7, 28)
    p = codec.parse(m)
    assert (p.spi_i, p.spi_r, p.exch, p.mid, p.is_response, p.from_initiator) == (
        SPI_I, SPI_R, 37, 7, True, True)
    assert p.payloads == []


def test_sa_layout_by_hand():
    body = codec.encode_sa([(1, 1, b"", [(1, 12, 128), (4, 31, None)])])
    tr1 = bytes([3, 0, 0, 12, 1, 0, 0, 12, 0x80, 0x0E, 0, 128])
    tr2 = bytes([0, 0, 0, 8, 4, 0, 0, 31])
    assert body == bytes([0, 0, 0, 8 + 20, 1, 1, 0, 2]) + tr1 + tr2
    assert codec.parse_sa(body) == [(1, 1, b"", [(1, 12, 128), (4, 31, None)])]


def test_sa_several_proposals_roundtrip():
    props = [(1, 3, b"\x00\x00\x01\x00", [(1, 20, 128), (5, 0, None)]),
             (2, 3, b"\x00\x00\x01\x00", [(1, 12, 128), (3, 12, None), (5, 0, None)]),
             (3, 1, bytes(8), IKE_SUITE)]
    assert codec.parse_sa(codec.encode_sa(props)) == props
    body = codec.encode_sa(props)
    assert body[0] == 2     # "more"


def test_unknown_attribute_marks_transform():
    tr = bytes([0, 0, 0, 16, 1, 0, 0, 12, 0x80, 0x0E, 0, 128, 0x00, 0x05, 0, 0])
    body = bytes([0, 0, 0, 8 + len(tr), 1, 1, 0, 1]) + tr
    assert codec.parse_sa(body)[0][3] == [(1, 12, -1)]


def test_payload_roundtrips():
    assert codec.parse_ke(codec.encode_ke(31, bytes(32))) == (31, bytes(32))
    assert codec.parse_id(codec.encode_id(C.ID_FQDN, b"x.y")) == (2, b"x.y")
    assert codec.parse_id(codec.encode_id(C.ID_NULL, b"")) == (13, b"")
    assert codec.parse_auth(codec.encode_auth(14, b"sig")) == (14, b"sig")
    n = codec.encode_notify(C.N_REKEY_SA, b"", 3, b"\x01\x02\x03\x04")
    assert n == bytes([3, 4, 0x40, 0x09, 1, 2, 3, 4])
    assert codec.parse_notify(n) == (C.N_REKEY_SA, 3, b"\x01\x02\x03\x04", b"")
    d = codec.encode_delete(3, [b"\x00\x00\x01\x00", b"\x00\x00\x02\x00"])
    assert d == bytes([3, 4, 0, 2, 0, 0, 1, 0, 0, 0, 2, 0])
    assert codec.parse_delete(d) == (3, [b"\x00\x00\x01\x00", b"\x00\x00\x02\x00"])
    assert codec.parse_delete(codec.encode_delete(1)) == (1, [])
    ts = codec.encode_ts([(bytes([10, 0, 0, 1]), bytes([10, 0, 0, 9])),
                          (bytes(16), b"\xff" * 16)])
    assert ts[:4] == bytes([2, 0, 0, 0])
    assert ts[4:12] == bytes([7, 0, 0, 16, 0, 0, 0xFF, 0xFF])
    assert codec.parse_ts(ts) == [(7, 0, 0, 65535, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 9])),
                                  (8, 0, 0, 65535, bytes(16), b"\xff" * 16)]


def test_message_roundtrip_and_lookup():
    m = codec.parse(sample_init())
    assert [t for t, _ in m.payloads] == [C.PT_SA, C.PT_KE, C.PT_NONCE, C.PT_N]
    assert m.notify(C.N_NAT_DETECTION_SOURCE_IP)[3] == bytes(20)
    assert m.error_notify() is None


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("bad", [
    b"", bytes(27),
    sample_init()[:-1],                                            # length field too big
    sample_init() + b"\x00",                                       # too small
    sample_init()[:17] + b"\x10" + sample_init()[18:],             # IKEv1 version
])
def test_header_validation(bad):
    with pytest.raises(IkeParseError):
        codec.parse(bad)


def _with_payload_len(m, off, n):
    return m[:off + 2] + struct.pack(">H", n) + m[off + 4:]


def test_every_generic_length_is_checked():
    m = sample_init()
    off = 28
    while True:
        plen = struct.unpack(">H", m[off + 2:off + 4])[0]
        for n in (0, 3, plen - 1, plen + 1, 0xFFFF):
            with pytest.raises(IkeParseError):
                codec.parse(_with_payload_len(m, off, n))
        nxt = m[off]
        off += plen
        if nxt == 0:
            break


@pytest.mark.parametrize("fn,body", [
    (codec.parse_ke, codec.encode_ke(31, bytes(31))),
    (codec.parse_ke, codec.encode_ke(31, bytes(33))),
    (codec.parse_ke, b"\x00\x1f\x00"),
    (codec.parse_nonce, bytes(15)),
    (codec.parse_nonce, bytes(257)),
    (codec.parse_id, b"\x01\x00"),
    (codec.parse_auth, b""),
    (codec.parse_notify, b"\x03\x04\x40\x09\x01"),
    (codec.parse_delete, b"\x03\x04\x00\x02\x00\x00\x00\x01"),
    (codec.parse_delete, b"\x01\x04\x00\x00"),
    (codec.parse_delete, b"\x03\x08\x00\x01" + bytes(8)),
    (codec.parse_ts, b"\x01\x00\x00\x00" + bytes([7, 0, 0, 15]) + bytes(12)),
    (codec.parse_ts, b"\x01\x00\x00\x00" + bytes([9, 0, 0, 16]) + bytes(12)),
    (codec.parse_ts, b"\x02\x00\x00\x00" + bytes([7, 0, 0, 16]) + bytes(12)),
    (codec.parse_ts, b"\x00\x00\x00\x00"),
    (codec.parse_sa, b""),
    (codec.parse_sa, bytes([0, 0, 0, 7, 1, 1, 0, 0])),
    (codec.parse_sa, bytes([2, 0, 0, 8, 1, 1, 0, 0])),                 # "more" on last
    (codec.parse_sa, bytes([0, 0, 0, 8, 1, 1, 0, 1])),                 # count mismatch
    (codec.parse_sa, bytes([0, 0, 0, 9, 1, 1, 4, 0, 0])),              # SPI overruns
    (codec.parse_sa, bytes([0, 0, 0, 16, 1, 1, 0, 1, 0, 0, 0, 7, 1, 0, 0, 12])),
    (codec.parse_sa, bytes([0, 0, 0, 16, 1, 1, 0, 1, 3, 0, 0, 8, 1, 0, 0, 12])),
    (codec.parse_sa, bytes([0, 0, 0, 18, 1, 1, 0, 1, 0, 0, 0, 10, 1, 0, 0, 12, 0, 14])),
    (codec.parse_sa, bytes([0, 0, 0, 20, 1, 1, 0, 1, 0, 0, 0, 12, 1, 0, 0, 12, 0, 14, 0, 9])),
])
def test_body_validation(fn, body):
    with pytest.raises(IkeParseError):
        fn(body)


def test_critical_bit_handling():
    # chain: V(43) -> 201 (unknown, not critical: skipped) -> 202 (unknown, critical:
    # noted) -> Nonce(40) with the critical bit set (known type: bit ignored)
    chain = (bytes([201, 0, 0, 4])                   # V, empty
             + bytes([202, 0, 0, 6]) + b"vv"         # 201
             + bytes([40, 0x80, 0, 5]) + b"u"        # 202, critical
             + bytes([0, 0x80, 0, 20]) + bytes(16))  # Nonce
    m = SPI_I + SPI_R + bytes([43, 0x20, 37, 8]) + struct.pack(">II", 0, 28 + len(chain)) + chain
    p = codec.parse(m)
    assert [t for t, _ in p.payloads] == [43, 40]
    assert p.crit == 202
    assert p.get(C.PT_NONCE) == bytes(16)
    q = codec.parse(m[:28] + chain[:10] + bytes([40, 0, 0, 5]) + chain[14:])
    assert q.crit is None


# ---------------------------------------------------------------- SK payload

def test_sk_encrypt_checked_by_cryptography():
    ek, ak = os.urandom(16), os.urandom(32)
    m = sample_sk(ek, ak)
    assert len(m) == struct.unpack(">I", m[24:28])[0]
    assert m[16] == C.PT_SK
    assert o_prf(ak, m[:-16])[:16] == m[-16:]
    sk_len = struct.unpack(">H", m[30:32])[0]
    assert sk_len == len(m) - 28 and m[28] == C.PT_IDI
    iv, ct = m[32:48], m[48:-16]
    d = Cipher(algorithms.AES(ek), modes.CBC(iv)).decryptor()
    pt = d.update(ct) + d.finalize()
    inner = pt[:len(pt) - pt[-1] - 1]
    assert inner[:4] == bytes([C.PT_AUTH, 0, 0, 8])
    p = codec.decrypt(codec.parse(m), ek, ak, AES)
    assert [t for t, _ in p.payloads] == [C.PT_IDI, C.PT_AUTH, C.PT_SA, C.PT_TSI, C.PT_TSR]


def test_sk_decrypt_of_cryptography_message_and_pure_aes():
    ek, ak = os.urandom(16), os.urandom(32)
    inner = bytes([0, 0, 0, 8]) + codec.encode_delete(1)
    pad = 16 - (len(inner) + 1) % 16 + 16          # a longer pad than ours (allowed)
    plain = inner + b"\xaa" * pad + bytes([pad])
    assert len(plain) % 16 == 0
    iv = os.urandom(16)
    e = Cipher(algorithms.AES(ek), modes.CBC(iv)).encryptor()
    ct = e.update(plain) + e.finalize()
    n = 28 + 4 + 16 + len(ct) + 16
    m = SPI_I + SPI_R + bytes([46, 0x20, 37, 8]) + struct.pack(">II", 3, n)
    m += bytes([C.PT_D, 0]) + struct.pack(">H", n - 28) + iv + ct
    m += o_prf(ak, m)[:16]
    for aes in (AES, PureAES()):
        p = codec.decrypt(codec.parse(m), ek, ak, aes)
        assert p.payloads == [(C.PT_D, codec.encode_delete(1))]


def test_sk_empty_inner_and_bad_icv():
    ek, ak = os.urandom(16), os.urandom(32)
    m = codec.encode_sk(SPI_I, SPI_R, 37, 0x20, 2, [], ek, ak, AES, os.urandom)
    assert len(m) == 28 + 4 + 16 + 16 + 16 and m[28] == 0
    assert codec.decrypt(codec.parse(m), ek, ak, AES).payloads == []
    bad = m[:-1] + bytes([m[-1] ^ 1])
    with pytest.raises(IkeParseError, match="ICV"):
        codec.decrypt(codec.parse(bad), ek, ak, AES)
    with pytest.raises(IkeParseError):
        codec.decrypt(codec.parse(m), ek, os.urandom(32), AES)


# ---------------------------------------------------------------- hostile input

def _parse_all(data, ek, ak):
    m = codec.parse(data)
    if m.sk is not None:
        codec.decrypt(m, ek, ak, AES)
    for t, b in m.payloads:
        f = {C.PT_SA: codec.parse_sa, C.PT_KE: codec.parse_ke, C.PT_NONCE: codec.parse_nonce,
             C.PT_IDI: codec.parse_id, C.PT_AUTH: codec.parse_auth, C.PT_N: codec.parse_notify,
             C.PT_D: codec.parse_delete, C.PT_TSI: codec.parse_ts, C.PT_TSR: codec.parse_ts}.get(t)
        if f:
            f(b)


EK, AK = bytes(range(16)), bytes(range(32))
SAMPLES = [sample_init(), sample_sk(EK, AK)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SAMPLES), st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)),
                                          max_size=6), st.integers(0, 2000), st.booleans())
def test_mutations_only_raise_parse_error(sample, edits, cut, truncate):
    b = bytearray(sample)
    for pos, val in edits:
        b[pos % len(b)] = val
    if truncate:
        b = b[:cut % (len(b) + 1)]
    try:
        _parse_all(bytes(b), EK, AK)
    except IkeParseError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_parse_error(data):
    for f in (codec.parse, codec.parse_sa, codec.parse_ts, codec.parse_ke, codec.parse_notify,
              codec.parse_delete, codec.parse_id, codec.parse_auth):
        try:
            f(data)
        except IkeParseError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=200), st.binary(min_size=0, max_size=64))
def test_sk_with_valid_icv_and_garbage_plaintext(ct_blocks, junk):
    # an attacker who knows the keys (a broken peer) still only gets IkeParseError
    ct = (ct_blocks + bytes(16))[:max(16, len(ct_blocks) // 16 * 16)]
    n = 28 + 4 + 16 + len(ct) + 16
    m = SPI_I + SPI_R + bytes([46, 0x20, 37, 8]) + struct.pack(">II", 0, n)
    m += bytes([(junk[:1] or b"\x29")[0], 0]) + struct.pack(">H", n - 28) + bytes(16) + ct
    m += o_prf(AK, m)[:16]
    try:
        _parse_all(m, EK, AK)
    except IkeParseError:
        pass


# ---------------------------------------------------------------- keys and AUTH

def test_ike_keys_against_cryptography():
    ni, nr, g = os.urandom(32), os.urandom(32), os.urandom(32)
    k = keys.ike_keys(ni, nr, g, SPI_I, SPI_R)
    seed = o_prf(ni + nr, g)
    km = o_prf_plus(seed, ni + nr + SPI_I + SPI_R, 192)
    assert k.skeyseed == seed
    assert [k.sk_d, k.sk_ai, k.sk_ar, k.sk_ei, k.sk_er, k.sk_pi, k.sk_pr] == [
        km[0:32], km[32:64], km[64:96], km[96:112], km[112:128], km[128:160], km[160:192]]
    # rekey: SKEYSEED = prf(SK_d old, g^ir new | Ni | Nr)
    n2i, n2r, g2 = os.urandom(32), os.urandom(32), os.urandom(32)
    s2, r2 = os.urandom(8), os.urandom(8)
    k2 = keys.ike_keys(n2i, n2r, g2, s2, r2, k.sk_d)
    seed2 = o_prf(k.sk_d, g2 + n2i + n2r)
    assert k2.skeyseed == seed2
    assert k2.sk_er == o_prf_plus(seed2, n2i + n2r + s2 + r2, 192)[112:128]


def test_child_keys_against_cryptography():
    skd, ni, nr, g = os.urandom(32), os.urandom(32), os.urandom(32), os.urandom(32)
    km = o_prf_plus(skd, ni + nr, 96)
    assert keys.child_keys(skd, ni, nr) == (km[:16], km[16:48], km[48:64], km[64:96])
    km = o_prf_plus(skd, g + ni + nr, 96)
    assert keys.child_keys(skd, ni, nr, g) == (km[:16], km[16:48], km[48:64], km[64:96])


def test_auth_formulas():
    octets = os.urandom(100)
    psk = b"secret"
    m, d = auth.make("psk", octets, None, psk=psk)
    assert m == 2 and d == o_prf(o_prf(psk, b"Key Pad for IKEv2"), octets)
    skp = os.urandom(32)
    m, d = auth.make("null", octets, skp)
    assert m == 13 and d == o_prf(o_prf(skp, b"Key Pad for IKEv2"), octets)
    assert auth.check(13, d, octets, skp)
    assert not auth.check(13, d, octets + b"x", skp)
    assert auth.signed_octets(b"M", b"N", skp, b"ID") == b"MN" + o_prf(skp, b"ID")
    seed = os.urandom(32)
    from pnpipsec.crypto import ed25519
    m, d = auth.make("pubkey", octets, None, seed=seed)
    pub = ed25519.public_key(seed)
    assert m == 14 and auth.check(14, d, octets, None, pub=pub)
    assert not auth.check(14, d[:-1] + bytes([d[-1] ^ 1]), octets, None, pub=pub)
    assert not auth.check(14, b"\x07" + b"\x30" * 7 + d[8:], octets, None, pub=pub)
    assert not auth.check(14, b"", octets, None, pub=pub)
    assert not auth.check(2, d, octets, None, psk=None)
