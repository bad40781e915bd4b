# ESP, replay window, inet checksums and udpencap under MicroPython (and CPython).
# Plain asserts; imports only pnpipsec and modules MicroPython has. The literals were
# computed once on CPython with the `cryptography` package and a reference checksum
# (host_tests/test_esp.py oracle_seal, host_tests/test_inet.py ref_ipv6_udp/ref_ipv4_udp).

import binascii
import hashlib

from pnpipsec import esp, inet, udpencap

EK = bytes(range(16))
IK = bytes(range(32, 64))
IV = bytes(range(0xA0, 0xB0))
SPI = 0x01020304

# seq 1, next header 17, payload b"pnpipsec known answer", IV above
KAT1 = binascii.unhexlify(
    "0102030400000001a0a1a2a3a4a5a6a7a8a9aaabacadaeaf42968b218ec16150344319d4ae3a2c69"
    "b7d86622490146cb46384b99682f711cdd7fc10deb8dd434f733190279419448")
# seq 2, next header 41, payload 100 zero bytes
KAT2 = binascii.unhexlify(
    "0102030400000002a0a1a2a3a4a5a6a7a8a9aaabacadaeaf5e18d1fef61d087ec0a33ed734a7918f"
    "ebedf5c9f1ab3c71e14fafb2e3c616b89bb72f690e3f18466ad7c2801dbaf2e0997867cb70f3cdf4"
    "4fe489c423c0b9e52a7c871d8619c7d3ad6d888859808de4db982474d609f99b157b86b18a793b1c"
    "951746f761e112c7299ae6246983e68b2f3b71134edc16ed60f681118e4d6217")

V6 = binascii.unhexlify(
    "6000000000131140fd000001000000000000000000000001fd000001000000000000000000000002"
    "119401f40013e75b68656c6c6f2c2069707636")
V4 = binascii.unhexlify(
    "4500002800004000401123fd0a6301010a630102119401f40014cc7668656c6c6f2c206970763421")


def _hmac(key, msg):
    # HMAC-SHA-256 (RFC 2104) from hashlib alone, independent of pnpipsec.crypto
    k = key + bytes(64 - len(key))
    ipad = bytes([b ^ 0x36 for b in k])
    opad = bytes([b ^ 0x5C for b in k])
    return hashlib.sha256(opad + hashlib.sha256(ipad + msg).digest()).digest()


def _aes():
    try:
        from pnpipsec.crypto.aes_pure import PureAES
    except ImportError:
        return None
    return PureAES()


def _fixed_iv(n):
    return IV[:n]


def _drop_reason(inn, pkt):
    try:
        inn.open(pkt)
    except esp.EspDrop as e:
        return e.reason
    return None


def test_esp_known_answer_seal_open():
    aes = _aes()
    if aes is None:
        return  # PureAES not available yet
    out = esp.EspOut(SPI, EK, IK, aes, _fixed_iv, _hmac)
    assert out.seal(b"pnpipsec known answer", 17) == KAT1
    assert out.seal(bytes(100), 41) == KAT2
    inn = esp.EspIn(SPI, EK, IK, aes, 64, _hmac)
    assert inn.open(KAT2) == (41, bytes(100))
    assert inn.open(KAT1) == (17, b"pnpipsec known answer")
    assert _drop_reason(inn, KAT1) == "replay"
    bad = bytearray(KAT1)
    bad[30] ^= 4
    inn2 = esp.EspIn(SPI, EK, IK, aes, 64, _hmac)
    assert _drop_reason(inn2, bytes(bad)) == "icv"
    assert inn2.top == 0 and inn2.drops == {"icv": 1}


def test_esp_round_trip_and_replay_window():
    aes = _aes()
    if aes is None:
        return
    out = esp.EspOut(SPI, EK, IK, aes, _fixed_iv, _hmac)
    pkts = [out.seal(bytes([i]), 17) for i in range(80)]   # seq 1..80
    inn = esp.EspIn(SPI, EK, IK, aes, 64, _hmac)
    assert inn.open(pkts[79]) == (17, bytes([79]))         # seq 80
    assert _drop_reason(inn, pkts[15]) == "old"            # seq 16: 64 behind
    assert inn.open(pkts[16]) == (17, bytes([16]))         # seq 17: 63 behind
    assert _drop_reason(inn, pkts[16]) == "replay"
    assert _drop_reason(inn, pkts[79]) == "replay"
    assert inn.top == 80
    assert inn.drops == {"old": 1, "replay": 2}
    assert _drop_reason(inn, pkts[40][:50]) == "length"
    assert _drop_reason(inn, b"\x09\x09\x09\x09" + pkts[40][4:]) == "spi"


def test_esp_limit():
    aes = _aes()
    if aes is None:
        return
    out = esp.EspOut(SPI, EK, IK, aes, _fixed_iv, _hmac)
    out.seq = 0xFFFFFFFF
    try:
        out.seal(b"", 17)
        raise AssertionError("no EspLimit")
    except esp.EspLimit:
        pass


def test_sealed_len():
    assert esp.sealed_len(21) == len(KAT1)
    assert esp.sealed_len(100) == len(KAT2)


def test_inet_known_packets():
    s6 = inet.ip6_pton("fd00:1::1")
    d6 = inet.ip6_pton("fd00:1::2")
    assert inet.build_ipv6_udp(s6, d6, 4500, 500, b"hello, ipv6") == V6
    assert inet.parse_ip_udp(V6) == (s6, d6, 4500, 500, b"hello, ipv6")
    s4 = inet.ip4_pton("10.99.1.1")
    d4 = inet.ip4_pton("10.99.1.2")
    assert inet.build_ipv4_udp(s4, d4, 4500, 500, b"hello, ipv4!") == V4
    assert inet.parse_ip_udp(V4) == (s4, d4, 4500, 500, b"hello, ipv4!")
    bad = bytearray(V6)
    bad[-1] ^= 1
    try:
        inet.parse_ip_udp(bytes(bad))
        raise AssertionError("bad checksum accepted")
    except ValueError:
        pass
    assert inet.checksum(binascii.unhexlify("0001f203f4f5f6f7")) == 0x220D


def test_inet_addresses():
    assert inet.ip6_ntop(inet.ip6_pton("FD00:0:0:1::0:1")) == "fd00:0:0:1::1"
    assert inet.ip6_pton("::") == bytes(16)
    assert inet.ip6_ntop(bytes(16)) == "::"
    assert inet.ip6_pton("::ffff:10.0.0.1") == bytes(10) + b"\xff\xff\x0a\x00\x00\x01"
    assert inet.ntop(inet.pton("192.0.2.33")) == "192.0.2.33"
    for t in ("1::2::3", "12345::", "1.2.3.256", ":::"):
        try:
            inet.pton(t)
            raise AssertionError(t)
        except ValueError:
            pass


def test_udpencap_classify():
    assert udpencap.classify(b"\xff") == ("keepalive", b"\xff")
    assert udpencap.classify(b"\0\0\0\0IKEmessage") == ("ike", b"IKEmessage")
    assert udpencap.classify(udpencap.frame_ike(b"x")) == ("ike", b"x")
    assert udpencap.classify(KAT1)[0] == "esp"
    assert udpencap.classify(b"\x00")[0] == "bad"
    assert udpencap.classify(b"\x01\x02\x03")[0] == "bad"
    assert udpencap.classify(b"\x01\x02\x03\x04\x05")[0] == "bad"
    assert udpencap.classify(b"")[0] == "bad"
