"""AES providers (FIPS-197) and CTR mode (SP 800-38A) for pnpipsec.

A provider has three methods taking and returning bytes, data a multiple of 16 bytes:
    ecb_encrypt(key, data), cbc_encrypt(key, iv, data), cbc_decrypt(key, iv, data)
Keys are 16, 24 or 32 bytes; anything else (or data not a multiple of 16, or an IV
not 16 bytes) raises ValueError.

CryptolibAES uses MicroPython's cryptolib/ucryptolib (C, on ESP32/RP2; one cipher
object per call, because cryptolib objects are one-way and keep CBC state).
PureAES (pnpipsec.crypto.aes_pure) is FIPS-197 in Python, loaded only where there is
no cryptolib. ctr(provider, key, counter_block, data) is CTR mode from ECB blocks (the
whole 16-byte block is the big-endian counter).
"""

try:
    import cryptolib as _cryptolib
except ImportError:
    try:
        import ucryptolib as _cryptolib
    except ImportError:
        _cryptolib = None

_MODE_ECB = 1
_MODE_CBC = 2
_ZERO16 = bytes(16)
_MASK128 = (1 << 128) - 1
_CTR_BATCH = 64  # counter blocks per ECB call in ctr()


def _check(key, data):
    if len(key) not in (16, 24, 32):
        raise ValueError("aes: key must be 16, 24 or 32 bytes")
    if len(data) % 16:
        raise ValueError("aes: data must be a multiple of 16 bytes")


def _check_iv(iv):
    if len(iv) != 16:
        raise ValueError("aes: iv must be 16 bytes")


class CryptolibAES:
    """AES through MicroPython's cryptolib (or ucryptolib)."""

    def __init__(self):
        if _cryptolib is None:
            raise ImportError("aes: no cryptolib/ucryptolib on this port")
        self._aes = _cryptolib.aes

    def ecb_encrypt(self, key, data):
        _check(key, data)
        if not data:
            return b""
        return bytes(self._aes(key, _MODE_ECB).encrypt(data))

    def cbc_encrypt(self, key, iv, data):
        _check(key, data)
        _check_iv(iv)
        if not data:
            return b""
        return bytes(self._aes(key, _MODE_CBC, iv).encrypt(data))

    def cbc_decrypt(self, key, iv, data):
        _check(key, data)
        _check_iv(iv)
        if not data:
            return b""
        return bytes(self._aes(key, _MODE_CBC, iv).decrypt(data))


def ctr(provider, key, counter_block, data):
    """AES-CTR (SP 800-38A 6.5): keystream = ECB(counter), ECB(counter + 1), ...
    with the whole 16-byte block as a big-endian counter (mod 2^128). data may have
    any length; encryption and decryption are the same operation."""
    if len(counter_block) != 16:
        raise ValueError("aes: counter block must be 16 bytes")
    n = len(data)
    if n == 0:
        if len(key) not in (16, 24, 32):
            raise ValueError("aes: key must be 16, 24 or 32 bytes")
        return b""
    ctr_int = int.from_bytes(counter_block, "big")
    out = []
    o = 0
    while o < n:
        chunk = data[o:o + 16 * _CTR_BATCH]
        m = len(chunk)
        nblocks = (m + 15) // 16
        blocks = []
        for i in range(nblocks):
            blocks.append(((ctr_int + i) & _MASK128).to_bytes(16, "big"))
        ctr_int += nblocks
        ks = provider.ecb_encrypt(key, b"".join(blocks))
        x = int.from_bytes(chunk, "big") ^ int.from_bytes(ks[:m], "big")
        out.append(x.to_bytes(m, "big"))
        o += m
    return b"".join(out)


def default_provider():
    """CryptolibAES when the port has cryptolib, else PureAES."""
    if _cryptolib is not None:
        try:
            return CryptolibAES()
        except Exception:
            pass
    from pnpipsec.crypto.aes_pure import PureAES
    return PureAES()
