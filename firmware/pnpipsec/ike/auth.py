"""AUTH payload computation and checks (RFC 7296 section 2.15, RFC 7619 NULL,
RFC 7427 + RFC 8420 Ed25519 digital signatures)."""

from pnpipsec.ike import const as C
from pnpipsec.ike.codec import ct_eq
from pnpipsec.crypto.hmac import hmac_sha256

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_AUTH_DIGSIG = const(14)
_AUTH_NULL = const(13)
_AUTH_PSK = const(2)

KEY_PAD = b"Key Pad for IKEv2"

METHODS = {"psk": _AUTH_PSK, "null": _AUTH_NULL, "pubkey": _AUTH_DIGSIG}
NAMES = {_AUTH_PSK: "psk", _AUTH_NULL: "null", _AUTH_DIGSIG: "pubkey"}


def signed_octets(real_message, peer_nonce, sk_p, id_body):
    """RealMessage | Nonce of the peer | prf(SK_px, ID payload body)."""
    return real_message + peer_nonce + hmac_sha256(sk_p, id_body)


def shared_key_auth(key, octets):
    """prf(prf(key, "Key Pad for IKEv2"), octets): PSK (key = psk) and NULL
    (key = SK_pi / SK_pr, as libreswan computes it)."""
    return hmac_sha256(hmac_sha256(key, KEY_PAD), octets)


def _sig(sig):
    if sig is None:
        from pnpipsec.crypto import ed25519 as sig
    return sig


def ed25519_auth(seed, octets, sig=None):
    return bytes((len(C.ALGID_ED25519),)) + C.ALGID_ED25519 + _sig(sig).sign(seed, octets)


def ed25519_check(pub, octets, data, sig_mod=None):
    if len(data) < 1 or data[0] != len(C.ALGID_ED25519):
        return False
    if data[1:1 + data[0]] != C.ALGID_ED25519:
        return False
    sig = data[1 + data[0]:]
    if len(sig) != 64 or pub is None or len(pub) != 32:
        return False
    return bool(_sig(sig_mod).verify(pub, octets, sig))


def make(method_name, octets, sk_p, psk=None, seed=None, sig=None):
    """(method number, AUTH data) for our side."""
    if method_name == "null":
        return _AUTH_NULL, shared_key_auth(sk_p, octets)
    if method_name == "psk":
        return _AUTH_PSK, shared_key_auth(psk, octets)
    return _AUTH_DIGSIG, ed25519_auth(seed, octets, sig)


def check(method, data, octets, sk_p, psk=None, pub=None, sig=None):
    """True when the peer's AUTH (method number, data) is right."""
    if method == _AUTH_NULL:
        return ct_eq(shared_key_auth(sk_p, octets), data)
    if method == _AUTH_PSK:
        return psk is not None and ct_eq(shared_key_auth(psk, octets), data)
    if method == _AUTH_DIGSIG:
        return ed25519_check(pub, octets, data, sig)
    return False
