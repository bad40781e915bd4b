"""Classic libpcap files of UDP datagrams with synthesized IP and UDP headers.

    w = PcapWriter("out.pcap")                       # LINKTYPE_RAW (101): IPv4 or IPv6
    w.udp(time.time(), "127.1.2.3", 4500, "127.1.2.4", 4500, payload)
    w.close()

The capture is made at the socket layer (the sender records what it handed to
sendto), so there is no link layer: each record is one IP packet built here, with a
correct total/payload length, IPv4 header checksum and UDP checksum (RFC 768, over the
pseudo-header; IPv6 per RFC 8200 section 8.1). Wireshark and tshark read the file as
"Raw IP". Records are written as they come (a run cut short still leaves a readable
file up to the last record).

`read(path)` parses a file written here (or any classic little/big-endian pcap with
microsecond timestamps) back to [(ts, linktype, packet bytes)], for tests.
"""

from __future__ import annotations

import socket
import struct

LINKTYPE_RAW = 101
_MAGIC = 0xA1B2C3D4
_SNAPLEN = 65535


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of data."""
    return ~_sum16(data) & 0xFFFF


def udp_header(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """The 8-byte UDP header with its checksum over the pseudo-header of src/dst
    (packed, 4 or 16 bytes)."""
    length = 8 + len(payload)
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, 17, length)
    else:
        pseudo = src + dst + struct.pack("!I3xB", length, 17)
    hdr = struct.pack("!HHHH", sport, dport, length, 0)
    c = checksum(pseudo + hdr + payload)
    return struct.pack("!HHHH", sport, dport, length, c or 0xFFFF)


def ipv4_udp(src: str, sport: int, dst: str, dport: int, payload: bytes, ident: int = 0,
             ttl: int = 64) -> bytes:
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    udp = udp_header(s, d, sport, dport, payload)
    total = 20 + len(udp) + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident & 0xFFFF, 0x4000, ttl, 17, 0, s, d)
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return hdr + udp + payload


def ipv6_udp(src: str, sport: int, dst: str, dport: int, payload: bytes, hop: int = 64) -> bytes:
    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    udp = udp_header(s, d, sport, dport, payload)
    hdr = struct.pack("!IHBB16s16s", 6 << 28, len(udp) + len(payload), 17, hop, s, d)
    return hdr + udp + payload


class PcapWriter:
    def __init__(self, path: str):
        self.path = path
        self.count = 0
        self._ident = 0
        self._f = open(path, "wb")
        self._f.write(struct.pack("<IHHiIII", _MAGIC, 2, 4, 0, 0, _SNAPLEN, LINKTYPE_RAW))

    def udp(self, ts: float, src: str, sport: int, dst: str, dport: int, payload: bytes) -> None:
        """Append one UDP datagram sent at wall-clock time ts (seconds)."""
        if ":" in src:
            pkt = ipv6_udp(src, sport, dst, dport, bytes(payload))
        else:
            self._ident = (self._ident + 1) & 0xFFFF
            pkt = ipv4_udp(src, sport, dst, dport, bytes(payload), self._ident)
        sec = int(ts)
        usec = int(round((ts - sec) * 1e6))
        if usec >= 1000000:
            sec, usec = sec + 1, usec - 1000000
        cap = pkt[:_SNAPLEN]
        self._f.write(struct.pack("<IIII", sec, usec, len(cap), len(pkt)) + cap)
        self.count += 1

    def flush(self) -> None:
        if not self._f.closed:
            self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def read(path: str):
    """[(ts, linktype, packet)] of a classic pcap file (microsecond resolution)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        raise ValueError("pcap: short global header")
    magic = struct.unpack("<I", data[:4])[0]
    if magic == _MAGIC:
        e = "<"
    elif magic == 0xD4C3B2A1:
        e = ">"
    else:
        raise ValueError("pcap: bad magic %08x" % magic)
    _, vmaj, vmin, _, _, _, linktype = struct.unpack(e + "IHHiIII", data[:24])
    if (vmaj, vmin) != (2, 4):
        raise ValueError("pcap: version %d.%d" % (vmaj, vmin))
    out = []
    off = 24
    while off < len(data):
        if off + 16 > len(data):
            raise ValueError("pcap: truncated record header at %d" % off)
        sec, usec, incl, orig = struct.unpack(e + "IIII", data[off:off + 16])
        off += 16
        if off + incl > len(data) or incl > orig:
            raise ValueError("pcap: truncated record at %d" % off)
        out.append((sec + usec / 1e6, linktype, data[off:off + incl]))
        off += incl
    return out
