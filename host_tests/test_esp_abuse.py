"""ESP abuse on a real link (issue 8): every forged, replayed, truncated or oversize
datagram is counted by the receiver and none reaches its application.

Two of our nodes (``host_tests/ctlnode.py``: the real Node on the host board) in
network namespaces joined by a veth pair, IPv4, zero configuration (NULL auth, then
the proof lifts the SA to AUTHENTICATED). A sends genuine datagrams to B; tcpdump in
B's namespace captures the genuine ESP packets A -> B:4500 on the wire. A third
process in A's namespace then injects, from a raw socket with A's address and
source port 4500 (A's NAT-T port: to B it looks like the peer), exact replays, bit
flips, unknown SPIs, every truncation, oversize datagrams and keepalive/marker
variants. The judge is B's own counters (``node.status()`` and the CHILD SA's
``EspIn.drops``), compared kind by kind with what an independent model of RFC 4303 /
RFC 3948 receive processing predicts for each packet; B's app must have received
exactly the genuine datagrams, and the SA must still carry a genuine one afterwards.
"""

import random
import struct
import time

from host_tests.ctlnode import CtlNode
from host_tests.peers import capture as cap
from host_tests.peers import netns as nn
from host_tests.peers import require_real_peers

APP = 7000
NATT = 4500
GENUINE = 80            # > 64: the first ones fall out of the replay window
WINDOW = 64             # EspIn's default replay window
MAX_DATAGRAM = 2048     # node._MAX_DATAGRAM: larger ones are dropped by length first

# Counters of B that mean "caught and dropped" (or, for the keepalive, consumed):
NODE_CAUGHT = ("esp_drop", "no_sa", "bad_datagram", "drop_oversize", "keepalive_in")

# The injector: a raw IPv4 socket (the kernel writes the IP header with A's address,
# we write the UDP header: source port 4500, correct checksum), paced so that neither
# the kernel's nor the board's receive queue at B overflows.
INJECT = r"""
import socket, struct, sys, time
src, dst, sport, dport, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def csum(b):
    if len(b) & 1:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
data = open(path, "rb").read()
off = n = 0
while off < len(data):
    (ln,) = struct.unpack_from("!I", data, off)
    p = data[off + 4: off + 4 + ln]
    off += 4 + ln
    ulen = 8 + len(p)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, ulen)
    c = csum(pseudo + struct.pack("!HHHH", sport, dport, ulen, 0) + p) or 0xFFFF
    s.sendto(struct.pack("!HHHH", sport, dport, ulen, c) + p, (dst, 0))
    n += 1
    if n % 16 == 0 or len(p) > 1500:
        time.sleep(0.004)
print(n)
"""


def udp_snmp(ns):
    """The kernel's UDP counters in namespace ns (InDatagrams, RcvbufErrors, ...)."""
    lines = [l.split() for l in ns.run(["cat", "/proc/net/snmp"]).stdout.splitlines() if l.startswith("Udp:")]
    return dict(zip(lines[0][1:], (int(x) for x in lines[1][1:])))


class Model:
    """What RFC 3948 classification + RFC 4303 inbound processing must do with a
    datagram at B (written from the RFCs and the node's documented limits, not from
    the firmware's code): which counter catches it."""

    def __init__(self, spis, top):
        self.spis = spis        # B's inbound SPIs
        self.top = top          # highest sequence number B accepted (all of 1..top seen)

    def counter(self, p):
        n = len(p)
        if n > MAX_DATAGRAM:
            return "drop_oversize"
        if n == 1:
            return "keepalive_in" if p == b"\xff" else "bad_datagram"
        if n < 4:
            return "bad_datagram"
        if p[:4] == b"\0\0\0\0":
            return "ike"                      # non-ESP marker: the IKE engine's business
        if n < 8:
            return "bad_datagram"
        spi, seq = struct.unpack_from("!II", p)
        if spi not in self.spis:
            return "no_sa"
        if n < 8 + 16 + 16 + 16 or (n - 40) % 16:
            return "esp_drop/length"
        if seq == 0:
            return "esp_drop/replay"
        if seq <= self.top:
            return "esp_drop/old" if self.top - seq >= WINDOW else "esp_drop/replay"
        return "esp_drop/icv"                  # an unseen sequence number needs the keys


def flip(p, byte, bit):
    b = bytearray(p)
    b[byte] ^= 1 << bit
    return bytes(b)


def with_seq(p, seq):
    return p[:4] + struct.pack("!I", seq) + p[8:]


def build_kinds(genuine, spis, rng):
    """{kind: [datagrams]} from the captured genuine ESP packets."""
    big = max(genuine, key=len)
    last = genuine[-1]
    k = {}
    k["replay"] = [p for p in genuine for _ in range(5)]
    fl = []
    for p in (genuine[0], genuine[40], last):            # original sequence numbers
        for byte, bits in ((0, 8), (1, 8), (2, 8), (3, 8),      # SPI
                           (4, 8), (5, 8), (6, 8), (7, 8),      # sequence number
                           (8, 8), (23, 8),                     # IV
                           (24, 8), (len(p) - 17, 8),           # ciphertext
                           ):
            for bit in range(bits):
                fl.append(flip(p, byte, bit))
        for byte in range(len(p) - 16, len(p)):              # every bit of the ICV
            for bit in range(8):
                fl.append(flip(p, byte, bit))
    # the same flips on a sequence number B has not seen: only the ICV can catch these
    for i, byte in enumerate([8, 23, 24, len(last) - 17] + list(range(len(last) - 16, len(last)))):
        for bit in range(8):
            fl.append(flip(with_seq(last, 1000 + i * 8 + bit), byte, bit))
    fl.append(with_seq(last, 0))                             # sequence 0 is never sent
    fl.append(with_seq(last, 0xFFFFFFFF))
    k["bitflip"] = fl
    unk = []
    for spi in list(range(1, 256)) + [rng.randrange(256, 1 << 32) for _ in range(100)] + [0xFFFFFFFF]:
        if spi in spis:
            continue
        body = rng.randbytes(16 + 16 * rng.randrange(1, 6) + 16)
        unk.append(struct.pack("!II", spi, rng.randrange(1, 1000)) + body)
    unk.append(struct.pack("!I", 0xFFFFFFFF) + last[4:])    # a genuine body, wrong SPI
    k["unknown_spi"] = unk
    k["truncated"] = [big[:n] for n in range(0, len(big) + 1)]
    k["oversize"] = [big[:8] + rng.randbytes(n - 8) for n in (MAX_DATAGRAM, MAX_DATAGRAM + 1, 3000, 60000, 65507)]
    spi_b = big[:4]
    k["keepalive_marker"] = [
        b"\xff", b"\xff\xff", b"\xfe", b"\x00", b"\xff" * 3, b"\xff" * 4, b"\xff" * 7, b"\xff" * 8,
        b"\0\0\0\0", b"\0\0\0\0\xff", b"\0\0\0\0" + rng.randbytes(24), b"\0\0\0\0" + rng.randbytes(28),
        b"\0\0\0\0" + rng.randbytes(200), b"\0\0\0\0" + last,       # an ESP packet behind a marker
        b"\0\0\0\0" + b"\0" * 28, b"\0\0\0", b"\0\0\0\0\0\0\0\0" + last[8:],
        spi_b, spi_b + b"\0\0\0", spi_b + b"\0\0\0\0",             # B's own SPI, too short
        b"\xff" + last[1:],
    ]
    return k


def write_packets(path, pkts):
    with open(path, "wb") as f:
        for p in pkts:
            f.write(struct.pack("!I", len(p)) + p)


def caught(st, base):
    """Sum of the catching counters' deltas (node counters + the engine's drop_*)."""
    n = sum(st["node"][c] - base["node"][c] for c in NODE_CAUGHT)
    eng = lambda s: sum(v for k, v in s["engine"].items() if k.startswith("drop_"))  # noqa: E731
    return n + eng(st) - eng(base)


def deltas(st, base):
    out = {}
    for c, v in st["node"].items():
        if v != base["node"].get(c, 0):
            out[c] = v - base["node"].get(c, 0)
    for c, v in st["engine"].items():
        if v != base["engine"].get(c, 0):
            out["engine." + c] = v - base["engine"].get(c, 0)
    for spi, ch in st["children"].items():
        for r, v in ch["drops"].items():
            d = v - base["children"].get(spi, {}).get("drops", {}).get(r, 0)
            if d:
                out["esp_drop/" + r] = out.get("esp_drop/" + r, 0) + d
    return out


def test_esp_abuse_is_counted_and_never_delivered(tmp_path):
    require_real_peers(charon=False, capture=True)
    rng = random.Random(8)
    spd = [{"peer": "any", "port": APP, "action": "require", "level": "encrypted"}]
    with nn.Netns(2, net_id=81) as net:
        a, b = net.ns
        cfg = {"keepalive": 0, "spd": spd, "endpoints": [APP]}
        B = CtlNode(b, dict(cfg, state=str(tmp_path / "b")), str(tmp_path / "b.err"))
        A = CtlNode(a, dict(cfg, state=str(tmp_path / "a")), str(tmp_path / "a.err"))
        assert A.call("connect", host=b.ip4, timeout=5).get("level", 0) >= 1
        assert A.call("wait_level", host=b.ip4, level=2, timeout=5).get("level") == 2
        time.sleep(0.2)                        # the proofs' INFORMATIONAL exchanges are done
        sent = []
        pcap = str(tmp_path / "genuine.pcap")
        with cap.Capture(b, "veth0", f"udp and src host {a.ip4} and dst port {NATT}", pcap):
            for i in range(GENUINE):
                d = (b"genuine %d " % i) + (b"x" * 150 if i == GENUINE - 1 else b"")
                r = A.call("send", host=b.ip4, port=APP, data=d.hex(), timeout=2)
                assert r.get("level") == 2, r
                sent.append(d)
            deadline = time.monotonic() + 5
            while B.call("status")["delivered"] < GENUINE and time.monotonic() < deadline:
                time.sleep(0.05)
        rows = cap.tshark_fields(pcap, ["udp.payload"])
        wire = [bytes.fromhex(r[0].replace(":", "")) for r in rows if r and r[0]]
        genuine = [p for p in wire if len(p) > 8 and p[:4] != b"\0\0\0\0"]
        assert len(genuine) == GENUINE, (len(wire), len(genuine))
        assert [struct.unpack_from("!I", p, 4)[0] for p in genuine] == list(range(1, GENUINE + 1))

        base0 = B.call("status")
        spis = set(int(s, 16) for s in base0["children"])
        assert len(spis) == 1 and struct.unpack_from("!I", genuine[0])[0] in spis
        assert base0["node"]["esp_in"] >= GENUINE and base0["delivered"] == GENUINE
        model = Model(spis, GENUINE)
        kinds = build_kinds(genuine, spis, rng)
        snmp0 = udp_snmp(b)
        report = {}
        total = 0
        for kind, pkts in kinds.items():
            path = str(tmp_path / (kind + ".bin"))
            write_packets(path, pkts)
            base = B.call("status")
            r = a.run([nn.VENV_PYTHON, "-c", INJECT, a.ip4, b.ip4, str(NATT), str(NATT), path], timeout=60)
            assert int(r.stdout.strip()) == len(pkts)
            deadline = time.monotonic() + 10
            while True:
                st = B.call("status")
                if caught(st, base) >= len(pkts) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            d = deltas(st, base)
            want = {}
            for p in pkts:
                c = model.counter(p)
                want[c] = want.get(c, 0) + 1
            report[kind] = (len(pkts), d)
            total += len(pkts)
            # every injected datagram was caught by exactly one counter
            assert caught(st, base) == len(pkts), (kind, len(pkts), d, want, st["sock_dropped"])
            # ... the one the model predicts (the engine's drops for the marker cases)
            for c, n in want.items():
                if c == "ike":
                    eng = sum(v for k, v in d.items() if k.startswith("engine.drop_"))
                    assert eng == n and d.get("engine.rx") == n, (kind, d, want)
                elif c.startswith("esp_drop/"):
                    assert d.get(c) == n, (kind, c, d, want)
                else:
                    assert d.get(c) == n, (kind, c, d, want)
            assert d.get("esp_drop", 0) == sum(n for c, n in want.items() if c.startswith("esp_drop/"))
            assert d.get("esp_in", 0) == 0 and st["delivered"] == GENUINE, (kind, d)
            assert st["sock_dropped"] == 0 and st["ep_dropped"] == 0
        snmp1 = udp_snmp(b)
        # The kernel handed B's sockets every injected datagram: nothing lost before B.
        assert snmp1.get("RcvbufErrors", 0) == snmp0.get("RcvbufErrors", 0)
        assert snmp1["InDatagrams"] - snmp0["InDatagrams"] == total
        assert snmp1.get("InCsumErrors", 0) == snmp0.get("InCsumErrors", 0)

        # The SA still works: a genuine datagram after the abuse arrives, at its level.
        r = A.call("send", host=b.ip4, port=APP, data=b"after the abuse".hex(), timeout=2)
        assert r.get("level") == 2, r
        deadline = time.monotonic() + 3
        while B.call("status")["delivered"] < GENUINE + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        items = B.call("delivered")["items"]
        assert [bytes.fromhex(x[0]) for x in items] == sent + [b"after the abuse"]
        assert {(x[1], x[2], x[3], x[4]) for x in items} == {(a.ip4, APP, 2, APP)}
        end = B.call("status")
        assert end["node"]["clear_in"] == 0 and end["node"]["inner_refused"] == 0
        assert end["child_sas"] == 1 and end["ike_sas"] == {"established": 1}
        A.stop()
        B.stop()
    print("\n[esp abuse] %d datagrams injected, %d genuine delivered (+1 after), none injected delivered"
          % (total, GENUINE))
    for kind, (n, d) in report.items():
        print("  %-17s %5d  %s" % (kind, n, ", ".join("%s +%d" % kv for kv in sorted(d.items()))))
    print("  kernel UDP at B: InDatagrams +%d, RcvbufErrors +%d"
          % (snmp1["InDatagrams"] - snmp0["InDatagrams"], snmp1["RcvbufErrors"] - snmp0["RcvbufErrors"]))
