"""Host-board crypto (CPython): AES through the `cryptography` package, and
OpenSSL-backed X25519 / Ed25519 with the same signatures as pnpipsec.crypto's
pure-Python modules (DESIGN section 9: the host board may swap these in; both are
tested against the same vectors).

`fast_x25519` and `fast_ed25519` are module-like namespaces that can stand in for
`pnpipsec.crypto.x25519` and `pnpipsec.crypto.ed25519`.
"""

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from pnpipsec.crypto.aes import _check, _check_iv  # the argument rules of every provider
from pnpipsec.crypto.x25519 import X25519Error

_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw


class CryptographyAES:
    """AES provider (ecb_encrypt, cbc_encrypt, cbc_decrypt) on OpenSSL via `cryptography`."""

    def ecb_encrypt(self, key, data):
        _check(key, data)
        e = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor()
        return e.update(bytes(data)) + e.finalize()

    def cbc_encrypt(self, key, iv, data):
        _check(key, data)
        _check_iv(iv)
        e = Cipher(algorithms.AES(bytes(key)), modes.CBC(bytes(iv))).encryptor()
        return e.update(bytes(data)) + e.finalize()

    def cbc_decrypt(self, key, iv, data):
        _check(key, data)
        _check_iv(iv)
        d = Cipher(algorithms.AES(bytes(key)), modes.CBC(bytes(iv))).decryptor()
        return d.update(bytes(data)) + d.finalize()


# ---- X25519 ----

def x25519_fast(k, u):
    """RFC 7748 X25519 on OpenSSL; raises X25519Error on an all-zero result."""
    if len(k) != 32 or len(u) != 32:
        raise ValueError("x25519: k and u must be 32 bytes")
    priv = X25519PrivateKey.from_private_bytes(bytes(k))
    try:
        return priv.exchange(X25519PublicKey.from_public_bytes(bytes(u)))
    except ValueError as exc:  # OpenSSL refuses the all-zero shared secret
        raise X25519Error("x25519: all-zero shared secret") from exc


def x25519_public_fast(k):
    if len(k) != 32:
        raise ValueError("x25519: k must be 32 bytes")
    return X25519PrivateKey.from_private_bytes(bytes(k)).public_key().public_bytes(_RAW, _RAW_PUB)


def x25519_keypair_fast(rand):
    k = bytes(rand(32))
    if len(k) != 32:
        raise ValueError("x25519: rand returned wrong length")
    return k, x25519_public_fast(k)


# ---- Ed25519 ----

def ed25519_public_key_fast(seed):
    if len(seed) != 32:
        raise ValueError("ed25519: seed must be 32 bytes")
    return Ed25519PrivateKey.from_private_bytes(bytes(seed)).public_key().public_bytes(_RAW, _RAW_PUB)


def ed25519_sign_fast(seed, msg):
    if len(seed) != 32:
        raise ValueError("ed25519: seed must be 32 bytes")
    return Ed25519PrivateKey.from_private_bytes(bytes(seed)).sign(bytes(msg))


def ed25519_verify_fast(pub, msg, sig):
    """True/False, never raises. OpenSSL's checks differ from the pure module only on
    non-canonical public keys (y >= p), which the pure module always rejects."""
    try:
        if len(pub) != 32 or len(sig) != 64:
            return False
        Ed25519PublicKey.from_public_bytes(bytes(pub)).verify(bytes(sig), bytes(msg))
        return True
    except InvalidSignature:
        return False
    except Exception:
        return False


class _Namespace:
    def __init__(self, **kw):
        self.__dict__.update(kw)


fast_x25519 = _Namespace(
    x25519=x25519_fast, public=x25519_public_fast, keypair=x25519_keypair_fast, X25519Error=X25519Error
)
fast_ed25519 = _Namespace(public_key=ed25519_public_key_fast, sign=ed25519_sign_fast, verify=ed25519_verify_fast)
