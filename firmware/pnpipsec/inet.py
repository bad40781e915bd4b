"""Inner packets carried in ESP, and address text helpers (no socket/ipaddress needed).

Tunnel mode (toward gateways): the ESP payload is a whole IP packet, next header
NH_IPV6 (41) or NH_IPV4 (4); we carry UDP inside it:
    build_ipv6_udp / parse_ipv6_udp, build_ipv4_udp / parse_ipv4_udp, parse_ip_udp.

Transport mode (between our nodes): the ESP payload is a UDP header and the datagram,
next header 17: build_udp / parse_udp. The UDP checksum covers a pseudo-header with the
packet's IP addresses, which in transport mode are the *outer* addresses of the ESP
packet. Our choice: when the caller passes the outer src/dst, the checksum is computed
with them (RFC 768 / RFC 8200 s8.1) and verified on parse; when it passes none, the
checksum field is 0 on build and not verified on parse. A zero UDP checksum is
acceptable here because ESP's ICV already protects the datagram end to end, and with
UDP encapsulation (RFC 3948) the outer addresses may be rewritten by NAT, which would
make a pseudo-header checksum fail for no security benefit (RFC 3948 s3.1.2 says the
same of transport-mode TCP/UDP checksums behind NAT). Inside tunnel mode the inner
packet has its own addresses, so its checksum is always computed and verified (IPv4
UDP checksum 0 = "none" is accepted on parse, as RFC 768 allows).

All addresses are packed bytes (4 or 16). Parsing raises ValueError on anything malformed.
"""

import struct

PROTO_UDP = 17
NH_IPV4 = 4
NH_IPV6 = 41
DEFAULT_HOP_LIMIT = 64


def _sum(data):
    """One's complement sum of the big-endian 16-bit words of data (0..0xFFFF).

    65536 = 1 (mod 0xFFFF), so the integer value of the words taken together is
    congruent to their sum: one bignum modulo in C instead of a loop in Python.
    End-around-carry sums never fold to 0 unless every word is 0.
    """
    if len(data) & 1:
        data = data + b"\0"
    v = int.from_bytes(data, "big")
    if v == 0:
        return 0
    return v % 0xFFFF or 0xFFFF


def _fold(s):
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def checksum(data, initial=0):
    """Internet checksum (RFC 1071) of data, plus a partial (un-inverted) sum."""
    return (~_fold(_sum(data) + initial)) & 0xFFFF


def _partial(data):
    # 16-bit one's complement partial sum, not inverted
    return _sum(data)


def udp_checksum(src, dst, sport, dport, payload):
    """UDP checksum with the IPv4 or IPv6 pseudo-header (chosen by address length).

    Returns the value to put in the header: a computed 0 becomes 0xFFFF (RFC 768).
    """
    ulen = 8 + len(payload)
    if len(src) == 16 and len(dst) == 16:
        pseudo = src + dst + struct.pack(">IxxxB", ulen, PROTO_UDP)
    elif len(src) == 4 and len(dst) == 4:
        pseudo = src + dst + struct.pack(">xBH", PROTO_UDP, ulen)
    else:
        raise ValueError("addresses must both be 4 or both be 16 bytes")
    hdr = struct.pack(">HHHH", sport, dport, ulen, 0)
    c = checksum(payload, _partial(pseudo + hdr))
    return c or 0xFFFF


def _udp(src, dst, sport, dport, payload):
    ulen = 8 + len(payload)
    if ulen > 0xFFFF:
        raise ValueError("UDP datagram too long")
    c = udp_checksum(src, dst, sport, dport, payload)
    return struct.pack(">HHHH", sport, dport, ulen, c) + payload


def build_ipv6_udp(src, dst, sport, dport, payload, hop_limit=DEFAULT_HOP_LIMIT):
    """IPv6 header (next header 17) + UDP header + payload."""
    if len(src) != 16 or len(dst) != 16:
        raise ValueError("IPv6 addresses are 16 bytes")
    udp = _udp(src, dst, sport, dport, payload)
    return struct.pack(">IHBB", 0x60000000, len(udp), PROTO_UDP, hop_limit) + src + dst + udp


def build_ipv4_udp(src, dst, sport, dport, payload, ttl=DEFAULT_HOP_LIMIT, ident=0):
    """IPv4 header (20 bytes, DF set, protocol 17, checksum) + UDP header + payload."""
    if len(src) != 4 or len(dst) != 4:
        raise ValueError("IPv4 addresses are 4 bytes")
    udp = _udp(src, dst, sport, dport, payload)
    total = 20 + len(udp)
    if total > 0xFFFF:
        raise ValueError("IPv4 packet too long")
    hdr = struct.pack(">BBHHHBBH", 0x45, 0, total, ident, 0x4000, ttl, PROTO_UDP, 0) + src + dst
    c = checksum(hdr)
    return hdr[:10] + struct.pack(">H", c) + hdr[12:] + udp


def _parse_udp_body(src, dst, udp, verify, zero_ok):
    if len(udp) < 8:
        raise ValueError("UDP header truncated")
    sport, dport, ulen, c = struct.unpack(">HHHH", udp[:8])
    if ulen != len(udp):
        raise ValueError("UDP length mismatch")
    payload = udp[8:]
    if verify:
        if c == 0:
            if not zero_ok:
                raise ValueError("UDP checksum missing")
        elif udp_checksum(src, dst, sport, dport, payload) != c:
            # a correct sum may be carried as 0xFFFF or, in theory, as 0x0000
            raise ValueError("bad UDP checksum")
    return sport, dport, payload


def parse_ipv6_udp(packet):
    """Parse IPv6 + UDP (no extension headers) -> (src, dst, sport, dport, payload)."""
    if len(packet) < 48:
        raise ValueError("IPv6/UDP packet truncated")
    if packet[0] >> 4 != 6:
        raise ValueError("not IPv6")
    plen = (packet[4] << 8) | packet[5]
    if packet[6] != PROTO_UDP:
        raise ValueError("IPv6 next header is not UDP")
    if 40 + plen != len(packet):
        raise ValueError("IPv6 payload length mismatch")
    src = packet[8:24]
    dst = packet[24:40]
    sport, dport, payload = _parse_udp_body(src, dst, packet[40:], True, False)
    return src, dst, sport, dport, payload


def parse_ipv4_udp(packet):
    """Parse IPv4 + UDP -> (src, dst, sport, dport, payload); UDP checksum 0 accepted."""
    if len(packet) < 28:
        raise ValueError("IPv4/UDP packet truncated")
    v = packet[0]
    if v >> 4 != 4:
        raise ValueError("not IPv4")
    ihl = (v & 15) * 4
    if ihl < 20 or len(packet) < ihl + 8:
        raise ValueError("bad IPv4 header length")
    total = (packet[2] << 8) | packet[3]
    if total != len(packet):
        raise ValueError("IPv4 total length mismatch")
    if ((packet[6] << 8) | packet[7]) & 0x3FFF:
        raise ValueError("IPv4 fragment")
    if packet[9] != PROTO_UDP:
        raise ValueError("IPv4 protocol is not UDP")
    if checksum(packet[:ihl]) != 0:
        raise ValueError("bad IPv4 header checksum")
    src = packet[12:16]
    dst = packet[16:20]
    sport, dport, payload = _parse_udp_body(src, dst, packet[ihl:], True, True)
    return src, dst, sport, dport, payload


def parse_ip_udp(packet):
    """Parse an inner IPv6 or IPv4 UDP packet by its version nibble."""
    if not packet:
        raise ValueError("empty packet")
    v = packet[0] >> 4
    if v == 6:
        return parse_ipv6_udp(packet)
    if v == 4:
        return parse_ipv4_udp(packet)
    raise ValueError("bad IP version")


def build_ip_udp(src, dst, sport, dport, payload):
    """(next_header, packet) for tunnel mode, IPv6 or IPv4 by address length."""
    if len(src) == 16:
        return NH_IPV6, build_ipv6_udp(src, dst, sport, dport, payload)
    return NH_IPV4, build_ipv4_udp(src, dst, sport, dport, payload)


def build_udp(sport, dport, payload, src=None, dst=None):
    """Transport mode: UDP header + payload (next header 17).

    With the outer src/dst given the checksum is computed over their pseudo-header;
    without them it is 0 (see the module docstring for why that is acceptable here).
    """
    ulen = 8 + len(payload)
    if ulen > 0xFFFF:
        raise ValueError("UDP datagram too long")
    if src is None or dst is None:
        return struct.pack(">HHHH", sport, dport, ulen, 0) + payload
    return _udp(src, dst, sport, dport, payload)


def parse_udp(segment, src=None, dst=None):
    """Transport mode: parse UDP header + payload -> (sport, dport, payload).

    With outer src/dst given, a nonzero checksum is verified (0 is accepted: see the
    module docstring); without them the checksum is not checked.
    """
    verify = src is not None and dst is not None
    return _parse_udp_body(src, dst, segment, verify, True)


# ---------------------------------------------------------------- address text

_HEX = "0123456789abcdef"


def ip4_pton(text):
    parts = text.split(".")
    if len(parts) != 4:
        raise ValueError("bad IPv4 address")
    out = bytearray(4)
    for i in range(4):
        p = parts[i]
        if not p or len(p) > 3 or not _isdigits(p) or (len(p) > 1 and p[0] == "0"):
            raise ValueError("bad IPv4 address")
        v = int(p)
        if v > 255:
            raise ValueError("bad IPv4 address")
        out[i] = v
    return bytes(out)


def ip4_ntop(b):
    if len(b) != 4:
        raise ValueError("IPv4 address is 4 bytes")
    return "%d.%d.%d.%d" % (b[0], b[1], b[2], b[3])


def _isdigits(s):
    for ch in s:
        if ch < "0" or ch > "9":
            return False
    return True


def _ishex(s):
    for ch in s.lower():
        if _HEX.find(ch) < 0:
            return False
    return True


def _groups(part):
    # "a:b:c" -> list of 16-bit ints; a trailing dotted IPv4 counts as two groups
    if part == "":
        return []
    out = []
    items = part.split(":")
    for i in range(len(items)):
        g = items[i]
        if i == len(items) - 1 and "." in g:
            b = ip4_pton(g)
            out.append((b[0] << 8) | b[1])
            out.append((b[2] << 8) | b[3])
            continue
        if not g or len(g) > 4 or not _ishex(g):
            raise ValueError("bad IPv6 address")
        out.append(int(g, 16))
    return out


def ip6_pton(text):
    """Textual IPv6 (with "::" and optional trailing dotted IPv4) -> 16 bytes (no
    zone here: pton drops one, key and norm keep it)."""
    if "%" in text:
        raise ValueError("zone index not supported")
    dc = text.find("::")
    if dc >= 0:
        if text.find("::", dc + 1) >= 0:
            raise ValueError("bad IPv6 address")
        head = _groups(text[:dc])
        tail_text = text[dc + 2:]
        if tail_text.startswith(":") or text[:dc].endswith(":"):
            raise ValueError("bad IPv6 address")
        tail = _groups(tail_text)
        if len(head) + len(tail) > 7:
            raise ValueError("bad IPv6 address")
        if "." in text[:dc]:
            raise ValueError("bad IPv6 address")
        words = head + [0] * (8 - len(head) - len(tail)) + tail
    else:
        words = _groups(text)
        if len(words) != 8:
            raise ValueError("bad IPv6 address")
    return struct.pack(">8H", *words)


def ip6_ntop(b):
    """16 bytes -> RFC 5952 text (lower case, longest run of >= 2 zero groups as "::")."""
    if len(b) != 16:
        raise ValueError("IPv6 address is 16 bytes")
    w = struct.unpack(">8H", b)
    best = -1
    bestlen = 1
    i = 0
    while i < 8:
        if w[i] == 0:
            j = i
            while j < 8 and w[j] == 0:
                j += 1
            if j - i > bestlen:
                best = i
                bestlen = j - i
            i = j
        else:
            i += 1
    if best < 0:
        return ":".join(["%x" % x for x in w])
    head = ":".join(["%x" % x for x in w[:best]])
    tail = ":".join(["%x" % x for x in w[best + bestlen:]])
    return head + "::" + tail


def split_zone(text):
    """"fe80::1%2" -> ("fe80::1", "2"); no zone: (text, None). The zone (RFC 4007
    section 11) names the link of a link-local address: a number, or an interface
    name on hosts that have names."""
    i = text.find("%")
    if i < 0:
        return text, None
    zone = text[i + 1:]
    if not zone or ":" not in text[:i]:
        raise ValueError("bad zone in %r" % text)
    return text[:i], zone


def _zone(zone):
    """A zone in one spelling: an interface name becomes its index where the platform
    can say (CPython: socket.if_nametoindex), so "%eth0" and "%2" are one zone."""
    if _isdigits(zone):
        return str(int(zone))
    try:
        import socket
        return str(socket.if_nametoindex(zone))
    except Exception:       # MicroPython, or no such interface: the name is the zone
        return zone


def norm(text):
    """Address text in one spelling (RFC 5952 for IPv6), its zone kept: two zones are
    two addresses ("fe80::1%2" and "fe80::1%3" are different peers)."""
    if "%" not in text:
        return ntop(pton(text))
    addr, zone = split_zone(text)
    return ntop(ip6_pton(addr)) + "%" + _zone(zone)


def key(text):
    """Packed bytes that tell addresses apart, zone included: pton's 16 bytes, then
    "%zone" for a zoned address (so at most 16 + 1 + the zone's length)."""
    if "%" not in text:
        return pton(text)
    addr, zone = split_zone(text)
    return ip6_pton(addr) + b"%" + _zone(zone).encode()


def unkey(b):
    """The text of key(text)'s bytes."""
    if len(b) > 16 and b[16:17] == b"%":
        return ip6_ntop(b[:16]) + "%" + bytes(b[17:]).decode()
    return ntop(b)


def pton(text):
    """IPv6 or IPv4 text -> packed bytes (16 or 4; a zone is dropped: see key)."""
    if "%" in text:
        text = split_zone(text)[0]
    if ":" in text:
        return ip6_pton(text)
    return ip4_pton(text)


def ntop(b):
    """Packed 16 or 4 bytes -> text."""
    if len(b) == 16:
        return ip6_ntop(b)
    return ip4_ntop(b)
