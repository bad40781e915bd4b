"""AUTH methods as objects (RFC 7296 section 2.15, RFC 7619 NULL, RFC 7427 + RFC 8420
Ed25519 digital signatures).

    m = auth.of("null" | "psk" | "pubkey")    -> NULL, PSK or ED25519 (None if unknown)
    m = auth.BY_NUM.get(ikev2_method_number)  -> the same objects
    m.name     the string configs, PeerConfig(auth=...) and the policy callback use
    m.num      the IKEv2 AUTH method number (13, 2, 14)
    m.level    the highest level (pnpipsec.ENCRYPTED / AUTHENTICATED) it can give
    m.trusted  configured trust (a PSK or a configured public key): the peer's ID means
               something (remote_id is checked, INITIAL_CONTACT goes by identity) and
               the SA ranks higher when the table is full
    m.signs    a digital signature: we announce SIGNATURE_HASH_ALGORITHMS and the
               configured key is the peer's (sa.peer_pubkey)
    m.make(octets, sk_p, psk, seed, sig) -> our AUTH data
    m.check(data, octets, sk_p, psk, pub, sig) -> True when the peer's AUTH data is right
(sk_p: our SK_p for make, the peer's for check; sig: an ed25519-like module or None.)
make(m, ...) -> (number, data) is the one place the engine computes our AUTH (a test
hooks it to corrupt every AUTH we send); check(number, ...) for tests.
"""

from pnpipsec import AUTHENTICATED, ENCRYPTED
from pnpipsec.ike import const as C
from pnpipsec.ike.codec import ct_eq
from pnpipsec.crypto.hmac import hmac_sha256

KEY_PAD = b"Key Pad for IKEv2"


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


class Null:
    """RFC 7619: the AUTH is keyed with SK_p; it proves only that the peer holds the
    keys of this SA (encryption without authentication)."""
    name = "null"
    num = 13
    level = ENCRYPTED
    trusted = False
    signs = False

    def make(self, octets, sk_p, psk=None, seed=None, sig=None):
        return shared_key_auth(sk_p, octets)

    def check(self, data, octets, sk_p, psk=None, pub=None, sig=None):
        return ct_eq(shared_key_auth(sk_p, octets), data)

    def __repr__(self):
        return "<auth %s>" % self.name


class Psk(Null):
    name = "psk"
    num = 2
    level = AUTHENTICATED
    trusted = True

    def make(self, octets, sk_p, psk=None, seed=None, sig=None):
        return shared_key_auth(psk, octets)

    def check(self, data, octets, sk_p, psk=None, pub=None, sig=None):
        return psk is not None and ct_eq(shared_key_auth(psk, octets), data)


class Ed25519(Null):
    """RFC 7427 digital signature with Ed25519 (RFC 8420), against a configured key."""
    name = "pubkey"
    num = 14
    level = AUTHENTICATED
    trusted = True
    signs = True

    def make(self, octets, sk_p, psk=None, seed=None, sig=None):
        return ed25519_auth(seed, octets, sig)

    def check(self, data, octets, sk_p, psk=None, pub=None, sig=None):
        return ed25519_check(pub, octets, data, sig)


NULL = Null()
PSK = Psk()
ED25519 = Ed25519()
BY_NUM = {NULL.num: NULL, PSK.num: PSK, ED25519.num: ED25519}
_BY_NAME = {NULL.name: NULL, PSK.name: PSK, ED25519.name: ED25519}


def of(name):
    """The method object for a config/policy name ("null", "psk", "pubkey"), or None."""
    return _BY_NAME.get(name)


def make(m, octets, sk_p, psk=None, seed=None, sig=None):
    """(method number, AUTH data) for our side; m: a method object (or its name)."""
    if isinstance(m, str):
        m = _BY_NAME[m]
    return m.num, m.make(octets, sk_p, psk, seed, sig)


def check(num, data, octets, sk_p, psk=None, pub=None, sig=None):
    """True when the peer's AUTH (method number, data) is right."""
    m = BY_NUM.get(num)
    return m is not None and m.check(data, octets, sk_p, psk, pub, sig)
