"""pnpipsec.inet against independent references: a word-by-word RFC 1071 checksum
written here, packets assembled field by field here, and the `ipaddress` module.
(tshark also checks our IP/UDP checksums in test_keylog.py.)"""

import ipaddress
import os
import struct

import pytest
from hypothesis import given, settings, strategies as st

from pnpipsec import inet


# ------------------------------------------------------------------ reference

def ref_csum(data):
    if len(data) % 2:
        data += b"\0"
    s = 0
    for i in range(0, len(data), 2):
        s += (data[i] << 8) + data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ref_udp(src, dst, sport, dport, payload):
    ulen = 8 + len(payload)
    if len(src) == 16:
        pseudo = src + dst + ulen.to_bytes(4, "big") + b"\0\0\0" + bytes([17])
    else:
        pseudo = src + dst + b"\0" + bytes([17]) + ulen.to_bytes(2, "big")
    c = ref_csum(pseudo + struct.pack("!HHHH", sport, dport, ulen, 0) + payload)
    if c == 0:
        c = 0xFFFF
    return struct.pack("!HHHH", sport, dport, ulen, c) + payload


def ref_ipv6_udp(src, dst, sport, dport, payload):
    udp = ref_udp(src, dst, sport, dport, payload)
    return (bytes([0x60, 0, 0, 0]) + len(udp).to_bytes(2, "big") + bytes([17, 64])
            + src + dst + udp)


def ref_ipv4_udp(src, dst, sport, dport, payload):
    udp = ref_udp(src, dst, sport, dport, payload)
    hdr = bytearray([0x45, 0]) + (20 + len(udp)).to_bytes(2, "big") + bytes(
        [0, 0, 0x40, 0, 64, 17, 0, 0]) + src + dst
    hdr[10:12] = ref_csum(bytes(hdr)).to_bytes(2, "big")
    return bytes(hdr) + udp


addr6 = st.binary(min_size=16, max_size=16)
addr4 = st.binary(min_size=4, max_size=4)
port = st.integers(0, 65535)
payload = st.binary(max_size=1500)


# ------------------------------------------------------------------ checksums

@given(st.binary(max_size=3000))
def test_checksum_matches_reference(data):
    assert inet.checksum(data) == ref_csum(data)


def test_checksum_rfc1071_example():
    # RFC 1071 s3 example words 0001 f203 f4f5 f6f7: sum ddf2, checksum 220d
    assert inet.checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert inet.checksum(b"") == 0xFFFF
    assert inet.checksum(b"\xff\xff") == 0


@settings(max_examples=200)
@given(addr6, addr6, port, port, payload)
def test_ipv6_udp_matches_reference(src, dst, sp, dp, pl):
    pkt = inet.build_ipv6_udp(src, dst, sp, dp, pl)
    assert pkt == ref_ipv6_udp(src, dst, sp, dp, pl)
    assert inet.parse_ipv6_udp(pkt) == (src, dst, sp, dp, pl)
    assert inet.parse_ip_udp(pkt) == (src, dst, sp, dp, pl)


@settings(max_examples=200)
@given(addr4, addr4, port, port, payload)
def test_ipv4_udp_matches_reference(src, dst, sp, dp, pl):
    pkt = inet.build_ipv4_udp(src, dst, sp, dp, pl)
    assert pkt == ref_ipv4_udp(src, dst, sp, dp, pl)
    assert inet.parse_ipv4_udp(pkt) == (src, dst, sp, dp, pl)
    assert inet.build_ip_udp(src, dst, sp, dp, pl) == (4, pkt)


def test_build_ip_udp_v6_next_header():
    nh, pkt = inet.build_ip_udp(bytes(16), bytes(15) + b"\1", 1, 2, b"x")
    assert nh == 41 and pkt[0] >> 4 == 6


def test_zero_checksum_becomes_ffff():
    # find a payload whose computed UDP checksum is 0 -> must be sent as 0xFFFF
    src, dst = bytes(4), bytes(4)
    base = ref_udp(src, dst, 1, 2, b"\0\0")
    c = struct.unpack("!H", base[6:8])[0]
    # adjust payload word so that the sum becomes 0xFFFF (checksum 0)
    pl = (0xFFFF - (~c & 0xFFFF) if c != 0xFFFF else 0).to_bytes(2, "big")
    got = inet.build_ipv4_udp(src, dst, 1, 2, pl)
    assert got[26:28] == b"\xff\xff"
    assert inet.parse_ipv4_udp(got)[4] == pl


def test_ipv4_udp_checksum_zero_accepted_ipv6_not():
    src, dst = inet.pton("10.0.0.1"), inet.pton("10.0.0.2")
    pkt = bytearray(inet.build_ipv4_udp(src, dst, 1, 2, b"hi"))
    pkt[26:28] = b"\0\0"
    assert inet.parse_ipv4_udp(bytes(pkt))[4] == b"hi"
    p6 = bytearray(inet.build_ipv6_udp(bytes(16), bytes(16), 1, 2, b"hi"))
    p6[46:48] = b"\0\0"
    with pytest.raises(ValueError):
        inet.parse_ipv6_udp(bytes(p6))


# ------------------------------------------------------------------ malformed

def test_malformed_ipv6_rejected():
    good = inet.build_ipv6_udp(os.urandom(16), os.urandom(16), 5, 6, b"abcdef")
    assert inet.parse_ipv6_udp(good)
    for i in range(len(good) * 8):
        bad = bytearray(good)
        bad[i // 8] ^= 1 << (i % 8)
        if i // 8 in (0, 1, 2, 3, 7):   # traffic class, flow label, hop limit: no check
            if i // 8 == 0 and i % 8 >= 4:
                with pytest.raises(ValueError):
                    inet.parse_ipv6_udp(bytes(bad))
            continue
        with pytest.raises(ValueError):
            inet.parse_ipv6_udp(bytes(bad))
    for n in range(len(good)):
        with pytest.raises(ValueError):
            inet.parse_ipv6_udp(good[:n])
    with pytest.raises(ValueError):
        inet.parse_ipv6_udp(good + b"\0")
    with pytest.raises(ValueError):
        inet.parse_ip_udp(b"")
    with pytest.raises(ValueError):
        inet.parse_ip_udp(b"\x50" + good[1:])


def test_malformed_ipv4_rejected():
    good = inet.build_ipv4_udp(os.urandom(4), os.urandom(4), 5, 6, b"abcdefg")
    for n in range(len(good)):
        with pytest.raises(ValueError):
            inet.parse_ipv4_udp(good[:n])
    # any single bit flip in the header is caught (checksum, or length/version checks),
    # except in the TTL/ident/TOS which the header checksum still covers
    for i in range(20 * 8):
        bad = bytearray(good)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(ValueError):
            inet.parse_ipv4_udp(bytes(bad))
    # a flip in the UDP part is caught by the UDP checksum/length
    for i in range(20 * 8, len(good) * 8):
        bad = bytearray(good)
        bad[i // 8] ^= 1 << (i % 8)
        if bytes(bad[26:28]) == b"\0\0":
            continue
        with pytest.raises(ValueError):
            inet.parse_ipv4_udp(bytes(bad))


def test_ipv4_options_and_fragments():
    src, dst = inet.pton("1.2.3.4"), inet.pton("5.6.7.8")
    udp = ref_udp(src, dst, 9, 10, b"opt")
    # header with 4 bytes of options (NOP x4), IHL 6
    hdr = bytearray([0x46, 0]) + (24 + len(udp)).to_bytes(2, "big") + bytes(
        [0, 0, 0, 0, 64, 17, 0, 0]) + src + dst + b"\x01\x01\x01\x01"
    hdr[10:12] = ref_csum(bytes(hdr)).to_bytes(2, "big")
    assert inet.parse_ipv4_udp(bytes(hdr) + udp) == (src, dst, 9, 10, b"opt")
    # more-fragments set: rejected
    hdr[6] = 0x20
    hdr[10:12] = b"\0\0"
    hdr[10:12] = ref_csum(bytes(hdr)).to_bytes(2, "big")
    with pytest.raises(ValueError):
        inet.parse_ipv4_udp(bytes(hdr) + udp)


@given(st.binary(max_size=200))
def test_garbage_only_valueerror(data):
    for f in (inet.parse_ip_udp, inet.parse_ipv4_udp, inet.parse_ipv6_udp, inet.parse_udp):
        try:
            f(data)
        except ValueError:
            pass


# ------------------------------------------------------------------ transport mode

@given(addr6, addr6, port, port, payload)
def test_transport_udp_with_outer_addresses(src, dst, sp, dp, pl):
    seg = inet.build_udp(sp, dp, pl, src, dst)
    assert seg == ref_udp(src, dst, sp, dp, pl)
    assert inet.parse_udp(seg, src, dst) == (sp, dp, pl)
    assert inet.parse_udp(seg) == (sp, dp, pl)


def test_transport_udp_without_addresses():
    seg = inet.build_udp(1000, 2000, b"data")
    assert seg == struct.pack("!HHHH", 1000, 2000, 12, 0) + b"data"
    assert inet.parse_udp(seg) == (1000, 2000, b"data")
    # zero checksum accepted even when addresses are known (NAT may rewrite them)
    assert inet.parse_udp(seg, bytes(16), bytes(16)) == (1000, 2000, b"data")
    seg4 = inet.build_udp(1, 2, b"x", inet.pton("10.0.0.1"), inet.pton("10.0.0.2"))
    bad = seg4[:6] + bytes([seg4[6] ^ 1]) + seg4[7:]
    with pytest.raises(ValueError):
        inet.parse_udp(bad, inet.pton("10.0.0.1"), inet.pton("10.0.0.2"))
    with pytest.raises(ValueError):
        inet.parse_udp(seg[:7])
    with pytest.raises(ValueError):
        inet.parse_udp(seg + b"\0")


# ------------------------------------------------------------------ addresses

@given(addr6)
def test_ip6_ntop_matches_ipaddress(b):
    text = inet.ip6_ntop(b)
    assert text == ipaddress.IPv6Address(b).compressed
    assert inet.ip6_pton(text) == b
    assert inet.ip6_pton(ipaddress.IPv6Address(b).exploded) == b
    assert inet.pton(text) == b and inet.ntop(b) == text


@given(st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8),
       st.integers(0, 8), st.integers(0, 8), st.booleans(), st.booleans())
def test_ip6_pton_compressed_forms(words, i, j, upper, v4):
    # zero a run of groups and write it with "::" at an arbitrary place
    i, j = min(i, j), max(i, j)
    for k in range(i, j):
        words[k] = 0
    b = struct.pack("!8H", *words)
    groups = ["%x" % w for w in words]
    if j - i >= 1:
        text = ":".join(groups[:i]) + "::" + ":".join(groups[j:])
    else:
        text = ":".join(groups)
    if upper:
        text = text.upper()
    assert inet.ip6_pton(text) == ipaddress.IPv6Address(text).packed == b


@given(addr4)
def test_ip6_embedded_ipv4(b4):
    text = "::ffff:" + inet.ip4_ntop(b4)
    assert inet.ip6_pton(text) == ipaddress.IPv6Address(text).packed
    text = "64:ff9b::" + inet.ip4_ntop(b4)
    assert inet.ip6_pton(text) == ipaddress.IPv6Address(text).packed


@given(addr4)
def test_ip4_round_trip(b):
    text = inet.ip4_ntop(b)
    assert text == str(ipaddress.IPv4Address(b))
    assert inet.ip4_pton(text) == b
    assert inet.pton(text) == b and inet.ntop(b) == text


@pytest.mark.parametrize("text", [
    "", ":", ":::", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "1::2::3", "12345::",
    "g::", ":1::", "1::2:", "1:2:3:4:5:6:7:8::", "::1:2:3:4:5:6:7:8", "1.2.3.4::",
    "::1.2.3", "::1.2.3.256", " ::1", "::1 ", "1:2:3:4:5:6:7:",
    "::-1", "::+1", "::0x1",
])
def test_ip6_invalid(text):
    with pytest.raises(ValueError):
        ipaddress.IPv6Address(text)
    with pytest.raises(ValueError):
        inet.ip6_pton(text)


def test_ip6_zone_index_rejected():
    # ipaddress accepts "fe80::1%eth0"; we have no use for scopes in packed form
    with pytest.raises(ValueError):
        inet.ip6_pton("fe80::1%eth0")


@pytest.mark.parametrize("text", [
    "", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1..2.3", "a.b.c.d", " 1.2.3.4",
    "1.2.3.-4", "1.2.3.+4", "1.2.3.4 ",
])
def test_ip4_invalid(text):
    with pytest.raises(ValueError):
        ipaddress.IPv4Address(text)
    with pytest.raises(ValueError):
        inet.ip4_pton(text)


@given(st.text(alphabet="0123456789abcdefABCDEF:.", max_size=45))
def test_ip6_pton_agrees_with_ipaddress_on_random_text(text):
    try:
        want = ipaddress.IPv6Address(text).packed
    except ValueError:
        want = None
    try:
        got = inet.ip6_pton(text)
    except ValueError:
        got = None
    assert got == want, text
