"""ESP (RFC 4303) with ENCR_AES_CBC-128 (RFC 3602) and AUTH_HMAC_SHA2_256_128 (RFC 4868).

Packet layout (what travels after the UDP header on port 4500, RFC 3948)::

    SPI(4) | seq(4) | IV(16) | AES-CBC(payload | pad 1,2,3.. | pad_len | next_header) | ICV(16)

ICV = first 16 bytes of HMAC-SHA-256(int_key, SPI | seq | IV | ciphertext).
32-bit sequence numbers only (no ESN): the sender refuses to wrap (EspLimit).

Sans-IO: AES arrives as a provider object (cbc_encrypt / cbc_decrypt, HACKING.md),
randomness as ``rand(n) -> bytes``, and the HMAC may be injected as
``hmac(key, msg) -> bytes`` (>= 16 bytes, truncated here) so a board can plug in a
faster one. The default is ``pnpipsec.crypto.hmac.hmac_sha256``.

This is the per-packet hot path: one padding concatenation, one header+IV+ciphertext
concatenation and the ICV append on seal; slices on open. No per-packet loops in Python.
"""

from struct import pack, unpack_from

NH_IPV4 = 4     # tunnel mode, inner IPv4 packet
NH_IPV6 = 41    # tunnel mode, inner IPv6 packet
NH_UDP = 17     # transport mode, UDP header + datagram
NH_NONE = 59    # "no next header": dummy packet / TFC padding (RFC 4303 s2.6); caller drops it

HDR_LEN = 8
IV_LEN = 16
ICV_LEN = 16
BLOCK = 16
# SPI + seq + IV + one cipher block + ICV
MIN_LEN = HDR_LEN + IV_LEN + BLOCK + ICV_LEN
SEQ_MAX = 0xFFFFFFFF

# drop reasons (keys of EspIn.drops)
R_LENGTH = "length"     # too short, or ciphertext not a multiple of the block size
R_SPI = "spi"           # SPI is not this SA's
R_REPLAY = "replay"     # sequence number already seen (or zero)
R_OLD = "old"           # sequence number left of the replay window
R_ICV = "icv"           # integrity check failed
R_PAD = "pad"           # padding bytes or pad length invalid after decryption

_PAD255 = bytes(range(1, 256))
# trailers (pad 1,2,3.. | pad length | next header) by (next header << 4 | pad length),
# filled on first use: a handful of entries in practice (next headers 4, 17, 41, 59)
_TAILS = {}


def _tail(key):
    k = key & 15
    t = _PAD255[:k] + bytes((k, key >> 4))  # ValueError if next header is not 0..255
    if len(_TAILS) < 256:
        _TAILS[key] = t
    return t


def _ct_differ16(mac, icv):
    # constant-time-ish: one XOR of two 128-bit integers, no early exit
    return int.from_bytes(mac[:16], "big") ^ int.from_bytes(icv, "big")


def _pick_differ():
    try:
        import sys
        if sys.implementation.name != "cpython":
            return _ct_differ16
        from hmac import compare_digest  # the standard library's, constant time in C
    except (ImportError, AttributeError):
        return _ct_differ16

    def differ(mac, icv):
        return not compare_digest(mac[:16], icv)
    return differ


_differ = _pick_differ()


class EspDrop(Exception):
    """An inbound packet was dropped; ``.reason`` is one of the R_* strings."""

    @property
    def reason(self):
        return self.args[0]


class EspLimit(Exception):
    """The outbound SA may not send more (sequence would wrap, or hard byte limit)."""


def _default_hmac():
    from pnpipsec.crypto.hmac import hmac_sha256
    return hmac_sha256


def sealed_len(payload_len):
    """Length of the ESP packet seal() makes for a payload of payload_len bytes."""
    return HDR_LEN + IV_LEN + ((payload_len + 2 + 15) & ~15) + ICV_LEN


def max_payload(packet_len):
    """Largest payload whose ESP packet fits in packet_len bytes (may be negative)."""
    return ((packet_len - HDR_LEN - IV_LEN - ICV_LEN) & ~15) - 2


def _check_keys(spi, enc_key, int_key):
    if not 0 < spi <= SEQ_MAX:
        raise ValueError("SPI must be a nonzero 32-bit value")
    if len(enc_key) != 16:
        raise ValueError("AES-CBC-128 needs a 16-byte key")
    if len(int_key) != 32:
        raise ValueError("HMAC-SHA2-256-128 needs a 32-byte key")


class EspOut:
    """Outbound SA: ``seal(payload, next_header) -> packet``.

    ``seq`` is the last sequence number used (0 before the first packet, which gets 1).
    ``needs_rekey`` turns true once ``seq`` reaches ``soft_packets`` or ``bytes`` (payload
    octets sealed) reaches ``soft_bytes``; ``hard_bytes`` makes seal raise EspLimit
    before exceeding it. EspLimit is also raised instead of wrapping the 32-bit sequence.
    """

    def __init__(self, spi, enc_key, int_key, aes, rand, hmac=None,
                 soft_packets=0x80000000, soft_bytes=None, hard_bytes=None):
        _check_keys(spi, enc_key, int_key)
        self.spi = spi
        self._ek = bytes(enc_key)
        self._ik = bytes(int_key)
        self._aes = aes
        self._rand = rand
        self._mac = hmac if hmac is not None else _default_hmac()
        self.seq = 0
        self.packets = 0
        self.bytes = 0
        self.soft_packets = soft_packets
        self.soft_bytes = soft_bytes
        self.hard_bytes = hard_bytes

    @property
    def needs_rekey(self):
        if self.seq >= self.soft_packets:
            return True
        sb = self.soft_bytes
        return sb is not None and self.bytes >= sb

    def seal(self, payload, next_header):
        seq = self.seq
        if seq >= SEQ_MAX:
            raise EspLimit("sequence number would wrap")
        n = len(payload)
        hb = self.hard_bytes
        if hb is not None and self.bytes + n > hb:
            raise EspLimit("hard byte limit")
        seq += 1
        iv = self._rand(16)
        if len(iv) != 16:
            raise ValueError("rand(16) returned %d bytes" % len(iv))
        # payload + pad + pad_len + next_header is a multiple of 16
        key = (next_header << 4) | ((14 - n) & 15)
        tail = _TAILS.get(key)
        if tail is None:
            tail = _tail(key)
        ct = self._aes.cbc_encrypt(self._ek, iv, payload + tail)
        body = pack(">II", self.spi, seq) + iv + ct
        pkt = body + self._mac(self._ik, body)[:16]
        self.seq = seq
        self.packets += 1
        self.bytes += n
        return pkt


class EspIn:
    """Inbound SA: ``open(packet) -> (next_header, payload)`` or raise EspDrop.

    Checks, in order: length, SPI, replay window (pre-check), ICV, decryption, padding,
    then the replay window moves (RFC 4303 s3.4.3). A drop changes nothing but
    ``drops[reason]``. next_header NH_NONE (59) is returned as is: a dummy packet the
    caller discards. ``window`` is the replay window size in packets (>= 1; RFC 4303
    recommends >= 64).
    """

    def __init__(self, spi, enc_key, int_key, aes, window=64, hmac=None):
        _check_keys(spi, enc_key, int_key)
        if window < 1:
            raise ValueError("window must be >= 1")
        self.spi = spi
        self._ek = bytes(enc_key)
        self._ik = bytes(int_key)
        self._aes = aes
        self._mac = hmac if hmac is not None else _default_hmac()
        self.window = window
        self._mask = (1 << window) - 1
        self.top = 0        # highest sequence number accepted so far
        self.bitmap = 0     # bit i set: sequence number top - i accepted
        self.packets = 0
        self.bytes = 0
        self.drops = {}

    def _drop(self, reason):
        d = self.drops
        d[reason] = d.get(reason, 0) + 1
        return EspDrop(reason)

    def seen(self, seq):
        """True if seq would be rejected by the replay check (seen, too old, or zero)."""
        if seq == 0:
            return True
        top = self.top
        if seq > top:
            return False
        diff = top - seq
        return diff >= self.window or (self.bitmap >> diff) & 1 == 1

    def open(self, packet):
        n = len(packet)
        if n < MIN_LEN or (n - (HDR_LEN + IV_LEN + ICV_LEN)) & 15:
            raise self._drop(R_LENGTH)
        spi, seq = unpack_from(">II", packet)
        if spi != self.spi:
            raise self._drop(R_SPI)
        if seq == 0:
            # sequence 0 is never sent (the first packet has 1)
            raise self._drop(R_REPLAY)
        top = self.top
        if seq <= top:
            diff = top - seq
            if diff >= self.window:
                raise self._drop(R_OLD)
            if (self.bitmap >> diff) & 1:
                raise self._drop(R_REPLAY)
        if _differ(self._mac(self._ik, packet[:-16]), packet[-16:]):
            raise self._drop(R_ICV)
        pt = self._aes.cbc_decrypt(self._ek, packet[8:24], packet[24:-16])
        m = len(pt)
        padlen = pt[m - 2]
        end = m - 2 - padlen
        if end < 0 or pt[end:m - 2] != _PAD255[:padlen]:
            raise self._drop(R_PAD)
        # accept: move the window
        if seq > top:
            shift = seq - top
            if shift >= self.window:
                self.bitmap = 1
            else:
                self.bitmap = ((self.bitmap << shift) | 1) & self._mask
            self.top = seq
        else:
            self.bitmap |= 1 << (top - seq)
        self.packets += 1
        self.bytes += end
        return pt[m - 1], pt[:end]
