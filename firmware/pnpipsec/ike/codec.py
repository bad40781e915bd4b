"""IKEv2 message codec (RFC 7296 section 3): header, payload chain, payload bodies, SK.

Every parse function raises IkeParseError (and nothing else) on hostile input.
Payload lists are lists of (payload_type, body_bytes); bodies are decoded on demand
by the parse_* helpers below so a message costs one pass and few allocations.
"""

import struct
from pnpipsec.crypto.hmac import hmac_sha256

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_ATTR_KEY_LENGTH = const(14)
_DH_CURVE25519 = const(31)
_F_INITIATOR = const(8)
_F_RESPONSE = const(32)
_PROTO_IKE = const(1)
_PT_N = const(41)
_PT_SK = const(46)
_TS_IPV4_ADDR_RANGE = const(7)
_TS_IPV6_ADDR_RANGE = const(8)

HDR_LEN = 28
KNOWN = (33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 53)


class IkeParseError(Exception):
    pass


def _fail(why):
    raise IkeParseError(why)


def ct_eq(a, b):
    """Constant-time bytes comparison."""
    if len(a) != len(b):
        return False
    r = 0
    for i in range(len(a)):
        r |= a[i] ^ b[i]
    return r == 0


class Message:
    """A parsed message. payloads: [(type, body)]; after decrypt() the inner payloads
    are appended (the SK payload itself is not listed)."""
    src = None                 # where it came from (engine.receive's peer_addr)

    def __init__(self, raw):
        self.raw = raw
        self.spi_i = raw[0:8]
        self.spi_r = raw[8:16]
        self.exch = raw[18]
        self.flags = raw[19]
        self.mid = int.from_bytes(raw[20:24], "big")
        self.payloads = []
        self.crit = None       # first unknown payload type with the critical bit
        self.sk = None         # (first_inner_type, offset of SK body) or None
        self.via = None        # the receiver's arrival tag (engine.receive's via)

    @property
    def is_response(self):
        return bool(self.flags & _F_RESPONSE)

    @property
    def from_initiator(self):
        return bool(self.flags & _F_INITIATOR)

    def get(self, ptype):
        for t, b in self.payloads:
            if t == ptype:
                return b
        return None

    def all(self, ptype):
        return [b for t, b in self.payloads if t == ptype]

    def notifies(self):
        """[(type, proto, spi, data)] of all Notify payloads."""
        return [parse_notify(b) for t, b in self.payloads if t == _PT_N]

    def notify(self, ntype):
        for n in self.notifies():
            if n[0] == ntype:
                return n
        return None

    def error_notify(self):
        for n in self.notifies():
            if n[0] < 16384:
                return n
        return None


def _chain(data, off, end, ptype, msg):
    """Parse a generic payload chain into msg.payloads; stops at SK (must be last)."""
    while ptype != 0:
        if end - off < 4:
            _fail("truncated payload header")
        nxt = data[off]
        crit = data[off + 1] & 0x80
        plen = (data[off + 2] << 8) | data[off + 3]
        if plen < 4 or off + plen > end:
            _fail("bad payload length")
        if ptype == _PT_SK:
            if msg.sk is not None or off + plen != end:
                _fail("SK not last")
            msg.sk = (nxt, off + 4)
            return
        if ptype in KNOWN:
            msg.payloads.append((ptype, data[off + 4:off + plen]))
        elif crit and msg.crit is None:
            msg.crit = ptype
        off += plen
        ptype = nxt
    if off != end:
        _fail("trailing bytes after last payload")


def parse(data):
    """Parse header and the unencrypted payload chain. Returns a Message."""
    if not isinstance(data, bytes):
        data = bytes(data)
    if len(data) < HDR_LEN:
        _fail("short header")
    if data[17] >> 4 != 2:
        _fail("major version")
    if int.from_bytes(data[24:28], "big") != len(data):
        _fail("length mismatch")
    msg = Message(data)
    _chain(data, HDR_LEN, len(data), data[16], msg)
    return msg


def decrypt(msg, sk_e, sk_a, aes):
    """Check the ICV, then decrypt the SK payload and parse its inner chain into
    msg.payloads. Raises IkeParseError (bad ICV included) without touching msg on error."""
    if msg.sk is None:
        _fail("no SK payload")
    raw = msg.raw
    first, off = msg.sk
    n = len(raw) - off - 32
    if n < 16 or n % 16:
        _fail("bad SK length")
    if not ct_eq(hmac_sha256(sk_a, raw[:-16])[:16], raw[-16:]):
        _fail("bad ICV")
    pt = aes.cbc_decrypt(sk_e, raw[off:off + 16], raw[off + 16:len(raw) - 16])
    pad = pt[-1]
    if pad + 1 > len(pt):
        _fail("bad padding")
    inner = Message(raw)
    _chain(pt, 0, len(pt) - pad - 1, first, inner)
    if inner.sk is not None:
        _fail("nested SK")
    msg.payloads = msg.payloads + inner.payloads
    if msg.crit is None:
        msg.crit = inner.crit
    return msg


def _gen(nxt, body):
    n = len(body) + 4
    return bytes((nxt, 0, n >> 8, n & 0xFF)) + body


def encode_chain(payloads):
    out = []
    for i in range(len(payloads)):
        nxt = payloads[i + 1][0] if i + 1 < len(payloads) else 0
        out.append(_gen(nxt, payloads[i][1]))
    return b"".join(out)


def _header(spi_i, spi_r, first, exch, flags, mid, length):
    return spi_i + spi_r + struct.pack(">BBBBII", first, 0x20, exch, flags, mid, length)


def encode(spi_i, spi_r, exch, flags, mid, payloads):
    body = encode_chain(payloads)
    first = payloads[0][0] if payloads else 0
    return _header(spi_i, spi_r, first, exch, flags, mid, HDR_LEN + len(body)) + body


def encode_sk(spi_i, spi_r, exch, flags, mid, payloads, sk_e, sk_a, aes, rand):
    """Message with one SK payload: IV16 | AES-CBC(inner | pad | padlen) | ICV16."""
    inner = encode_chain(payloads)
    first = payloads[0][0] if payloads else 0
    pad = (16 - (len(inner) + 1) % 16) % 16
    iv = rand(16)
    ct = aes.cbc_encrypt(sk_e, iv, inner + bytes(pad) + bytes((pad,)))
    total = HDR_LEN + 4 + 16 + len(ct) + 16
    n = 4 + 16 + len(ct) + 16
    m = (_header(spi_i, spi_r, _PT_SK, exch, flags, mid, total)
         + bytes((first, 0, n >> 8, n & 0xFF)) + iv + ct)
    return m + hmac_sha256(sk_a, m)[:16]


# ---------------------------------------------------------------- SA payload

def parse_sa(body):
    """[(num, proto, spi, [(ttype, tid, keylen)])]; keylen None when absent and -1 when
    the transform carries an attribute we do not know (makes it unacceptable)."""
    props = []
    off = 0
    end = len(body)
    if end == 0:
        _fail("empty SA")
    while off < end:
        if end - off < 8:
            _fail("short proposal")
        last = body[off]
        plen = (body[off + 2] << 8) | body[off + 3]
        num, proto, spisz, ntr = body[off + 4], body[off + 5], body[off + 6], body[off + 7]
        if plen < 8 + spisz or off + plen > end:
            _fail("bad proposal length")
        if last != (0 if off + plen == end else 2):
            _fail("bad proposal last flag")
        spi = body[off + 8:off + 8 + spisz]
        tr = []
        t = off + 8 + spisz
        pend = off + plen
        while t < pend:
            if pend - t < 8:
                _fail("short transform")
            tlast = body[t]
            tlen = (body[t + 2] << 8) | body[t + 3]
            if tlen < 8 or t + tlen > pend:
                _fail("bad transform length")
            if tlast != (0 if t + tlen == pend else 3):
                _fail("bad transform last flag")
            ttype = body[t + 4]
            tid = (body[t + 6] << 8) | body[t + 7]
            keylen = None
            a = t + 8
            while a < t + tlen:
                if t + tlen - a < 4:
                    _fail("short attribute")
                af = (body[a] << 8) | body[a + 1]
                if af & 0x8000:
                    val = (body[a + 2] << 8) | body[a + 3]
                    a += 4
                else:
                    alen = (body[a + 2] << 8) | body[a + 3]
                    if a + 4 + alen > t + tlen:
                        _fail("bad attribute length")
                    a += 4 + alen
                    val = None
                if af == 0x8000 | _ATTR_KEY_LENGTH:
                    if keylen != -1:        # an unknown attribute stays fatal
                        keylen = val
                else:
                    keylen = -1
            tr.append((ttype, tid, keylen))
            t += tlen
        if len(tr) != ntr:
            _fail("transform count")
        props.append((num, proto, spi, tr))
        off += plen
    return props


def encode_sa(props):
    out = []
    for i in range(len(props)):
        num, proto, spi, trs = props[i]
        tb = []
        for j in range(len(trs)):
            ttype, tid, keylen = trs[j]
            attr = b"" if keylen is None else struct.pack(">HH", 0x8000 | _ATTR_KEY_LENGTH, keylen)
            tb.append(struct.pack(">BBHBBH", 0 if j == len(trs) - 1 else 3, 0,
                                  8 + len(attr), ttype, 0, tid) + attr)
        tb = b"".join(tb)
        plen = 8 + len(spi) + len(tb)
        out.append(struct.pack(">BBHBBBB", 0 if i == len(props) - 1 else 2, 0, plen,
                               num, proto, len(spi), len(trs)) + spi + tb)
    return b"".join(out)


# ---------------------------------------------------------------- simple payloads

def parse_ke(body):
    if len(body) < 4:
        _fail("short KE")
    group = (body[0] << 8) | body[1]
    data = body[4:]
    if group == _DH_CURVE25519 and len(data) != 32:
        _fail("bad Curve25519 KE length")
    return group, data


def encode_ke(group, data):
    return struct.pack(">HH", group, 0) + data


def parse_nonce(body):
    if not 16 <= len(body) <= 256:
        _fail("bad nonce length")
    return body


def parse_id(body):
    """(id_type, data)."""
    if len(body) < 4:
        _fail("short ID")
    return body[0], body[4:]


def encode_id(id_type, data):
    return bytes((id_type, 0, 0, 0)) + data


def parse_auth(body):
    if len(body) < 4:
        _fail("short AUTH")
    return body[0], body[4:]


def encode_auth(method, data):
    return bytes((method, 0, 0, 0)) + data


def parse_notify(body):
    """(type, proto, spi, data)."""
    if len(body) < 4:
        _fail("short notify")
    spisz = body[1]
    if len(body) < 4 + spisz:
        _fail("bad notify SPI size")
    return ((body[2] << 8) | body[3], body[0], body[4:4 + spisz], body[4 + spisz:])


def encode_notify(ntype, data=b"", proto=0, spi=b""):
    return struct.pack(">BBH", proto, len(spi), ntype) + spi + data


def notify(ntype, data=b"", proto=0, spi=b""):
    """A Notify payload for a payload list: (PT_N, body)."""
    return (_PT_N, encode_notify(ntype, data, proto, spi))


def parse_delete(body):
    """(proto, [spi, ...])."""
    if len(body) < 4:
        _fail("short delete")
    proto, spisz = body[0], body[1]
    n = (body[2] << 8) | body[3]
    if len(body) != 4 + n * spisz:
        _fail("bad delete length")
    if proto == _PROTO_IKE and (spisz or n):
        _fail("bad IKE delete")
    if proto != _PROTO_IKE and spisz != 4:
        _fail("bad delete SPI size")
    return proto, [body[4 + i * spisz:4 + (i + 1) * spisz] for i in range(n)]


def encode_delete(proto, spis=()):
    spisz = 4 if proto != _PROTO_IKE else 0
    return struct.pack(">BBH", proto, spisz, len(spis)) + b"".join(spis)


def parse_ts(body):
    """[(ts_type, ip_proto, start_port, end_port, start_addr, end_addr)]."""
    if len(body) < 4:
        _fail("short TS")
    n = body[0]
    out = []
    off = 4
    for i in range(n):
        if len(body) - off < 8:
            _fail("short selector")
        tst = body[off]
        slen = (body[off + 2] << 8) | body[off + 3]
        if tst == _TS_IPV4_ADDR_RANGE:
            alen = 4
        elif tst == _TS_IPV6_ADDR_RANGE:
            alen = 16
        else:
            _fail("unknown TS type")
        if slen != 8 + 2 * alen or off + slen > len(body):
            _fail("bad selector length")
        sp = (body[off + 4] << 8) | body[off + 5]
        ep = (body[off + 6] << 8) | body[off + 7]
        out.append((tst, body[off + 1], sp, ep, body[off + 8:off + 8 + alen],
                    body[off + 8 + alen:off + slen]))
        off += slen
    if off != len(body) or n == 0:
        _fail("bad TS payload")
    return out


def encode_ts(ranges, proto=0, sport=0, eport=65535):
    """ranges: [(start_addr, end_addr)] with 4- or 16-byte addresses."""
    out = [bytes((len(ranges), 0, 0, 0))]
    for s, e in ranges:
        tst = _TS_IPV4_ADDR_RANGE if len(s) == 4 else _TS_IPV6_ADDR_RANGE
        out.append(struct.pack(">BBHHH", tst, proto, 8 + 2 * len(s), sport, eport) + s + e)
    return b"".join(out)
