"""Fuzzing the node's receive path with mutated real captures (issue 8, "Figures to reach").

    python -m host_tests.fuzz_node --packets 1000000 --seed 1 --workers 2 --json

What runs, per worker (deterministic for a seed: every board draws from a seeded RNG
and a fake clock):

1. Capture. Real nodes (`pnpipsec.node.Node`) talk over a synchronous in-memory wire
   and every datagram is recorded at the socket layer (both roles' view), together with
   the plaintext payload lists the engines encrypted: A -> B on port 500 then 4500
   (IKE_SA_INIT, IKE_AUTH, proof INFORMATIONALs), B -> M on 4500 (PFS), C -> B (then
   CHILD and IKE DELETE), liveness checks, CHILD rekeys both ways, IKE rekeys both ways,
   ESP both ways, NAT keepalives, a cookie exchange (9 raw engines), INVALID_KE and
   NO_PROPOSAL_CHOSEN answers.
2. Fuzz. The target is node B with an established NULL-auth transport SA to the
   legitimate peer A (proved: AUTHENTICATED). Mutated datagrams go straight into
   `B._datagram(data, addr, sock, natt)` (natt=True for the NAT-T socket, natt=False
   for the port-500 path) from A's address, the attacker M's, B's own and a pool of
   IPv4/IPv6 strangers, while the clock runs and B's, A's and M's timer passes run.
   An exception out of `_datagram` is a finding (the runtime's receive loop would
   swallow it; we want to know). Families:
     raw     corpus datagrams with bit flips, byte sets, truncations, garbage, IKE
             header length lies, generic payload length lies, next-payload rewrites,
             payload reorders / duplicates / drops / splices, ESP length and sequence
             lies, marker add/remove, SPI swaps onto B's live IKE and ESP SPIs (MIDs
             and sequence numbers set so they pass the lookups and reach the ICV
             checks), huge datagrams up to 65,000 bytes (garbage and length-consistent);
     marker  RFC 3948 keepalive / non-ESP marker edge cases;
     sealed  what an attacker holding its *own* SA's keys can send: mutated payload
             chains encrypted and authenticated with the keys of B's SAs with M or a
             stranger (never A's), at the right MID (requests and answers to B's
             pending requests, valid NULL AUTH in IKE_AUTH, valid proofs of the
             attacker's key), and ESP sealed with those SAs' keys (UDP header lies,
             odd next headers, bad padding);
     clear   (extra, not counted in --packets) clear datagrams from strangers to the
             app port: B probes them, so forged IKE_SA_INIT answers meet B's
             initiator code too.
   Every --genuine-every packets A sends a numbered datagram to B through its SA and B
   one to A; each must arrive at once, in order, with level AUTHENTICATED, on the SA
   chain set up at the start (CHILD and IKE rekeys by the timers are followed).
   Every --check-every packets every table of B is measured against fixed bounds.
3. Oversize probe: 65,000-byte datagrams of several shapes, one call at a time under
   tracemalloc: transient bytes per call, bytes retained, time per call (to judge a
   length check before parsing: run before and after the change).

The summary (JSON with --json) has packets by family, kind and mutator, how far they
got (counter deltas of B's engine and node per family), B's counters by drop reason,
table maxima, memory, genuine datagrams sent/delivered, findings with reproducers,
and packets/s. Exit status 1 when a finding, a lost genuine datagram or a table over
its bound was seen.
"""

import argparse
import gc
import json
import os
import random
import struct
import sys
import time
import traceback
import tracemalloc
from collections import Counter, deque

from pnp_hostboard.board import HostBoard
from pnp_hostboard.crypto import fast_ed25519
from pnpipsec import AUTHENTICATED, ticks, udpencap
from pnpipsec.identity import Identity
from pnpipsec.ike import auth as ike_auth
from pnpipsec.ike import codec
from pnpipsec.ike.engine import Engine
from pnpipsec.ike.sa import LocalIdentity
from pnpipsec.crypto.hmac import hmac_sha256
from pnpipsec.node import Endpoint, Node, PeerEntry, zero_config

A_HOST, B_HOST, M_HOST, C_HOST = "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"
APP_B, APP_A = 7000, 7001
STRANGERS = ["10.0.1.%d" % i for i in range(1, 13)] + ["fd00::%x" % i for i in range(1, 9)] \
    + ["192.168.7.7", "::1", "0.0.0.0", "255.255.255.255"]
MARKER = udpencap.MARKER
# Lifetimes short enough that the timers rekey the legitimate SA during a run.
CHILD_LIFE, IKE_LIFE = 300, 900
KNOWN_PT = (33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 53)
NEXT_CHOICES = KNOWN_PT + (0, 1, 2, 32, 49, 54, 127, 128, 200, 255)
INTERESTING8 = (0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 46, 63, 64, 127, 128, 254, 255)
HUGE = 65000
MAX_DATAGRAM = 65000       # payload bytes a UDP datagram can carry, rounded down


# ------------------------------------------------------------------ the world

class Clock:
    """The core's ms ticks, starting 30 s before they wrap (so every run crosses it)."""

    def __init__(self, t=ticks.MASK - 30000):
        self.t = t

    def adv(self, secs):
        self.t = ticks.add(self.t, round(secs * 1000))


class FuzzBoard(HostBoard):
    """The host board's AES / DH / signatures, a seeded RNG and a fake clock."""
    name = "fuzz"

    def __init__(self, clock, seed):
        super().__init__(state_dir=None, bind6=None, bind4=None)
        self.clock = clock
        self._rng = random.Random(seed)

    def rand(self, n):
        return self._rng.randbytes(n)

    def now_ms(self):
        return self.clock.t


class FakeSock:
    def __init__(self, wire, host, port):
        self.wire, self.host, self.port = wire, host, port

    def sendto(self, data, addr):
        self.wire.send(self.host, self.port, bytes(data), addr)

    def close(self):
        pass


class Wire:
    """Synchronous datagram delivery between the nodes the harness owns; datagrams to
    anyone else (fuzz sources) are counted and dropped."""

    def __init__(self, on_escape):
        self.nodes = {}              # host -> Node or _RawPeer
        self.q = deque()
        self.capture = None          # list of (src, sport, dst, dport, data) when recording
        self.to_strangers = 0
        self.to_nodes = 0
        self.on_escape = on_escape

    def send(self, src, sport, data, addr):
        rec = (src, sport, addr[0], addr[1], data)
        if self.capture is not None:
            self.capture.append(rec)
        if addr[0] in self.nodes:
            self.to_nodes += 1
            self.q.append(rec)
        else:
            self.to_strangers += 1

    def _deliver(self, rec):
        src, sport, dst, dport, data = rec
        node = self.nodes.get(dst)
        if node is None:
            return
        if isinstance(node, _RawPeer):
            node.receive(data, (src, sport), dport)
            return
        if dport == node.natt_port:
            sock, natt = node.sock_natt, True
        elif dport == node.ike_port:
            sock, natt = node.sock_ike, False
        else:
            return                    # no such port: dropped
        try:
            node._datagram(data, (src, sport), sock, natt)
        except Exception as e:        # a finding whoever it hits
            self.on_escape(dst, data, (src, sport), natt, e, "wire")

    def settle(self, limit=2000):
        """Deliver and pump until nothing moves; False when it would not stop."""
        for _ in range(limit):
            moved = False
            while self.q:
                self._deliver(self.q.popleft())
                moved = True
            for node in list(self.nodes.values()):
                eng = node.engine
                if eng.out or eng.events:
                    if isinstance(node, _RawPeer):
                        node.pump()
                    else:
                        node._pump()
                    moved = True
            if not moved:
                return True
        return False


class _RawPeer:
    """A bare engine on the wire (cookie / error exchanges of the capture)."""

    def __init__(self, wire, host, rand, aes, port=4500):
        self.wire, self.host, self.port = wire, host, port
        self.engine = Engine(rand, aes, LocalIdentity(), natt_ports=(500, 4500))

    def receive(self, data, addr, dport):
        if dport == 4500 or data[:4] == MARKER:
            kind, body = udpencap.classify(data)
            if kind != "ike":
                return
            data = body
        self.engine.receive(data, addr, 0)

    def pump(self):
        for msg, addr in self.engine.pop_datagrams():
            if addr[1] == 4500:
                msg = MARKER + msg
            self.wire.send(self.host, self.port, msg, addr)
        self.engine.pop_events()


def _node(world, host, seed, peers=(), accept_any=None):
    board = FuzzBoard(world.clock, seed)
    node = Node(board, Identity(board.rand(32)), peers=peers, ike_port=500, natt_port=4500,
                accept_any=accept_any, keepalive=20.0)
    node.sock_natt = FakeSock(world.wire, host, 4500)
    node.sock_ike = FakeSock(world.wire, host, 500)
    node.host = host
    world.wire.nodes[host] = node
    return node


def _endpoint(node, port):
    """An endpoint without its clear-socket task (nothing here runs an event loop)."""
    ep = Endpoint(node, port)
    node.endpoints[port] = ep
    return ep


def _cfg(**kw):
    kw.setdefault("child_lifetime", CHILD_LIFE)
    kw.setdefault("ike_lifetime", IKE_LIFE)
    return zero_config(**kw)


# ------------------------------------------------------------------ IKE bytes helpers

def ike_walk(m):
    """[(offset, type)] of the generic payload headers of the unencrypted chain (stops
    at SK or at the first length that does not fit)."""
    out = []
    n = len(m)
    if n < 28:
        return out
    t = m[16]
    off = 28
    while t and off + 4 <= n and len(out) < 64:
        out.append((off, t))
        plen = (m[off + 2] << 8) | m[off + 3]
        if t == 46 or plen < 4:
            break
        t = m[off]
        off += plen
    return out


def ike_split(m):
    """(header28, [(type, flags, body)]) when the chain parses exactly, else None."""
    n = len(m)
    if n < 28:
        return None
    t = m[16]
    off = 28
    out = []
    while t:
        if off + 4 > n or len(out) > 64:
            return None
        plen = (m[off + 2] << 8) | m[off + 3]
        if plen < 4 or off + plen > n:
            return None
        out.append((t, m[off + 1], bytes(m[off + 4:off + plen])))
        t = m[off]
        off += plen
    if off != n:
        return None
    return bytes(m[:28]), out


def ike_join(hdr, pl):
    body = []
    for i, (t, fl, b) in enumerate(pl):
        nxt = pl[i + 1][0] if i + 1 < len(pl) else 0
        n = len(b) + 4
        body.append(bytes((nxt, fl & 0xFF, (n >> 8) & 0xFF, n & 0xFF)) + b)
    body = b"".join(body)
    h = bytearray(hdr)
    h[16] = pl[0][0] if pl else 0
    h[24:28] = (28 + len(body)).to_bytes(4, "big")
    return bytes(h) + body


def fix_len(m):
    if len(m) >= 28:
        m = bytearray(m)
        m[24:28] = len(m).to_bytes(4, "big")
    return m


def chain_bytes(payloads):
    """Inner chain from [(type, body)] or [(type, flags, body)]."""
    out = []
    for i, p in enumerate(payloads):
        t, fl, b = p if len(p) == 3 else (p[0], 0, p[1])
        nxt = payloads[i + 1][0] if i + 1 < len(payloads) else 0
        n = len(b) + 4
        out.append(bytes((nxt, fl & 0xFF, (n >> 8) & 0xFF, n & 0xFF)) + b)
    return b"".join(out)


def seal_ike(aes, rng, spi_i, spi_r, exch, flags, mid, first, inner, ek, ak, pad_lie=None):
    """An SK message around raw inner bytes, with a correct ICV (RFC 7296 3.14)."""
    pad = (16 - (len(inner) + 1) % 16) % 16
    padlen = pad if pad_lie is None else pad_lie
    iv = rng.randbytes(16)
    ct = aes.cbc_encrypt(ek, iv, inner + bytes(pad) + bytes((padlen & 0xFF,)))
    n = 4 + 16 + len(ct) + 16
    total = 28 + n
    m = (spi_i + spi_r + struct.pack(">BBBBII", 46, 0x20, exch & 0xFF, flags & 0xFF,
                                     mid & 0xFFFFFFFF, total)
         + bytes((first & 0xFF, 0, (n >> 8) & 0xFF, n & 0xFF)) + iv + ct)
    return m + hmac_sha256(ak, m)[:16]


def seal_esp(aes, rng, spi, seq, ek, ak, plaintext):
    """An ESP packet around raw plaintext (caller makes it a multiple of 16)."""
    iv = rng.randbytes(16)
    body = struct.pack(">II", spi, seq & 0xFFFFFFFF) + iv + aes.cbc_encrypt(ek, iv, plaintext)
    return body + hmac_sha256(ak, body)[:16]


def esp_plain(payload, nh, pad_ok=True, rng=None):
    n = len(payload)
    padlen = (14 - n) % 16
    tail = bytes(range(1, padlen + 1)) + bytes((padlen, nh & 0xFF))
    pt = bytearray(payload + tail)
    if not pad_ok and rng is not None:
        k = rng.randrange(3)
        if k == 0:
            pt[-2] = rng.randrange(256)          # pad length lie
        elif k == 1 and padlen:
            pt[-3] ^= 1 + rng.randrange(255)     # pad byte wrong
        else:
            pt[-2] = min(255, len(pt) - 1)
    return bytes(pt)


# ------------------------------------------------------------------ the harness

class Fuzzer:
    def __init__(self, seed, packets, genuine_every=50, timer_every=20, check_every=100,
                 trace=True, oversize=True, clear_rate=0.01, dt=0.02, log=None,
                 keep_findings=20):
        self.seed = seed
        self.packets = packets
        self.genuine_every = genuine_every
        self.timer_every = timer_every
        self.check_every = check_every
        self.trace = trace
        self.do_oversize = oversize
        self.clear_rate = clear_rate
        self.dt = dt
        self.log = log or (lambda s: None)
        self.rng = random.Random(seed)
        self.clock = Clock()
        self.wire = Wire(self._escape)
        self.findings = {}           # signature -> finding dict (first seen) with count
        self.keep_findings = keep_findings
        self.cur = None              # (family, kind, mutators, packet index) being fed
        self.by_family = Counter()
        self.by_kind = Counter()
        self.by_mut = Counter()
        self.by_path = Counter()
        self.reach = {}              # family -> Counter of B counters that moved
        self.esp_reasons = Counter()
        self.replies = Counter()     # family -> packets that made B send something
        self.live_hits = Counter()   # family -> packets that named a live SPI of B
        self.sizes = Counter()
        self.table_max = Counter()
        self.tables_over = {}
        self.genuine = {"a_to_b_sent": 0, "a_to_b_delivered": 0, "b_to_a_sent": 0,
                        "b_to_a_delivered": 0, "lost": [], "wrong": []}
        self.attacker_delivered = 0
        self.m_restarts = 0
        self.sa_chain_events = Counter()
        self.legit_breaks = []
        self.events = {}             # family -> Counter of B's engine events it caused
        self.handled = Counter()     # family -> IKE messages a handler took (MID moved / answer taken)
        self.mem = {}
        self.mem_points = []
        self.clear_sent = 0
        self.esp_seq = {}            # spi -> last sequence number we sealed for it
        self._target = None          # the SA of B a generated packet aims at
        self.attacker_key = Identity(self.rng.randbytes(32))
        self._node_seed = seed * 1000

    # -- findings ----------------------------------------------------------------
    def _escape(self, where, data, addr, natt, exc, via):
        tb = traceback.extract_tb(exc.__traceback__)
        site = tb[-1] if tb else None
        loc = "%s:%d:%s" % (os.path.relpath(site.filename), site.lineno, site.name) if site else "?"
        sig = "%s %s at %s" % (type(exc).__name__, exc, loc)
        sig_key = "%s@%s" % (type(exc).__name__, loc)
        f = self.findings.get(sig_key)
        if f is None:
            if len(self.findings) >= self.keep_findings:
                return
            fam, kind, muts, idx = self.cur or ("setup", "", (), -1)
            f = self.findings[sig_key] = {
                "what": "exception escaped %s._datagram" % ("B" if where == B_HOST else where),
                "exception": sig, "count": 0, "seed": self.seed, "packet": idx,
                "family": fam, "kind": kind, "mutators": list(muts), "via": via,
                "addr": list(addr), "natt": natt, "len": len(data),
                "datagram_hex": data[:512].hex() + ("..." if len(data) > 512 else ""),
                "traceback": [("%s:%d %s" % (os.path.relpath(t.filename), t.lineno, t.name))
                              for t in tb[-6:]]}
        f["count"] += 1

    def _note(self, what, **kw):
        f = self.findings.get(what)
        if f is None and len(self.findings) < self.keep_findings:
            f = self.findings[what] = dict(what=what, count=0, seed=self.seed,
                                           packet=self.cur[3] if self.cur else -1, **kw)
        if f is not None:
            f["count"] += 1

    # -- setup and capture -----------------------------------------------------------
    def _seed(self):
        self._node_seed += 1
        return self._node_seed

    def setup(self):
        w = self.wire
        w.capture = []
        self.plain = []              # (exch, response, [(type, body)]) the engines encrypted
        c = self.clock
        self.A = _node(self, A_HOST, self._seed(),
                       peers=[PeerEntry(B_HOST, _cfg(), ike_port=500, natt_port=4500)])
        self.B = _node(self, B_HOST, self._seed(), accept_any=_cfg(pfs=True))
        self.M = _node(self, M_HOST, self._seed(), accept_any=_cfg())
        C = _node(self, C_HOST, self._seed(),
                  peers=[PeerEntry(B_HOST, _cfg(), ike_port=4500, natt_port=4500)])
        for n in (self.A, self.B, self.M, C):
            self._record_plain(n.engine)
        self.epB = _endpoint(self.B, APP_B)
        self.epA = _endpoint(self.A, APP_A)
        _endpoint(self.M, APP_B)
        _endpoint(C, APP_B)
        A, B, M = self.A, self.B, self.M
        A._probe(B_HOST)                       # port 500, then 4500; proofs both ways
        B._probe(M_HOST)                       # B initiates, on 4500 (marker)
        C._probe(B_HOST)                       # marker on 4500 from the start
        self._settle()
        assert B_HOST in A.out and A_HOST in B.out and M_HOST in B.out and B_HOST in C.out, \
            "capture handshakes failed"
        assert B.level(A_HOST) == AUTHENTICATED and A.level(B_HOST) == AUTHENTICATED
        sizes = (0, 1, 15, 16, 100, 1000)
        for s in sizes:
            A.send_esp(bytes(s), (B_HOST, APP_B), APP_A)
            B.send_esp(b"b" * s, (A_HOST, APP_A), APP_B)
            B.send_esp(b"m" * s, (M_HOST, APP_B), APP_B)
            M.send_esp(b"n" * s, (B_HOST, APP_B), APP_B)
            C.send_esp(b"c" * s, (B_HOST, APP_B), APP_B)
        self._settle()
        for n in (A, B, M, C):
            n._send_keepalives(c.t)
        A.engine.check_liveness(A.ike_up[B_HOST], c.t)
        B.engine.check_liveness(B.ike_up[M_HOST], c.t)
        B.engine.check_liveness(B.ike_up[A_HOST], c.t)
        self._settle()
        c.adv(1)
        A.engine.rekey_child(A.out[B_HOST].child, c.t)
        M.engine.rekey_child(M.out[B_HOST].child, c.t)
        self._settle()
        c.adv(1)
        B.engine.rekey_child(B.out[A_HOST].child, c.t)       # with KE (B's cfg: pfs)
        B.engine.rekey_child(B.out[M_HOST].child, c.t)
        self._settle()
        c.adv(1)
        A.engine.rekey_ike(A.ike_up[B_HOST], c.t)
        B.engine.rekey_ike(B.ike_up[M_HOST], c.t)
        self._settle()
        c.adv(1)
        B.engine.rekey_ike(B.ike_up[A_HOST], c.t)
        self._settle()
        for s in sizes:
            A.send_esp(bytes(s), (B_HOST, APP_B), APP_A)
            B.send_esp(b"b" * s, (A_HOST, APP_A), APP_B)
            M.send_esp(b"n" * s, (B_HOST, APP_B), APP_B)
        self._settle()
        # C deletes a CHILD SA, then its IKE SA, and leaves the wire
        C.engine.delete(C.out[B_HOST].child, c.t)
        self._settle()
        C.engine.delete(C.ike_up[B_HOST], c.t)
        self._settle()
        del w.nodes[C_HOST]
        # cookies: 9 bare initiators (B asks for a cookie from 8 half-open SAs on), one
        # of them through port 500; then INVALID_KE and NO_PROPOSAL_CHOSEN answers
        raws = []
        for i in range(9):
            h = "10.0.2.%d" % (i + 1)
            rp = _RawPeer(w, h, FuzzBoard(c, self._seed()).rand, B.board.aes,
                          port=500 if i == 8 else 4500)
            w.nodes[h] = rp
            self._record_plain(rp.engine)
            rp.engine.initiate((B_HOST, rp.port), _cfg(), c.t)
            raws.append(rp)
            self._settle()
        rp = _RawPeer(w, "10.0.2.20", FuzzBoard(c, self._seed()).rand, B.board.aes)
        w.nodes[rp.host] = rp
        rp.engine.first_ke_group = 19
        rp.engine.initiate((B_HOST, 4500), _cfg(), c.t)
        raws.append(rp)
        rp = _RawPeer(w, "10.0.2.21", FuzzBoard(c, self._seed()).rand, B.board.aes)
        w.nodes[rp.host] = rp
        rp.engine.ike_proposals = [(1, 1, b"", [(1, 12, 256), (2, 5, None), (3, 12, None),
                                                (4, 19, None)])]
        rp.engine.initiate((B_HOST, 4500), _cfg(), c.t)
        raws.append(rp)
        self._settle()
        for rp in raws:
            del w.nodes[rp.host]
        self.capture = w.capture
        w.capture = None
        self._build_corpus()
        self._unrecord()
        # the legitimate SA chain as B and A see it
        self.legit_b = {B.ike_up[A_HOST]}
        self.legit_a = {A.ike_up[B_HOST]}
        self._hook_events(B, self.legit_b, "B")
        self._hook_events(A, self.legit_a, "A")
        self.level0 = B.level(A_HOST)
        self.g_seq = 0
        for node in (A, B, self.M):
            for ep in node.endpoints.values():
                ep._items = []           # the capture's datagrams
        # the capture's half-open SAs age out before the fuzz starts
        self._advance(40.0)

    def _record_plain(self, eng):
        orig = eng._encode
        plain = self.plain

        def enc(sa, exch, response, mid, payloads):
            plain.append((exch, bool(response), [(t, bytes(b)) for t, b in payloads]))
            return orig(sa, exch, response, mid, payloads)
        eng._encode = enc
        self._hooked = getattr(self, "_hooked", []) + [eng]

    def _unrecord(self):
        for eng in self._hooked:
            del eng._encode
        self._hooked = []

    def _hook_events(self, node, chain, name):
        eng = node.engine
        orig = eng.pop_events
        fz = self

        def pop():
            evs = orig()
            for ev in evs:
                k = ev.__class__.__name__
                if name == "B":
                    fam = fz.cur[0] if fz.cur else "timers/setup"
                    fz.events.setdefault(fam, Counter())[k] += 1
                if k == "IkeRekeyed" and ev.old in chain:
                    chain.add(ev.new)
                    fz.sa_chain_events["%s IkeRekeyed" % name] += 1
                elif k in ("IkeDown", "AuthFailed") and ev.sa in chain:
                    fz.legit_breaks.append("%s: %s %s at packet %s" % (
                        name, k, getattr(ev, "reason", ""), fz.cur[3] if fz.cur else -1))
                    fz._note("legitimate SA torn down (%s %s on %s)" % (k, getattr(ev, "reason", ""), name),
                             family=fz.cur[0] if fz.cur else "", mutators=list(fz.cur[2]) if fz.cur else [])
                elif k == "ChildRekeyed" and getattr(ev.old, "ike", None) in chain:
                    fz.sa_chain_events["%s ChildRekeyed" % name] += 1
            return evs
        eng.pop_events = pop

    def _settle(self):
        if not self.wire.settle():
            self._note("datagram storm: the wire did not settle")

    def _build_corpus(self):
        ike, esp_, marks = [], [], []
        for src, sport, dst, dport, data in self.capture:
            if dport == 500 and data[:4] != MARKER:
                ike.append((data, "ike500", src))
                continue
            kind, body = udpencap.classify(data)
            if kind == "ike":
                ike.append((bytes(body), "ike", src))
            elif kind == "esp":
                esp_.append((data, "esp", src))
            else:
                marks.append((data, kind, src))
        marks += [(b"\xff", "keepalive", A_HOST), (MARKER, "marker", A_HOST)]
        self.c_ike, self.c_esp, self.c_mark = ike, esp_, marks
        self.c_plain = [p for p in self.plain if p[2]] or [(37, False, [])]
        self.corpus_stats = {"datagrams": len(self.capture), "ike": len(ike), "esp": len(esp_),
                             "marker_keepalive": len(marks), "plaintexts": len(self.plain),
                             "ike_exchanges": dict(Counter(
                                 "%d%s" % (m[18], "r" if m[19] & 0x20 else "")
                                 for m, _, _ in ike if len(m) >= 28)),
                             "payload_types": dict(Counter(
                                 t for _, _, pl in self.plain for t, _ in pl))}

    # -- time ------------------------------------------------------------------------
    def _timers(self):
        for n in (self.A, self.B, self.M):
            try:
                n._timer_pass()
            except Exception as e:
                self._escape(n.host, b"", ("timer", 0), None, e, "_timer_pass")
        self._settle()

    def _advance(self, secs, step=0.5):
        for _ in range(int(secs / step + 0.999)):
            self.clock.adv(step)
            self._timers()

    # -- live state of B -----------------------------------------------------------------
    def _refresh_live(self):
        B = self.B
        sas = [sa for sa in B.engine.sas.values()]
        self.live_sas = sas
        self.live_spis = [(sa.spi_i, sa.spi_r) for sa in sas]
        # an attacker holds the keys of the SAs it made: every SA with keys whose peer
        # is not A's address (never A's: that would be an on-path man in the middle)
        self.att_sas = [sa for sa in sas if sa.keys is not None and sa.peer_addr[0] != A_HOST]
        self.live_children = list(B.children.values())
        self.att_children = [c for c in self.live_children if c.host != A_HOST]
        # the harness keeps no references to what B has let go of
        for spi in [k for k in self.esp_seq if k not in B.children]:
            del self.esp_seq[spi]
        for chain, node, host in ((self.legit_b, B, A_HOST), (self.legit_a, self.A, B_HOST)):
            cur = node.ike_up.get(host)
            for sa in [x for x in chain if x is not cur and x.local_spi not in node.engine.sas]:
                chain.discard(sa)

    def _ensure_attacker(self):
        B = self.B
        for sa in B.engine.sas.values():
            if sa.peer_addr[0] == M_HOST and sa.state == "established" and sa.children:
                return
        # M lost its SA (the fuzz deleted or broke it): a fresh M connects again
        self.m_restarts += 1
        self.wire.nodes.pop(M_HOST, None)
        self.M = _node(self, M_HOST, self._seed(), accept_any=_cfg())
        _endpoint(self.M, APP_B)
        self.M._probe(B_HOST)
        self._settle()

    # -- genuine traffic -----------------------------------------------------------------
    def _drain(self, ep, host):
        got, other = [], 0
        while ep._items:
            it = ep._items.pop(0)
            if it[1][0] == host and it[2] != 0:
                got.append(it)
            else:
                other += 1
        return got, other

    def _genuine(self):
        A, B = self.A, self.B
        g = self.genuine
        self.g_seq += 1
        n = self.g_seq
        for src, dst, ep, sport, dport, key in ((A, B, self.epB, APP_A, APP_B, "a_to_b"),
                                                (B, A, self.epA, APP_B, APP_A, "b_to_a")):
            got0, other0 = self._drain(ep, src.host)
            self.attacker_delivered += other0
            if got0:
                g["wrong"].append("%s: unexpected %r before #%d" % (key, got0[:2], n))
            msg = b"genuine %s #%d" % (key.encode(), n)
            g[key + "_sent"] += 1
            try:
                src.send_esp(msg, (dst.host, dport), sport)
            except Exception as e:
                self._lost(key, n, "send raised %r" % e)
                continue
            self._settle()
            got, other = self._drain(ep, src.host)
            self.attacker_delivered += other
            want = (msg, (src.host, sport), self.level0)
            if got == [want]:
                g[key + "_delivered"] += 1
            elif not got:
                self._lost(key, n, "not delivered")
            else:
                g["wrong"].append("%s #%d: got %r" % (key, n, got[:2]))
                self._note("genuine datagram altered/duplicated", key=key)
        # B still sends on, and receives from, the SA chain it started with
        out = B.out.get(A_HOST)
        sa = B.ike_up.get(A_HOST)
        if sa not in self.legit_b or out is None or out.child.ike not in self.legit_b:
            self._note("B's SA with A replaced by one outside the legitimate chain")

    def _lost(self, key, n, why):
        g = self.genuine
        if len(g["lost"]) < 50:
            B = self.B
            g["lost"].append({"dir": key, "n": n, "why": why, "packet": self.cur[3] if self.cur else -1,
                              "b_out": repr(B.out.get(A_HOST).child) if B.out.get(A_HOST) else None,
                              "a_out": repr(self.A.out.get(B_HOST).child) if self.A.out.get(B_HOST) else None})
        self._note("genuine datagram lost", dir=key)

    # -- tables --------------------------------------------------------------------------
    def tables(self):
        B = self.B
        eng = B.engine
        sas = list(eng.sas.values())
        kids = [len(sa.children) for sa in sas] or [0]
        queues = [len(getattr(sa, "queue", ())) for sa in sas] or [0]
        orphans = sum(1 for c in B.children.values() if c.child.state == "down")
        ep_items = max(len(ep._items) for ep in B.endpoints.values())
        t = {
            "engine.sas": len(eng.sas), "engine.init_idx": len(eng.init_idx),
            "engine.half_open": eng.half_open(),
            "engine.children_per_sa": max(kids), "engine.children_total": sum(kids),
            "engine.sa_queue": max(queues), "engine.out": len(eng.out),
            "engine.events": len(eng.events), "engine.stats_keys": len(eng.stats),
            "node.children": len(B.children), "node.children_orphaned": orphans,
            "node.out": len(B.out), "node.by_host": len(B.by_host),
            "node.events": len(B.events),
            "node.initiating": len([1 for p in B.by_host.values() if p.initiating]),
            "node.ike_up": len(B.ike_up),
            "node._to_probe": len(B._to_probe), "node._waiters": len(B._waiters),
            "node.stats_keys": len(B.stats),
            "discovery.peers": len(B.discovery._peers),
            "pins": len(B.pins._pins), "pins.used": len(getattr(B.pins, "_used", ())),
            "levels": len(B.levels._levels), "levels.waiters": len(B.levels._waiters),
            "decisions.cache": len(B.decisions._cache),
            "endpoint.items": ep_items,
            "esp.drops_keys": max([len(c.inp.drops) for c in B.children.values()] or [0]),
        }
        return t

    def bounds(self):
        eng = self.B.engine
        ms, mc = eng.max_sas, eng.max_children
        return {
            # dead SAs kept DEAD_KEEP s for their failure answer and B's own probes may
            # sit on top of max_sas: twice the limit is the bound asserted
            "engine.sas": 2 * ms, "engine.init_idx": 2 * ms, "engine.half_open": ms,
            "engine.children_per_sa": 2 * mc, "engine.children_total": 2 * ms * 2 * mc,
            "engine.sa_queue": 16, "engine.out": 64, "engine.events": 64,
            "engine.stats_keys": 64, "node.children": 2 * ms * 2 * mc,
            "node.children_orphaned": 0, "node.out": 64, "node.by_host": 64,
            "node.events": 64,
            "node.initiating": 64, "node.ike_up": 2 * ms, "node._to_probe": 64,
            "node._waiters": 0, "node.stats_keys": 64, "discovery.peers": 32, "pins": 64,
            "pins.used": 64, "levels": 64, "levels.waiters": 0, "decisions.cache": 32,
            "endpoint.items": 64, "esp.drops_keys": 8,
        }

    def _check_tables(self):
        t = self.tables()
        b = self._bounds
        for k, v in t.items():
            if v > self.table_max[k]:
                self.table_max[k] = v
            if v > b.get(k, 1 << 30) and k not in self.tables_over:
                self.tables_over[k] = {"value": v, "bound": b[k], "packet": self.cur[3] if self.cur else -1}
                self._note("table over its bound: %s" % k, value=v, bound=b[k])

    # -- generators ----------------------------------------------------------------------
    def _src(self, prefer=None):
        r = self.rng.random()
        if prefer is not None and r < 0.6:
            return prefer
        r = self.rng.random()
        if r < 0.25:
            return A_HOST
        if r < 0.45:
            return M_HOST
        if r < 0.48:
            return B_HOST
        return self.rng.choice(STRANGERS)

    def _port(self, natt):
        r = self.rng.random()
        if r < 0.8:
            return 4500 if natt else 500
        return self.rng.choice((500, 4500, 1, 65535, self.rng.randrange(1024, 65536)))

    def gen(self):
        """-> (family, kind, [mutators], datagram, addr, natt)"""
        r = self.rng.random()
        if self.att_sas and r < 0.10:
            return self._gen_sealed_ike()
        if self.att_children and r < 0.16:
            return self._gen_sealed_esp()
        if r < 0.22:
            return self._gen_marker()
        return self._gen_raw()

    # raw ---------------------------------------------------------------------------
    def _gen_raw(self):
        rng = self.rng
        r = rng.random()
        if r < 0.58:
            base, bkind, bsrc = rng.choice(self.c_ike)
            kind = "ike"
        else:
            base, bkind, bsrc = rng.choice(self.c_esp)
            kind = "esp"
        b = bytearray(base)
        muts = []
        prefer = None
        if kind == "ike":
            if self.live_sas and rng.random() < 0.55:
                prefer = self._ike_spi_swap(b, muts)
            natt = rng.random() < 0.8
        else:
            if self.live_children and rng.random() < 0.6:
                prefer = self._esp_spi_swap(b, muts)
            natt = rng.random() < 0.95
        n = 1 + (rng.random() < 0.4) + (rng.random() < 0.15)
        lied = False
        for _ in range(n):
            m = self._pick_mut(kind)
            b, lie = MUTATORS[m](self, b)
            muts.append(m)
            lied = lied or lie
        if kind == "ike" and not lied and rng.random() < 0.45:
            b = fix_len(b)
            muts.append("len_fix")
        if natt and kind == "ike" and not (muts and muts[-1] == "marker_drop"):
            b = MARKER + bytes(b)
        data = bytes(b)
        if len(data) > MAX_DATAGRAM:
            data = data[:MAX_DATAGRAM]
        return "raw", kind, muts, data, (self._src(prefer), self._port(natt)), natt

    def _pick_mut(self, kind):
        table = IKE_MUTS if kind == "ike" else ESP_MUTS
        return self.rng.choices(table[0], table[1])[0]

    def _ike_spi_swap(self, b, muts):
        rng = self.rng
        sa = rng.choice(self.live_sas)
        if len(b) < 28:
            return None
        b[0:8] = sa.spi_i
        b[8:16] = sa.spi_r if rng.random() < 0.9 else rng.randbytes(8)
        # the I flag the peer of this SA would set; the R flag as the corpus had it
        fl = b[19] & ~0x08
        if not sa.initiator:
            fl |= 0x08
        b[19] = fl
        muts.append("spi_swap")
        self.live_hit = True
        self._target = sa
        p = sa.pending
        if rng.random() < 0.6:
            if p is not None and (rng.random() < 0.5 or b[19] & 0x20):
                b[19] |= 0x20
                b[18] = p.exch
                b[20:24] = p.mid.to_bytes(4, "big")
            else:
                b[19] &= ~0x20
                b[20:24] = sa.recv_mid.to_bytes(4, "big")
            muts.append("mid_fix")
        return sa.peer_addr[0]

    def _esp_spi_swap(self, b, muts):
        rng = self.rng
        c = rng.choice(self.live_children)
        if len(b) < 8:
            return None
        b[0:4] = c.child.spi_in.to_bytes(4, "big")
        if rng.random() < 0.6:
            b[4:8] = ((c.inp.top + 1 + rng.randrange(3)) & 0xFFFFFFFF).to_bytes(4, "big")
            muts.append("seq_fix")
        muts.append("spi_swap")
        self.live_hit = True
        return c.host

    # marker / keepalive ----------------------------------------------------------------
    def _gen_marker(self):
        rng = self.rng
        k = rng.randrange(12)
        other = rng.choice(self.c_ike + self.c_esp)[0]
        if k == 0:
            d, m = b"\xff", "keepalive"
        elif k == 1:
            d, m = bytes((rng.randrange(256),)), "one_byte"
        elif k == 2:
            d, m = b"", "empty"
        elif k == 3:
            d, m = rng.randbytes(rng.randrange(2, 8)), "short"
        elif k == 4:
            d, m = MARKER + rng.randbytes(rng.randrange(0, 32)), "marker_short"
        elif k == 5:
            d, m = MARKER, "marker_only"
        elif k == 6:
            d, m = MARKER + MARKER + other, "marker_double"
        elif k == 7:
            d, m = b"\0\0\0" + bytes((rng.randrange(1, 256),)) + other, "marker_partial"
        elif k == 8:
            d, m = b"\xff" + other, "keepalive_plus"
        elif k == 9:
            d, m = MARKER + other, "marker_add"        # ESP read as IKE, IKE with a 2nd marker
        elif k == 10:
            d, m = other[4:] if other[:4] == MARKER else other[:4] + other, "marker_shift"
        else:
            d, m = b"\xff" * rng.randrange(2, 40), "keepalive_run"
        natt = rng.random() < 0.9
        return "marker", "marker", [m], bytes(d[:MAX_DATAGRAM]), (self._src(), self._port(natt)), natt

    # sealed (attacker's own SA) ---------------------------------------------------------
    def _gen_sealed_ike(self):
        rng = self.rng
        sa = rng.choice(self.att_sas)
        B = self.B
        keys = sa.keys
        ek, ak = (keys.sk_er, keys.sk_ar) if sa.initiator else (keys.sk_ei, keys.sk_ai)
        iflag = 0 if sa.initiator else 0x08
        muts = []
        p = sa.pending
        if p is not None and rng.random() < 0.5:
            exch, mid, flags = p.exch, p.mid, iflag | 0x20
            muts.append("answer")
        else:
            flags = iflag
            r = rng.random()
            if r < 0.75:
                mid = sa.recv_mid
            elif r < 0.85 and sa.last_resp is not None:
                mid = sa.last_resp[0]
                muts.append("mid_replay")
            else:
                mid = rng.choice((sa.recv_mid + 1, 0, 0xFFFFFFFF, rng.randrange(1 << 32)))
                muts.append("mid_lie")
            exch = rng.choice((35, 36, 36, 37, 37, 37)) if sa.state != "half_open" else 35
        if rng.random() < 0.05:
            exch = rng.choice((34, 0, 38, 255))
            muts.append("exch_lie")
        pl = self._sealed_payloads(sa, exch, bool(flags & 0x20), muts)
        inner = chain_bytes(pl)
        first = pl[0][0] if pl else 0
        pad_lie = None
        r = rng.random()
        if r < 0.15 and inner:
            mb, _ = MUT_INNER[rng.randrange(len(MUT_INNER))](self, bytearray(inner))
            inner = bytes(mb)
            muts.append("inner_bytes")
        elif r < 0.2:
            first = rng.choice(NEXT_CHOICES)
            muts.append("inner_first")
        if rng.random() < 0.03:
            pad_lie = rng.randrange(256)
            muts.append("pad_lie")
        if len(inner) > 60000:
            inner = inner[:60000]
        m = seal_ike(B.board.aes, rng, sa.spi_i, sa.spi_r, exch, flags, mid, first, inner, ek, ak,
                     pad_lie)
        self._target = sa
        host, port = sa.peer_addr[0], sa.peer_addr[1]
        if rng.random() < 0.08:
            host = self._src()
            muts.append("other_host")
        if rng.random() < 0.1:
            port = rng.choice((500, 4500, 1234))
        natt = rng.random() < 0.9
        self.live_hit = True
        return "sealed", "ike", muts, (MARKER + m if natt else m), (host, port), natt

    def _sealed_payloads(self, sa, exch, response, muts):
        rng = self.rng
        r = rng.random()
        if exch == 35 and r < 0.5:
            pl = self._valid_auth(sa, response)
            if pl is not None:
                muts.append("valid_auth")
                if rng.random() < 0.5:
                    return pl
                return self._mutate_list(pl, muts)
        if exch == 37 and r < 0.15:
            octets = self.B.engine.auth_octets(sa, False)
            if octets is not None:
                k = self.attacker_key
                data = bytes((1,)) + k.public + fast_ed25519.sign(k.seed, octets)
                muts.append("valid_proof")
                return [(41, codec.encode_notify(40969, data))]
        cands = [p for p in self.c_plain if p[0] == exch and p[1] == response] or self.c_plain
        pl = list(rng.choice(cands)[2])
        muts.append("tmpl%d%s" % (exch, "r" if response else ""))
        return self._mutate_list(pl, muts)

    def _valid_auth(self, sa, response):
        """What an attacker that ran the IKE_SA_INIT itself can send: a correct NULL AUTH
        for this SA (request to a half-open SA, or answer to B's IKE_AUTH), plus a CHILD
        SA offer from the corpus."""
        k = sa.keys
        idb = codec.encode_id(13, b"")
        if not response and sa.state == "half_open" and sa.init_req is not None:
            octets = ike_auth.signed_octets(sa.init_req, sa.nr, k.sk_pi, idb)
            m, d = ike_auth.make("null", octets, k.sk_pi)
            tmpl = [p for p in self.c_plain if p[0] == 35 and not p[1]]
            rest = [x for x in (tmpl[0][2] if tmpl else []) if x[0] not in (35, 39)]
            return [(35, idb), (39, codec.encode_auth(m, d))] + rest
        if response and sa.state == "auth_sent" and sa.init_resp is not None:
            octets = ike_auth.signed_octets(sa.init_resp, sa.ni, k.sk_pr, idb)
            m, d = ike_auth.make("null", octets, k.sk_pr)
            tmpl = [p for p in self.c_plain if p[0] == 35 and p[1]]
            rest = [x for x in (tmpl[0][2] if tmpl else []) if x[0] not in (36, 39)]
            return [(36, idb), (39, codec.encode_auth(m, d))] + rest
        return None

    def _mutate_list(self, pl, muts):
        rng = self.rng
        pl = [(p[0], 0, p[-1]) if len(p) == 2 else p for p in pl]     # (type, flags, body)
        for _ in range(rng.choice((0, 1, 1, 1, 2, 3))):
            k = rng.randrange(9)
            if k == 0 and pl:
                pl.pop(rng.randrange(len(pl)))
                muts.append("pl_drop")
            elif k == 1 and pl:
                pl.insert(rng.randrange(len(pl) + 1), pl[rng.randrange(len(pl))])
                muts.append("pl_dup")
            elif k == 2 and len(pl) > 1:
                i, j = rng.randrange(len(pl)), rng.randrange(len(pl))
                pl[i], pl[j] = pl[j], pl[i]
                muts.append("pl_swap")
            elif k == 3 and pl:
                i = rng.randrange(len(pl))
                t = pl[i][0]
                same = [b for _, _, l2 in self.c_plain for t2, b in l2 if t2 == t]
                if same:
                    pl[i] = (t, pl[i][1], rng.choice(same))
                    muts.append("pl_body_splice")
            elif k == 4 and pl:
                i = rng.randrange(len(pl))
                pl[i] = (rng.choice(NEXT_CHOICES[:-4] + (200,)), pl[i][1], pl[i][2])
                muts.append("pl_retype")
            elif k == 5 and pl:
                i = rng.randrange(len(pl))
                t, fl, body = pl[i]
                mb, _ = MUT_BODY[rng.randrange(len(MUT_BODY))](self, bytearray(body))
                pl[i] = (t, fl, bytes(mb))
                muts.append("pl_body_bytes")
            elif k == 6:
                t = rng.choice((200, 128, 1, 49))
                pl.insert(rng.randrange(len(pl) + 1), (t, 0x80 if rng.random() < 0.5 else 0,
                                                       rng.randbytes(rng.randrange(12))))
                muts.append("pl_unknown")
            elif k == 7:
                _, _, other = rng.choice(self.c_plain)
                if other:
                    t, body = rng.choice(other)
                    pl.append((t, 0, body))
                    muts.append("pl_foreign")
            else:
                pl = self._hostile_body(pl, muts)
        return pl

    def _hostile_body(self, pl, muts):
        """Well-formed payloads with hostile values (SPIs of live SAs, odd counts)."""
        rng = self.rng
        k = rng.randrange(5)
        spis = [c.child.spi_out.to_bytes(4, "big") for c in self.live_children] or [b"\0\0\1\0"]
        if k == 0:
            pl.append((42, 0, codec.encode_delete(3, [rng.choice(spis) for _ in range(rng.randrange(1, 4))])))
            muts.append("del_live_spi")       # A's CHILD SPIs too: must not touch A's SA
        elif k == 1:
            pl.append((42, 0, codec.encode_delete(1)))
            muts.append("del_ike")
        elif k == 2:
            pl.insert(0, (41, 0, codec.encode_notify(16393, b"", 3, rng.choice(spis))))
            muts.append("rekey_live_spi")
        elif k == 3:
            pl.append((41, 0, codec.encode_notify(rng.choice((24, 16384, 40969, 16390, 44, 43)),
                                              rng.randbytes(rng.randrange(0, 100)))))
            muts.append("notify_odd")
        else:
            pl.append((41, 0, bytes((rng.randrange(4), 255, 0x40, 0x09)) + rng.randbytes(rng.randrange(0, 8))))
            muts.append("notify_spi_size_lie")
        return pl

    def _gen_sealed_esp(self):
        rng = self.rng
        c = rng.choice(self.att_children)
        ch = c.child
        spi = ch.spi_in
        last = max(self.esp_seq.get(spi, 0), c.inp.top)
        muts = []
        r = rng.random()
        if r < 0.85:
            seq = last + 1
        elif r < 0.93:
            seq = max(1, last - rng.randrange(0, 100))
            muts.append("seq_replay")
        else:
            seq = last + rng.randrange(64, 1 << 20)
            muts.append("seq_jump")
        self.esp_seq[spi] = max(last, seq)
        k = rng.randrange(10)
        data = rng.randbytes(rng.randrange(0, 64))
        dport = APP_B if rng.random() < 0.7 else rng.choice((0, 1, 7001, 65535))
        if k < 4:
            ulen = 8 + len(data)
            if rng.random() < 0.5:
                ulen = rng.choice((0, 7, 8, ulen - 1, ulen + 1, 65535))
                muts.append("udp_len_lie")
            payload = struct.pack(">HHHH", rng.randrange(65536), dport, ulen & 0xFFFF,
                                  rng.choice((0, rng.randrange(65536)))) + data
            nh = 17
            muts.append("udp")
        elif k < 6:
            payload = rng.randbytes(rng.randrange(0, 8))
            nh = 17
            muts.append("udp_truncated")
        elif k < 7:
            payload, nh = data, 59
            muts.append("nh59")
        elif k < 8:
            payload, nh = data, rng.choice((4, 41))
            muts.append("nh_tunnel")
        elif k < 9:
            payload, nh = data, rng.choice((0, 6, 50, 255, rng.randrange(256)))
            muts.append("nh_odd")
        else:
            payload, nh = struct.pack(">HHHH", 1, dport, 8 + len(data), 0) + data, 17
            muts.append("udp_ok")
        pad_ok = rng.random() < 0.85
        if not pad_ok:
            muts.append("pad_bad")
        pt = esp_plain(payload, nh, pad_ok, rng)
        pkt = seal_esp(self.B.board.aes, rng, spi, seq, ch.enc_in, ch.int_in, pt)
        host = c.host
        if rng.random() < 0.05:
            host = self._src()
            muts.append("other_host")
        self.live_hit = True
        return "sealed", "esp", muts, pkt, (host, rng.choice((4500, 4500, 4500, 1234))), True

    def _clear(self):
        """A clear datagram from a stranger to the app port: B may probe it, so forged
        answers to B's own IKE_SA_INIT get exercised too."""
        host = self.rng.choice(STRANGERS[:20])
        self.clear_sent += 1
        try:
            self.B._clear_in(self.epB, b"clear", (host, 40000))
        except Exception as e:
            self._escape(B_HOST, b"clear", (host, 40000), None, e, "_clear_in")
        self._drain(self.epB, A_HOST)

    # -- the loop ------------------------------------------------------------------------
    def _snapshot(self):
        B = self.B
        return dict(B.engine.stats), dict(B.stats)

    def feed(self, i):
        self.live_hit = False
        self._target = None
        fam, kind, muts, data, addr, natt = self.gen()
        self.cur = (fam, kind, muts, i)
        B = self.B
        sock = B.sock_natt if natt else B.sock_ike
        es0, ns0 = dict(B.engine.stats), dict(B.stats)
        sent0 = self.wire.to_strangers + self.wire.to_nodes
        c = None
        if kind == "esp" and natt and len(data) >= 4:
            c = B.children.get(int.from_bytes(data[0:4], "big"))
            d0 = dict(c.inp.drops) if c is not None else None
        tsa = self._target
        if tsa is not None:
            mid0, pend0 = tsa.recv_mid, tsa.pending
        try:
            B._datagram(data, addr, sock, natt)
        except Exception as e:
            self._escape(B_HOST, data, addr, natt, e, "fuzz")
        if tsa is not None:
            if tsa.recv_mid != mid0:
                self.handled[fam + " request"] += 1
            elif pend0 is not None and tsa.pending is not pend0:
                self.handled[fam + " answer"] += 1
        if self.wire.q or B.engine.out or B.engine.events:
            self._settle()
        if self.wire.to_strangers + self.wire.to_nodes != sent0:
            self.replies[fam] += 1
        reach = self.reach.setdefault(fam, Counter())
        for k, v in B.engine.stats.items():
            if es0.get(k, 0) != v:
                reach["engine." + k] += 1
        for k, v in B.stats.items():
            if ns0.get(k, 0) != v:
                reach["node." + k] += 1
        if c is not None:
            for k, v in c.inp.drops.items():
                if d0.get(k, 0) != v:
                    self.esp_reasons[k] += 1
                    reach["esp_drop." + k] += 1
        if self.live_hit:
            self.live_hits[fam] += 1
        self.by_family[fam] += 1
        self.by_kind[kind] += 1
        for m in muts:
            self.by_mut[m] += 1
        self.by_path["natt" if natt else "port500"] += 1
        n = len(data)
        self.sizes["<=1500" if n <= 1500 else "<=9000" if n <= 9000 else ">9000"] += 1
        if n > 9000:
            self.sizes["huge_max"] = max(self.sizes["huge_max"], n)

    def run(self):
        t0 = time.perf_counter()
        if self.trace:
            tracemalloc.start()
        self.setup()
        self._bounds = self.bounds()
        self._refresh_live()
        self._genuine()
        t_setup = time.perf_counter() - t0
        if self.do_oversize:
            self.mem["oversize"] = self.oversize_probe()
        self._advance(40.0)
        gc.collect()
        self.mem["start"] = self._mem_now()
        self._check_tables()
        t1 = time.perf_counter()
        checkpoints = max(1, self.packets // 10)
        for i in range(self.packets):
            self.clock.adv(self.dt)
            if i % self.timer_every == 0:
                self.cur = ("timers", "", (), i)
                self._timers()
            if i % self.check_every == 0:
                self._refresh_live()
                self._check_tables()
            if i % 2000 == 1000:
                self.cur = ("attacker_restart", "", (), i)
                self._ensure_attacker()
                self._refresh_live()
            if self.clear_rate and self.rng.random() < self.clear_rate:
                self.cur = ("clear", "", (), i)
                self._clear()
            self.feed(i)
            if i % self.genuine_every == 0:
                self.cur = ("genuine", "", (), i)
                self._genuine()
            if i % checkpoints == checkpoints - 1:
                t = self.tables()
                self.mem_points.append((i + 1, self._mem_now()["traced_current"], {
                    k: t[k] for k in ("engine.sas", "node.children", "pins", "discovery.peers",
                                      "node.by_host", "node.events")}))
                self.log("%d packets, %.0f/s, findings %d" % (
                    i + 1, (i + 1) / (time.perf_counter() - t1), len(self.findings)))
        t_fuzz = time.perf_counter() - t1
        self.cur = None
        self._genuine()
        self._check_tables()
        end_tables = self.tables()
        self.mem["end_unsettled"] = self._mem_now()
        self._advance(60.0)
        self._genuine()
        gc.collect()
        self.mem["end"] = self._mem_now()
        self._check_tables()
        settled_tables = self.tables()
        if self.trace:
            _, peak = tracemalloc.get_traced_memory()
            self.mem["traced_peak"] = peak
            tracemalloc.stop()
        return self.summary(t_setup, t_fuzz, end_tables, settled_tables)

    # -- memory --------------------------------------------------------------------------
    def _mem_now(self):
        out = {"rss": _rss()}
        if tracemalloc.is_tracing():
            cur, peak = tracemalloc.get_traced_memory()
            out["traced_current"] = cur
            out["traced_peak_so_far"] = peak
        else:
            out["traced_current"] = None
        return out

    def oversize_probe(self, n=8, size=HUGE):
        """65,000-byte datagrams of several shapes, one at a time: the bytes each call
        allocates on top of the baseline (tracemalloc peak), what stays allocated, time."""
        B, rng = self.B, self.rng
        was = tracemalloc.is_tracing()
        if not was:
            tracemalloc.start()
        self._refresh_live()
        sa = B.ike_up[A_HOST]
        child = B.out[A_HOST]
        out = {}
        init = [m for m, k, _ in self.c_ike if len(m) > 28 and m[18] == 34 and not m[19] & 0x20]

        def shapes():
            yield "garbage_natt", lambda: (bytes((1,)) + rng.randbytes(size - 1), True, None)
            yield "garbage_port500", lambda: (rng.randbytes(size), False, None)
            yield "ike_bad_length_natt", lambda: (MARKER + init[0][:24] + b"\0\0\0\x40"
                                                  + rng.randbytes(size - 32), True, None)

            def ike_init(natt):
                m = bytearray(init[0])
                m[0:8] = rng.randbytes(8)
                spl = ike_split(bytes(m))
                hdr, pl = spl
                room = size - (4 if natt else 0) - len(m) - 8
                pl.append((41, 0, codec.encode_notify(40000, rng.randbytes(room))))
                d = ike_join(hdr, pl)
                return (MARKER + d if natt else d), natt, "10.0.9.%d" % rng.randrange(1, 250)
            yield "ike_init_valid_natt", lambda: ike_init(True)
            yield "ike_init_valid_port500", lambda: ike_init(False)

            def ike_live():
                ct = rng.randbytes((size - 4 - 28 - 4 - 32) // 16 * 16)
                n_ = 4 + 16 + len(ct) + 16
                m = (sa.spi_i + sa.spi_r + struct.pack(">BBBBII", 46, 0x20, 37,
                                                       0x08 if not sa.initiator else 0,
                                                       sa.recv_mid, 28 + n_)
                     + bytes((0, 0, n_ >> 8, n_ & 0xFF)) + rng.randbytes(16) + ct + rng.randbytes(16))
                return MARKER + m, True, A_HOST
            yield "ike_live_spi_sk_natt", ike_live

            def esp_live():
                ln = (size - 40) // 16 * 16 + 40
                top = child.inp.top
                d = child.child.spi_in.to_bytes(4, "big") + (top + 1).to_bytes(4, "big") + rng.randbytes(ln - 8)
                return d, True, A_HOST
            yield "esp_live_spi_natt", esp_live
            yield "esp_unknown_spi_natt", lambda: (b"\x7f\x7f\x7f\x7f" + rng.randbytes(size - 4), True, None)

        for name, mk in shapes():
            peaks, retained, times = [], [], []
            es0, ns0 = dict(B.engine.stats), dict(B.stats)
            gc.collect()
            cur0, _ = tracemalloc.get_traced_memory()
            for _ in range(n):
                data, natt, host = mk()
                host = host or rng.choice(STRANGERS)
                port = 4500 if natt else 500
                sock = B.sock_natt if natt else B.sock_ike
                gc.collect()
                before, _ = tracemalloc.get_traced_memory()
                tracemalloc.reset_peak()
                t = time.perf_counter()
                self.cur = ("oversize", name, (), -1)
                try:
                    B._datagram(data, (host, port), sock, natt)
                except Exception as e:
                    self._escape(B_HOST, data, (host, port), natt, e, "oversize")
                self._settle()
                times.append(time.perf_counter() - t)
                cur, peak = tracemalloc.get_traced_memory()
                peaks.append(peak - before)
                retained.append(cur - before)
            del data
            gc.collect()
            cur1, _ = tracemalloc.get_traced_memory()
            moved = {k: v - es0.get(k, 0) for k, v in B.engine.stats.items() if v != es0.get(k, 0)}
            moved.update({"node." + k: v - ns0.get(k, 0) for k, v in B.stats.items() if v != ns0.get(k, 0)})
            out[name] = {"datagram_bytes": size, "calls": n,
                         "transient_peak_bytes_max": max(peaks),
                         "transient_per_datagram_byte": round(max(peaks) / size, 2),
                         "retained_bytes_after_batch": cur1 - cur0,
                         "us_per_call": round(1e6 * sum(times) / len(times), 1),
                         "counters": moved}
        self.cur = None
        gc.collect()
        c0, _ = tracemalloc.get_traced_memory()
        self._advance(40.0)
        gc.collect()
        c1, _ = tracemalloc.get_traced_memory()
        out["released_after_40s_bytes"] = c0 - c1
        if not was:
            tracemalloc.stop()
        return out

    # -- report --------------------------------------------------------------------------
    def summary(self, t_setup, t_fuzz, end_tables, settled_tables):
        B = self.B
        total = sum(self.by_family.values())
        mem = dict(self.mem)
        if self.trace and mem.get("start", {}).get("traced_current") is not None:
            mem["growth_settled_bytes"] = mem["end"]["traced_current"] - mem["start"]["traced_current"]
            mid = [p[1] for p in self.mem_points if p[0] > self.packets // 2]
            first = [p[1] for p in self.mem_points if p[0] <= self.packets // 2]
            if mid and first:
                mem["growth_second_half_bytes"] = max(mid) - max(first)
        mem["checkpoints"] = self.mem_points
        return {
            "seed": self.seed, "packets": total,
            "packets_per_s": round(total / t_fuzz, 1) if t_fuzz else None,
            "seconds": {"setup": round(t_setup, 2), "fuzz": round(t_fuzz, 2)},
            "simulated_seconds": round(self.packets * self.dt, 1),
            "corpus": self.corpus_stats,
            "by_family": dict(self.by_family), "by_kind": dict(self.by_kind),
            "by_path": dict(self.by_path), "by_mutator": dict(self.by_mut.most_common()),
            "sizes": dict(self.sizes),
            "reach": {f: dict(c.most_common()) for f, c in self.reach.items()},
            "esp_drop_reasons_live_spi": dict(self.esp_reasons),
            "replies": dict(self.replies), "live_spi_hits": dict(self.live_hits),
            "ike_handled": dict(self.handled),
            "b_events": {f: dict(c.most_common()) for f, c in self.events.items()},
            "clear_datagrams": self.clear_sent,
            "engine_stats": dict(B.engine.stats), "node_stats": dict(B.stats),
            "discovery": dict(B.discovery.counters),
            "table_max": dict(self.table_max), "table_bounds": self._bounds,
            "tables_end": end_tables, "tables_settled": settled_tables,
            "tables_over": self.tables_over,
            "memory": mem,
            "genuine": {k: v for k, v in self.genuine.items()},
            "attacker_datagrams_delivered": self.attacker_delivered,
            "attacker_restarts": self.m_restarts,
            "legit_chain": dict(self.sa_chain_events), "legit_breaks": self.legit_breaks,
            "wire": {"to_strangers": self.wire.to_strangers, "to_nodes": self.wire.to_nodes},
            "findings": list(self.findings.values()),
        }


def _rss():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------ byte mutators
# Each takes (fuzzer, bytearray) and returns (bytearray, lied_about_a_length).

def m_bitflip(f, b):
    if not b:
        return b, False
    for _ in range(f.rng.choice((1, 1, 1, 2, 3, 8))):
        i = f.rng.randrange(len(b))
        b[i] ^= 1 << f.rng.randrange(8)
    return b, False


def m_byteset(f, b):
    if not b:
        return b, False
    for _ in range(f.rng.choice((1, 1, 2, 4))):
        b[f.rng.randrange(len(b))] = f.rng.choice(INTERESTING8) if f.rng.random() < 0.7 \
            else f.rng.randrange(256)
    return b, False


def m_truncate(f, b):
    if not b:
        return b, False
    r = f.rng.random()
    if r < 0.3:
        n = f.rng.randrange(0, min(len(b), 40) + 1)
    else:
        n = f.rng.randrange(0, len(b) + 1)
    return b[:n], False


def m_extend(f, b):
    k = f.rng.randrange(3)
    n = f.rng.choice((1, 2, 3, 4, 8, 15, 16, 17, 32, 100, 256))
    add = f.rng.randbytes(n) if k == 0 else bytes(n) if k == 1 else bytes(b[-n:]) if b else b"x"
    return b + add, False


def m_huge(f, b):
    """Up to 65,000 bytes: garbage, zeros, or length-consistent (IKE length field and the
    last payload's length follow, so the chain parser walks it)."""
    rng = f.rng
    size = rng.choice((1500, 2048, 2049, 4096, 9000, 16384, 32768, 60000, HUGE, rng.randrange(1500, HUGE)))
    room = size - len(b)
    if room <= 0:
        return b, False
    k = rng.randrange(4)
    if k == 0:
        return b + rng.randbytes(room), False
    if k == 1:
        return b + bytes(room), False
    if room < 16:
        return b + rng.randbytes(room), False
    # consistent: grow the last unencrypted payload (or add one) and fix the lengths
    spl = ike_split(bytes(b)) if len(b) >= 28 and b[17] == 0x20 else None
    if spl is not None:
        hdr, pl = spl
        room = min(room, 65535 - 8)
        if pl and pl[-1][0] != 46 and len(pl[-1][2]) + room < 65531 and k == 2:
            t, fl, body = pl[-1]
            pl[-1] = (t, fl, body + rng.randbytes(room - 8))
        elif pl and pl[-1][0] == 46:
            pl.insert(len(pl) - 1, (200, 0, rng.randbytes(room - 8)))
        else:
            pl.append((rng.choice((200, 41, 43)), 0, rng.randbytes(room - 8)))
        return bytearray(ike_join(hdr, pl)), True
    if len(b) >= 8 and b[0:4] != MARKER:      # ESP-shaped: block-aligned, so the ICV is computed
        room -= (len(b) + room - 40) % 16
        return b + rng.randbytes(max(0, room)), True
    return b + rng.randbytes(room), False


def m_ike_len(f, b):
    if len(b) < 28:
        return b, False
    n = len(b)
    v = f.rng.choice((0, 1, 27, 28, n - 1, n + 1, n + 4, n - 4, 0xFFFFFFFF, 0x7FFFFFFF,
                      65535, 65536, f.rng.randrange(1 << 32)))
    b[24:28] = (v & 0xFFFFFFFF).to_bytes(4, "big")
    return b, True


def m_pay_len(f, b):
    hs = ike_walk(b)
    if not hs:
        return m_ike_len(f, b)
    off, _ = f.rng.choice(hs)
    plen = (b[off + 2] << 8) | b[off + 3]
    v = f.rng.choice((0, 1, 3, 4, 5, plen - 1, plen + 1, plen + 4, plen - 4, plen * 2,
                      0xFFFF, len(b) - off, len(b) - off + 1, f.rng.randrange(65536)))
    v &= 0xFFFF
    b[off + 2] = v >> 8
    b[off + 3] = v & 0xFF
    return b, True


def m_next(f, b):
    hs = ike_walk(b)
    if len(b) >= 28 and (not hs or f.rng.random() < 0.25):
        b[16] = f.rng.choice(NEXT_CHOICES)
        return b, False
    if not hs:
        return b, False
    off, _ = f.rng.choice(hs)
    if f.rng.random() < 0.2:
        b[off + 1] ^= 0x80                    # the critical bit
    else:
        b[off] = f.rng.choice(NEXT_CHOICES)
    return b, False


def m_chain(f, b):
    """Reorder, duplicate, drop, splice or retype payloads; lengths re-encoded."""
    spl = ike_split(bytes(b))
    if spl is None:
        return m_next(f, b)
    hdr, pl = spl
    rng = f.rng
    k = rng.randrange(6)
    if k == 0 and len(pl) > 1:
        rng.shuffle(pl)
    elif k == 1 and pl:
        i = rng.randrange(len(pl))
        pl.insert(rng.randrange(len(pl) + 1), pl[i])
    elif k == 2 and pl:
        pl.pop(rng.randrange(len(pl)))
    elif k == 3:
        other = ike_split(rng.choice(f.c_ike)[0])
        if other and other[1]:
            pl.insert(rng.randrange(len(pl) + 1), rng.choice(other[1]))
    elif k == 4 and pl:
        i = rng.randrange(len(pl))
        pl[i] = (rng.choice(NEXT_CHOICES), pl[i][1], pl[i][2])
    else:
        if len(pl) > 1:
            i, j = rng.randrange(len(pl)), rng.randrange(len(pl))
            pl[i], pl[j] = pl[j], pl[i]
    return bytearray(ike_join(hdr, pl)), True


def m_sk(f, b):
    """SK payload: ciphertext length off the block size, or cut to the bare minimum."""
    hs = ike_walk(b)
    sk = [o for o, t in hs if t == 46]
    if not sk:
        return m_truncate(f, b)
    off = sk[0]
    k = f.rng.randrange(3)
    if k == 0:
        b = b[:len(b) - f.rng.randrange(1, 17)]
    elif k == 1:
        b = b[:off + 4 + f.rng.choice((0, 15, 16, 31, 32, 47))]
    else:
        b = b + f.rng.randbytes(f.rng.randrange(1, 16))
    if len(b) < off + 4:
        return b, True
    n = len(b) - off
    b[off + 2] = (n >> 8) & 0xFF
    b[off + 3] = n & 0xFF
    b[24:28] = len(b).to_bytes(4, "big")
    return b, True


def m_version(f, b):
    if len(b) >= 28:
        b[17] = f.rng.choice((0x10, 0x21, 0x30, 0xF0, 0x00))
        b[18] = f.rng.choice((34, 35, 36, 37, 0, 33, 38, 255)) if f.rng.random() < 0.5 else b[18]
        b[19] ^= f.rng.choice((0x08, 0x20, 0x10, 0x28, 0xFF))
    return b, False


def m_esp_len(f, b):
    if len(b) < 8:
        return b, False
    rng = f.rng
    n = rng.choice((8, 9, 39, 40, 55, 56, 57, 71, 72, 73, len(b) - 1, len(b) + 1,
                    len(b) - 16, len(b) + 16, len(b) + 15))
    n = max(8, n)
    if n <= len(b):
        return b[:n], True
    return b + rng.randbytes(n - len(b)), True


def m_esp_seq(f, b):
    if len(b) < 8:
        return b, False
    v = f.rng.choice((0, 1, 2, 63, 64, 65, 0x7FFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF, f.rng.randrange(1 << 32)))
    b[4:8] = v.to_bytes(4, "big")
    return b, False


def m_esp_spi(f, b):
    if len(b) < 8:
        return b, False
    v = f.rng.choice((0, 1, 255, 256, 0xFFFFFFFF, f.rng.randrange(1 << 32)))
    b[0:4] = v.to_bytes(4, "big")
    return b, False


def m_marker_add(f, b):
    return bytearray(MARKER) + b, False


def m_marker_drop(f, b):
    return b, False           # handled by the caller: the IKE message goes without marker


MUTATORS = {
    "bitflip": m_bitflip, "byteset": m_byteset, "truncate": m_truncate, "extend": m_extend,
    "huge": m_huge, "ike_len_lie": m_ike_len, "pay_len_lie": m_pay_len,
    "next_payload": m_next, "chain_swap": m_chain, "sk_len": m_sk, "version_flags": m_version,
    "esp_len_lie": m_esp_len, "esp_seq": m_esp_seq, "esp_spi": m_esp_spi,
    "marker_add": m_marker_add, "marker_drop": m_marker_drop,
}
_IKE_W = {"bitflip": 14, "byteset": 8, "truncate": 8, "extend": 5, "huge": 1.5,
          "ike_len_lie": 8, "pay_len_lie": 11, "next_payload": 9, "chain_swap": 12,
          "sk_len": 4, "version_flags": 3, "marker_drop": 2, "marker_add": 1}
_ESP_W = {"bitflip": 16, "byteset": 8, "truncate": 10, "extend": 6, "huge": 1.5,
          "esp_len_lie": 12, "esp_seq": 8, "esp_spi": 4, "marker_add": 3}
IKE_MUTS = (list(_IKE_W), list(_IKE_W.values()))
ESP_MUTS = (list(_ESP_W), list(_ESP_W.values()))

def _inner_pay_len(f, b):
    """A generic payload length lie in an inner chain (offsets start at 0)."""
    off = 0
    hs = []
    while off + 4 <= len(b) and len(hs) < 32:
        hs.append(off)
        plen = (b[off + 2] << 8) | b[off + 3]
        if plen < 4:
            break
        off += plen
    if not hs:
        return b, False
    o = f.rng.choice(hs)
    plen = (b[o + 2] << 8) | b[o + 3]
    v = f.rng.choice((0, 3, 4, plen - 1, plen + 1, 0xFFFF, len(b) - o + 1)) & 0xFFFF
    b[o + 2] = v >> 8
    b[o + 3] = v & 0xFF
    if f.rng.random() < 0.3:
        b[o] = f.rng.choice(NEXT_CHOICES)
    return b, True


MUT_INNER = [m_bitflip, m_byteset, m_truncate, m_extend, _inner_pay_len, _inner_pay_len]
MUT_BODY = [m_bitflip, m_byteset, m_truncate, m_extend]


# ------------------------------------------------------------------ driver

class _worker_log:
    def __init__(self, seed):
        self.seed = seed

    def __call__(self, s):
        print("[seed %d] %s" % (self.seed, s), file=sys.stderr, flush=True)


def run_one(args):
    seed, packets, opts = args
    f = Fuzzer(seed, packets, **opts)
    return f.run()


def merge(results):
    if len(results) == 1:
        return results[0]

    def add(dicts):
        c = Counter()
        for d in dicts:
            for k, v in d.items():
                if isinstance(v, (int, float)):
                    c[k] += v
        return dict(c)

    out = {"seeds": [r["seed"] for r in results], "workers": len(results),
           "packets": sum(r["packets"] for r in results),
           "seconds": {"setup": max(r["seconds"]["setup"] for r in results),
                       "fuzz": max(r["seconds"]["fuzz"] for r in results)},
           "simulated_seconds_per_worker": results[0]["simulated_seconds"]}
    out["packets_per_s"] = round(out["packets"] / out["seconds"]["fuzz"], 1)
    out["packets_per_s_per_worker"] = [r["packets_per_s"] for r in results]
    for k in ("by_family", "by_kind", "by_path", "by_mutator", "replies", "live_spi_hits",
              "engine_stats", "node_stats", "discovery", "esp_drop_reasons_live_spi",
              "legit_chain"):
        out[k] = add([r[k] for r in results])
    out["by_mutator"] = dict(sorted(out["by_mutator"].items(), key=lambda kv: -kv[1]))
    out["sizes"] = add([r["sizes"] for r in results])
    out["sizes"]["huge_max"] = max(r["sizes"].get("huge_max", 0) for r in results)
    out["reach"] = {}
    for r in results:
        for fam, c in r["reach"].items():
            out["reach"].setdefault(fam, Counter()).update(c)
    out["reach"] = {f: dict(c.most_common()) for f, c in out["reach"].items()}
    out["ike_handled"] = add([r["ike_handled"] for r in results])
    ev = {}
    for r in results:
        for fam, c in r["b_events"].items():
            ev.setdefault(fam, Counter()).update(c)
    out["b_events"] = {f: dict(c) for f, c in ev.items()}
    out["clear_datagrams"] = sum(r["clear_datagrams"] for r in results)
    out["corpus"] = results[0]["corpus"]
    out["table_max"] = {k: max(r["table_max"].get(k, 0) for r in results) for k in results[0]["table_max"]}
    out["table_bounds"] = results[0]["table_bounds"]
    out["tables_over"] = {}
    for r in results:
        out["tables_over"].update(r["tables_over"])
    out["tables_settled"] = [r["tables_settled"] for r in results]
    g = {}
    for k in ("a_to_b_sent", "a_to_b_delivered", "b_to_a_sent", "b_to_a_delivered"):
        g[k] = sum(r["genuine"][k] for r in results)
    g["lost"] = sum((r["genuine"]["lost"] for r in results), [])
    g["wrong"] = sum((r["genuine"]["wrong"] for r in results), [])
    out["genuine"] = g
    out["attacker_datagrams_delivered"] = sum(r["attacker_datagrams_delivered"] for r in results)
    out["attacker_restarts"] = sum(r["attacker_restarts"] for r in results)
    out["legit_breaks"] = sum((r["legit_breaks"] for r in results), [])
    out["memory"] = [r["memory"] for r in results]
    found = {}
    for r in results:
        for f in r["findings"]:
            key = (f["what"], f.get("exception"))
            if key in found:
                found[key]["count"] += f["count"]
                found[key].setdefault("also_seed", []).append(f["seed"])
            else:
                found[key] = dict(f)
    out["findings"] = list(found.values())
    return out


def failures(s, max_growth=2 << 20):
    """What the summary says went wrong (an empty list when nothing did)."""
    bad = []
    if s["findings"]:
        bad.append("%d finding(s): %s" % (len(s["findings"]), "; ".join(
            "%s %s x%d" % (f["what"], f.get("exception", ""), f["count"]) for f in s["findings"])))
    g = s["genuine"]
    if g["a_to_b_delivered"] != g["a_to_b_sent"] or g["b_to_a_delivered"] != g["b_to_a_sent"] \
            or g["lost"] or g["wrong"]:
        bad.append("genuine datagrams: %r" % {k: g[k] for k in g if k not in ("lost", "wrong")})
    if s["tables_over"]:
        bad.append("tables over their bounds: %r" % s["tables_over"])
    if s["legit_breaks"]:
        bad.append("legitimate SA broken: %r" % s["legit_breaks"][:5])
    mems = s["memory"] if isinstance(s["memory"], list) else [s["memory"]]
    for m in mems:
        gr = m.get("growth_settled_bytes")
        if gr is not None and gr > max_growth:
            bad.append("traced memory grew by %d bytes (settled end vs settled start)" % gr)
    return bad


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=40000, help="parser packets in total (all workers)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="processes, each with seed*100+i")
    ap.add_argument("--genuine-every", type=int, default=50)
    ap.add_argument("--no-trace", action="store_true", help="no tracemalloc (faster; no traced memory figures)")
    ap.add_argument("--no-oversize", action="store_true", help="skip the oversize memory probe")
    ap.add_argument("--json", action="store_true", help="print the whole summary as JSON")
    ap.add_argument("--out", help="also write the JSON summary to this file")
    a = ap.parse_args(argv)
    opts = {"genuine_every": a.genuine_every, "trace": not a.no_trace}
    if a.workers <= 1:
        opts["log"] = lambda s: print(s, file=sys.stderr, flush=True)
        res = [run_one((a.seed, a.packets, dict(opts, oversize=not a.no_oversize)))]
    else:
        import multiprocessing as mp
        per = [a.packets // a.workers + (1 if i < a.packets % a.workers else 0) for i in range(a.workers)]
        jobs = [(a.seed * 100 + i, per[i], dict(opts, oversize=(i == 0 and not a.no_oversize),
                                                log=_worker_log(a.seed * 100 + i)))
                for i in range(a.workers)]
        with mp.get_context("fork").Pool(a.workers) as pool:
            res = pool.map(run_one, jobs)
    s = merge(res)
    bad = failures(s)
    s["verdict"] = bad or "ok"
    text = json.dumps(s, indent=1, default=str)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text)
    if a.json:
        print(text)
    else:
        print(brief(s))
    return 1 if bad else 0


def brief(s):
    """The summary in a few lines of text."""
    g = s["genuine"]
    mems = s["memory"] if isinstance(s["memory"], list) else [s["memory"]]
    lines = [
        "packets %d by kind %s, by family %s, by path %s" % (s["packets"], s["by_kind"], s["by_family"],
                                                            s["by_path"]),
        "speed %s packets/s (%s s of fuzzing)" % (s["packets_per_s"], s["seconds"]["fuzz"]),
        "genuine A->B %d/%d, B->A %d/%d delivered; lost %d, wrong %d; legitimate SA: %s, broken %d"
        % (g["a_to_b_delivered"], g["a_to_b_sent"], g["b_to_a_delivered"], g["b_to_a_sent"],
           len(g["lost"]), len(g["wrong"]), s["legit_chain"], len(s["legit_breaks"])),
        "B engine counters %s" % s["engine_stats"],
        "B node counters %s" % s["node_stats"],
        "ESP drop reasons (live SPIs) %s; IKE messages handled %s; replies by family %s"
        % (s["esp_drop_reasons_live_spi"], s["ike_handled"], s["replies"]),
        "table maxima (bound) %s" % ", ".join("%s %d (%d)" % (k, v, s["table_bounds"].get(k, -1))
                                               for k, v in sorted(s["table_max"].items())),
    ]
    for m in mems:
        if m.get("start", {}).get("traced_current") is not None:
            lines.append("traced memory start %d, end %d (settled growth %d, second-half growth %s), peak %d; "
                         "RSS start %d end %d" % (m["start"]["traced_current"], m["end"]["traced_current"],
                                                  m["growth_settled_bytes"], m.get("growth_second_half_bytes"),
                                                  m["traced_peak"], m["start"]["rss"], m["end"]["rss"]))
        for k, v in sorted(m.get("oversize", {}).items()):
            if isinstance(v, dict):
                lines.append("oversize %-24s transient %7d B/call, retained %7d B, %6.1f us/call %s"
                             % (k, v["transient_peak_bytes_max"], v["retained_bytes_after_batch"],
                                v["us_per_call"], v["counters"]))
    for f in s["findings"]:
        lines.append("FINDING: " + json.dumps(f, default=str))
    lines.append("verdict: %s" % (s["verdict"],))
    return "\n".join(lines)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
