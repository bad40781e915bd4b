"""Independent references for tests, built on the `cryptography` package only.

Tests compare our code with these, never with itself. `AES` is the AES provider of the
HACKING.md contract written directly over `cryptography` (the host board has its own:
tests of the firmware should not depend on it).
"""

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as c_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def o_prf(k, m):
    """PRF_HMAC_SHA2_256."""
    h = c_hmac.HMAC(k, hashes.SHA256())
    h.update(m)
    return h.finalize()


def o_prf_plus(k, s, n):
    """RFC 7296 section 2.13: T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n)."""
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = o_prf(k, t + s + bytes([i]))
        out += t
        i += 1
    return out[:n]


class CryptographyAES:
    """AES provider (ecb_encrypt / cbc_encrypt / cbc_decrypt) over `cryptography`."""

    def ecb_encrypt(self, key, data):
        e = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        return e.update(data) + e.finalize()

    def cbc_encrypt(self, key, iv, data):
        e = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        return e.update(data) + e.finalize()

    def cbc_decrypt(self, key, iv, data):
        d = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        return d.update(data) + d.finalize()


AES = CryptographyAES()
