"""ESP (RFC 4303, AES-CBC-128 + HMAC-SHA2-256-128) against an independent oracle.

The oracle is the `cryptography` package used directly (AES-CBC, HMAC-SHA256) with the
packet layout written out here from the RFCs, not from esp.py.
"""

import hashlib
import hmac as std_hmac
import os
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as c_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings, strategies as st, HealthCheck

from host_tests.oracles import AES, CryptographyAES
from pnpipsec import esp
from pnpipsec.esp import EspDrop, EspIn, EspLimit, EspOut




def std_hmac_sha256(key, msg):
    return std_hmac.new(key, msg, hashlib.sha256).digest()


SPI = 0xC0FFEE01
EK = bytes(range(16))
IK = bytes(range(100, 132))


def make_pair(window=64, **kw):
    out = EspOut(SPI, EK, IK, AES, os.urandom, hmac=std_hmac_sha256, **kw)
    inn = EspIn(SPI, EK, IK, AES, window=window, hmac=std_hmac_sha256)
    return out, inn


# ------------------------------------------------------------------ oracle

def oracle_icv(ik, data):
    h = c_hmac.HMAC(ik, hashes.SHA256())
    h.update(data)
    return h.finalize()[:16]


def oracle_seal(spi, seq, iv, payload, nh, ek=EK, ik=IK, pad=None):
    if pad is None:
        padlen = 0
        while (len(payload) + padlen + 2) % 16:
            padlen += 1
        pad = bytes(i + 1 for i in range(padlen))
    plain = payload + pad + bytes([len(pad), nh])
    e = Cipher(algorithms.AES(ek), modes.CBC(iv)).encryptor()
    ct = e.update(plain) + e.finalize()
    body = struct.pack(">II", spi, seq) + iv + ct
    return body + oracle_icv(ik, body)


def oracle_open(pkt, ek=EK, ik=IK):
    body, icv = pkt[:-16], pkt[-16:]
    assert oracle_icv(ik, body) == icv, "ICV mismatch (oracle)"
    spi, seq = struct.unpack(">II", body[:8])
    iv, ct = body[8:24], body[24:]
    d = Cipher(algorithms.AES(ek), modes.CBC(iv)).decryptor()
    plain = d.update(ct) + d.finalize()
    padlen, nh = plain[-2], plain[-1]
    pad = plain[-2 - padlen:-2]
    assert pad == bytes(range(1, padlen + 1)), "padding not 1,2,3,..."
    assert padlen < 16, "minimal padding expected"
    return spi, seq, iv, nh, plain[:-2 - padlen]


# ------------------------------------------------------------------ basics

@pytest.mark.parametrize("n", [0, 1, 13, 14, 15, 16, 30, 100, 1000, 1400])
def test_round_trip(n):
    out, inn = make_pair()
    payload = os.urandom(n)
    pkt = out.seal(payload, 41)
    assert len(pkt) == esp.sealed_len(n)
    assert (len(pkt) - 40) % 16 == 0
    assert inn.open(pkt) == (41, payload)
    assert out.seq == 1 and out.packets == 1 and out.bytes == n
    assert inn.packets == 1 and inn.bytes == n and inn.top == 1
    assert inn.drops == {}


def test_default_hmac_when_available():
    pytest.importorskip("pnpipsec.crypto.hmac")
    out = EspOut(SPI, EK, IK, AES, os.urandom)
    pkt = out.seal(b"hello", 17)
    oracle_open(pkt)
    inn = EspIn(SPI, EK, IK, AES)
    assert inn.open(pkt) == (17, b"hello")


def test_sealed_by_us_opened_by_oracle():
    out, _ = make_pair()
    for i in range(1, 40):
        payload = os.urandom(i * 7)
        pkt = out.seal(payload, 4)
        spi, seq, iv, nh, got = oracle_open(pkt)
        assert (spi, seq, nh, got) == (SPI, i, 4, payload)


def test_sealed_by_oracle_opened_by_us():
    _, inn = make_pair()
    for seq in range(1, 40):
        payload = os.urandom(seq * 5)
        pkt = oracle_seal(SPI, seq, os.urandom(16), payload, 17)
        assert inn.open(pkt) == (17, payload)


def test_oracle_longer_padding_accepted():
    # RFC 4303 allows up to 255 pad bytes; a peer may pad for TFC
    _, inn = make_pair()
    pad = bytes(range(1, 1 + 14 + 32))
    pkt = oracle_seal(SPI, 1, os.urandom(16), b"", 17, pad=pad)
    assert inn.open(pkt) == (17, b"")
    pad = bytes(range(1, 256))
    pkt = oracle_seal(SPI, 2, os.urandom(16), b"x" * 15, 17, pad=pad)
    assert inn.open(pkt) == (17, b"x" * 15)


def test_iv_is_from_rand_and_fresh():
    seen = []

    def rand(n):
        b = os.urandom(n)
        seen.append(b)
        return b

    out = EspOut(SPI, EK, IK, AES, rand, hmac=std_hmac_sha256)
    p1 = out.seal(b"a", 17)
    p2 = out.seal(b"a", 17)
    assert p1[8:24] == seen[0] and p2[8:24] == seen[1]
    assert p1[24:] != p2[24:]


def test_next_header_59_dummy_reported():
    out, inn = make_pair()
    assert inn.open(out.seal(b"", esp.NH_NONE)) == (59, b"")


def test_bad_constructor_args():
    with pytest.raises(ValueError):
        EspOut(0, EK, IK, AES, os.urandom, hmac=std_hmac_sha256)
    with pytest.raises(ValueError):
        EspOut(SPI, EK[:15], IK, AES, os.urandom, hmac=std_hmac_sha256)
    with pytest.raises(ValueError):
        EspIn(SPI, EK, IK[:16], AES, hmac=std_hmac_sha256)
    with pytest.raises(ValueError):
        EspIn(SPI, EK, IK, AES, window=0, hmac=std_hmac_sha256)


def test_max_payload_and_sealed_len():
    for n in range(0, 200):
        assert esp.max_payload(esp.sealed_len(n)) >= n
        assert esp.sealed_len(esp.max_payload(esp.sealed_len(n))) == esp.sealed_len(n)
    assert esp.sealed_len(esp.max_payload(1232)) <= 1232


# ------------------------------------------------------------------ replay

def test_duplicate_dropped():
    out, inn = make_pair()
    pkt = out.seal(b"x", 17)
    inn.open(pkt)
    with pytest.raises(EspDrop) as ei:
        inn.open(pkt)
    assert ei.value.reason == "replay"
    assert inn.drops == {"replay": 1}
    assert inn.packets == 1


def test_out_of_order_within_window_and_too_old():
    out, inn = make_pair(window=64)
    pkts = [out.seal(bytes([i % 256]), 17) for i in range(1, 201)]  # seq 1..200
    inn.open(pkts[99])           # seq 100
    inn.open(pkts[36])           # seq 37: 100-37 = 63 < 64, inside
    with pytest.raises(EspDrop) as ei:
        inn.open(pkts[35])       # seq 36: 64 behind, outside
    assert ei.value.reason == "old"
    for i in range(37, 99):      # the rest of the window, in any order
        inn.open(pkts[i])
    with pytest.raises(EspDrop):
        inn.open(pkts[50])
    # slide far ahead: everything behind falls out
    inn.open(pkts[199])          # seq 200
    with pytest.raises(EspDrop) as ei:
        inn.open(pkts[120])      # seq 121: 79 behind
    assert ei.value.reason == "old"
    inn.open(pkts[150])          # seq 151: 49 behind, unseen
    assert inn.drops == {"old": 2, "replay": 1}


@pytest.mark.parametrize("window", [1, 32, 64, 128, 1000])
def test_window_model(window):
    """Replay decisions match a set-based model for a shuffled, duplicated stream."""
    import random
    rnd = random.Random(window)
    out, inn = make_pair(window=window)
    pkts = {s: out.seal(b"", 17) for s in range(1, 3 * window + 50)}
    order = list(pkts) * 2
    # local shuffles so that much arrives within the window
    for i in range(len(order)):
        j = min(len(order) - 1, i + rnd.randrange(0, window + 10))
        order[i], order[j] = order[j], order[i]
    accepted = set()
    top = 0
    for s in order:
        expect = s not in accepted and s > top - window
        try:
            inn.open(pkts[s])
            got = True
        except EspDrop:
            got = False
        assert got == expect, (s, top)
        if got:
            accepted.add(s)
            top = max(top, s)
    assert inn.top == top


def test_seq_zero_dropped():
    _, inn = make_pair()
    pkt = oracle_seal(SPI, 0, os.urandom(16), b"x", 17)
    with pytest.raises(EspDrop) as ei:
        inn.open(pkt)
    assert ei.value.reason == "replay"
    inn.open(oracle_seal(SPI, 5, os.urandom(16), b"x", 17))
    with pytest.raises(EspDrop):
        inn.open(pkt)


# ------------------------------------------------------------------ tampering

def state(inn):
    return (inn.top, inn.bitmap, inn.packets, inn.bytes)


def test_every_bit_flip_dropped():
    out, inn = make_pair()
    inn.open(out.seal(b"first", 17))
    inn.open(out.seal(b"second", 17))
    pkt = out.seal(b"z" * 37, 17)       # seq 3, ahead of the window
    before = state(inn)
    total = 0
    for i in range(len(pkt) * 8):
        bad = bytearray(pkt)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(EspDrop) as ei:
            inn.open(bytes(bad))
        assert ei.value.reason in ("spi", "icv", "replay", "old")
        assert state(inn) == before
        total += 1
    assert sum(inn.drops.values()) == total
    assert inn.drops["spi"] == 32
    assert inn.drops["icv"] > 0
    assert inn.open(pkt) == (17, b"z" * 37)   # the original still gets in


def test_truncated_dropped():
    out, inn = make_pair()
    pkt = out.seal(b"q" * 40, 17)
    before = state(inn)
    for n in range(len(pkt)):
        with pytest.raises(EspDrop) as ei:
            inn.open(pkt[:n])
        assert ei.value.reason in ("length", "icv")
    assert state(inn) == before
    assert inn.drops["length"] > 0
    # too short by block misalignment
    with pytest.raises(EspDrop) as ei:
        inn.open(pkt + b"\0")
    assert ei.value.reason == "length"


def test_wrong_spi():
    out = EspOut(SPI + 1, EK, IK, AES, os.urandom, hmac=std_hmac_sha256)
    _, inn = make_pair()
    with pytest.raises(EspDrop) as ei:
        inn.open(out.seal(b"x", 17))
    assert ei.value.reason == "spi"


def test_wrong_keys_icv():
    out = EspOut(SPI, EK, bytes(32), AES, os.urandom, hmac=std_hmac_sha256)
    _, inn = make_pair()
    with pytest.raises(EspDrop) as ei:
        inn.open(out.seal(b"x", 17))
    assert ei.value.reason == "icv"


@pytest.mark.parametrize("pad", [
    b"\x00",                      # pad byte 0
    b"\x02",                      # wrong sequence
    bytes([1, 2, 4]),
    bytes([2, 3, 4, 5]),
    bytes(range(1, 14)) + b"\x00",
])
def test_bad_padding_with_valid_icv(pad):
    _, inn = make_pair()
    payload = b"p" * ((-(len(pad) + 2)) % 16 + 16)
    pkt = oracle_seal(SPI, 1, os.urandom(16), payload, 17, pad=pad)
    with pytest.raises(EspDrop) as ei:
        inn.open(pkt)
    assert ei.value.reason == "pad"
    assert state(inn) == (0, 0, 0, 0)
    assert inn.drops == {"pad": 1}


def test_pad_length_beyond_plaintext():
    # pad length byte 200 in a 32-byte plaintext, valid ICV
    _, inn = make_pair()
    iv = os.urandom(16)
    plain = bytes(30) + bytes([200, 17])
    e = Cipher(algorithms.AES(EK), modes.CBC(iv)).encryptor()
    body = struct.pack(">II", SPI, 1) + iv + e.update(plain) + e.finalize()
    with pytest.raises(EspDrop) as ei:
        inn.open(body + oracle_icv(IK, body))
    assert ei.value.reason == "pad"
    # exactly fills: 14 bytes of plaintext: pad len 14 with pad 1..14 and no payload
    plain = bytes(range(1, 15)) + bytes([14, 17])
    e = Cipher(algorithms.AES(EK), modes.CBC(iv)).encryptor()
    body = struct.pack(">II", SPI, 2) + iv + e.update(plain) + e.finalize()
    assert inn.open(body + oracle_icv(IK, body)) == (17, b"")
    # pad length 15 in a 16-byte plaintext: needs 17 bytes
    plain = bytes(range(1, 15)) + bytes([15, 17])
    e = Cipher(algorithms.AES(EK), modes.CBC(iv)).encryptor()
    body = struct.pack(">II", SPI, 3) + iv + e.update(plain) + e.finalize()
    with pytest.raises(EspDrop) as ei:
        inn.open(body + oracle_icv(IK, body))
    assert ei.value.reason == "pad"


def test_icv_checked_before_decrypt():
    class Spy(CryptographyAES):
        calls = 0

        def cbc_decrypt(self, key, iv, data):
            Spy.calls += 1
            return CryptographyAES.cbc_decrypt(self, key, iv, data)

    out, _ = make_pair()
    inn = EspIn(SPI, EK, IK, Spy(), hmac=std_hmac_sha256)
    pkt = bytearray(out.seal(b"abc", 17))
    pkt[30] ^= 1
    with pytest.raises(EspDrop):
        inn.open(bytes(pkt))
    assert Spy.calls == 0


def test_replay_checked_before_icv():
    calls = []

    def counting(key, msg):
        calls.append(1)
        return std_hmac_sha256(key, msg)

    out, _ = make_pair()
    inn = EspIn(SPI, EK, IK, AES, hmac=counting)
    pkt = out.seal(b"abc", 17)
    inn.open(pkt)
    n = len(calls)
    with pytest.raises(EspDrop):
        inn.open(pkt)
    assert len(calls) == n


# ------------------------------------------------------------------ limits

def test_esp_limit_before_wrap():
    out, inn = make_pair()
    out.seq = 0xFFFFFFFE
    pkt = out.seal(b"last", 17)
    assert oracle_open(pkt)[1] == 0xFFFFFFFF
    with pytest.raises(EspLimit):
        out.seal(b"never", 17)
    assert out.seq == 0xFFFFFFFF
    assert out.packets == 1


def test_needs_rekey_packets_and_bytes():
    out, _ = make_pair(soft_packets=3)
    assert not out.needs_rekey
    out.seal(b"", 17)
    out.seal(b"", 17)
    assert not out.needs_rekey
    out.seal(b"", 17)
    assert out.needs_rekey
    out, _ = make_pair()
    assert out.soft_packets == 2 ** 31
    out.seq = 2 ** 31 - 1
    assert not out.needs_rekey
    out.seal(b"", 17)
    assert out.needs_rekey
    out, _ = make_pair(soft_bytes=100, hard_bytes=150)
    out.seal(b"a" * 99, 17)
    assert not out.needs_rekey
    out.seal(b"a", 17)
    assert out.needs_rekey
    out.seal(b"a" * 50, 17)
    with pytest.raises(EspLimit):
        out.seal(b"a", 17)
    assert out.bytes == 150 and out.seq == 3


# ------------------------------------------------------------------ fuzz

@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=200))
def test_garbage_only_espdrop(data):
    _, inn = make_pair()
    try:
        inn.open(data)
    except EspDrop:
        pass
    else:
        raise AssertionError("garbage accepted")
    assert inn.packets == 0 and inn.top == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=esp.MIN_LEN - 8, max_size=200))
def test_garbage_with_our_spi_only_espdrop(tail):
    _, inn = make_pair()
    data = SPI.to_bytes(4, "big") + b"\0\0\0\1" + tail
    try:
        inn.open(data)
    except EspDrop as e:
        assert e.reason in ("length", "icv")
    else:
        raise AssertionError("garbage accepted")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 255))
def test_property_round_trip_oracle(payload, nh):
    out, inn = make_pair()
    pkt = out.seal(payload, nh)
    assert oracle_open(pkt)[3:] == (nh, payload)
    assert inn.open(pkt) == (nh, payload)


def test_next_header_out_of_range():
    out, _ = make_pair()
    for nh in (-1, 256, 4096 + 17):
        with pytest.raises(ValueError):
            out.seal(b"x", nh)
    assert out.seq == 0
    # the trailer cache did not confuse next headers
    out2, inn = make_pair()
    for nh in (17, 41, 4, 59, 17 + 16, 255, 0):
        for n in range(16):
            assert inn.open(out2.seal(bytes(n), nh)) == (nh, bytes(n))


def test_open_accepts_bytearray_and_memoryview():
    out, inn = make_pair()
    assert inn.open(bytearray(out.seal(b"ba", 17)))[1] == b"ba"
    assert bytes(inn.open(memoryview(out.seal(b"mv", 17)))[1]) == b"mv"


# ------------------------------------------------------------------ udpencap (RFC 3948)

from pnpipsec import udpencap  # noqa: E402


def test_udpencap_classify_cases():
    assert udpencap.MARKER == b"\0\0\0\0" and udpencap.KEEPALIVE == b"\xff"
    assert udpencap.classify(b"\xff") == ("keepalive", b"\xff")
    assert udpencap.classify(udpencap.frame_ike(b"IKE!")) == ("ike", b"IKE!")
    assert udpencap.classify(b"\0\0\0\0") == ("ike", b"")
    out, _ = make_pair()
    pkt = out.seal(b"x", 17)
    assert udpencap.classify(pkt) == ("esp", pkt)
    for bad in (b"", b"\0", b"\xfe", b"\xff\xff", b"\1\2\3", b"\1\2\3\4", b"\1\2\3\4\5\6\7"):
        assert udpencap.classify(bad)[0] == "bad", bad


@given(st.binary(max_size=64))
def test_udpencap_classify_total(d):
    kind, body = udpencap.classify(d)
    if d == b"\xff":
        assert kind == "keepalive"
    elif len(d) >= 4 and d[:4] == b"\0\0\0\0":
        assert (kind, body) == ("ike", d[4:])
    elif len(d) >= 8:
        assert (kind, body) == ("esp", d)
    else:
        assert kind == "bad"
