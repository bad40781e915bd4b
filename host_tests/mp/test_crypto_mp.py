# Crypto vectors that run both under pytest (CPython) and inside MicroPython
# (WebAssembly port): plain functions, plain assert, only pnpipsec + binascii/hashlib.

import binascii

from pnpipsec.crypto import aes, aes_pure, ed25519, hmac, sha512, x25519

H = binascii.unhexlify


def _hex(b):
    return binascii.hexlify(b).decode()


# ---- RFC 7748

def test_x25519_rfc7748_5_2_vector_1():
    k = H("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u = H("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    assert _hex(x25519.x25519(k, u)) == "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"


def test_x25519_rfc7748_5_2_vector_2():
    k = H("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d")
    u = H("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493")
    assert _hex(x25519.x25519(k, u)) == "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957"


def test_x25519_rfc7748_5_2_one_iteration():
    nine = b"\x09" + bytes(31)
    assert _hex(x25519.x25519(nine, nine)) == "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"


def test_x25519_rfc7748_6_1():
    a = H("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    b = H("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    pa = x25519.public(a)
    pb = x25519.public(b)
    assert _hex(pa) == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    assert _hex(pb) == "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert _hex(x25519.x25519(a, pb)) == shared
    assert _hex(x25519.x25519(b, pa)) == shared


def test_x25519_all_zero_raises():
    a = H("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    for u in (bytes(32), b"\x01" + bytes(31)):
        try:
            x25519.x25519(a, u)
        except x25519.X25519Error as e:
            assert isinstance(e, ValueError)
        else:
            assert False, "all-zero result accepted"


# ---- RFC 8032 section 7.1

ED_VECTORS = (
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
)


def _ed_vector(i):
    seed, pub, msg, sig = ED_VECTORS[i]
    seed = H(seed)
    msg = H(msg)
    assert _hex(ed25519.public_key(seed)) == pub
    assert _hex(ed25519.sign(seed, msg)) == sig
    assert ed25519.verify(H(pub), msg, H(sig)) is True


def test_ed25519_rfc8032_test_1():
    _ed_vector(0)


def test_ed25519_rfc8032_test_2():
    _ed_vector(1)


def test_ed25519_rfc8032_test_3():
    _ed_vector(2)


def test_ed25519_rejects_mutations():
    seed, pub, msg, sig = ED_VECTORS[2]
    pub = H(pub)
    msg = H(msg)
    sig = H(sig)
    for pos in (0, 31, 32, 63):
        bad = bytearray(sig)
        bad[pos] ^= 0x01
        assert ed25519.verify(pub, msg, bytes(bad)) is False
    bad = bytearray(pub)
    bad[5] ^= 0x10
    assert ed25519.verify(bytes(bad), msg, sig) is False
    assert ed25519.verify(pub, msg + b"\x00", sig) is False
    assert ed25519.verify(pub, msg, sig[:63]) is False
    assert ed25519.verify(pub[:31], msg, sig) is False
    # S >= L (S + L) must be rejected
    L = 2 ** 252 + 27742317777372353535851937790883648493
    s = int.from_bytes(sig[32:], "little") + L
    assert ed25519.verify(pub, msg, sig[:32] + s.to_bytes(32, "little")) is False
    # y >= p in the public key
    assert ed25519.verify(b"\xff" * 31 + b"\x7f", msg, sig) is False


# ---- RFC 4231 (HMAC-SHA-256)

def test_hmac_rfc4231_case_1():
    mac = hmac.hmac_sha256(b"\x0b" * 20, b"Hi There")
    assert _hex(mac) == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    assert hmac.hmac_sha256_pure(b"\x0b" * 20, b"Hi There") == mac


def test_hmac_rfc4231_case_2():
    mac = hmac.hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    assert _hex(mac) == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_hmac_rfc4231_case_6():
    mac = hmac.hmac_sha256(b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First")
    assert _hex(mac) == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"


def test_prf_plus_known_value():
    # Derived once on CPython with a reference prf+ written directly on the `cryptography`
    # package's HMAC (T1 = HMAC(K, S|0x01), Tn = HMAC(K, Tn-1|S|n)), with
    # K = bytes(range(32)), S = b"nonce-i" + b"nonce-r" + bytes(range(16)), length 100.
    key = bytes(range(32))
    seed = b"nonce-i" + b"nonce-r" + bytes(range(16))
    want = (
        "3143c7b2ec1fc6d3e1975a021591d22c6e81754df4a1f2979bd9f6009049eeb1"
        "71c6c70051b2eac8599c1775d979a9e4595f52e70ce6d27698c8499a1705fa53"
        "53df5afce9ee905f5dccf3f6bf09fa3730ae4d37aa70f657cfcfb6a854be2a88"
        "4b962f04"
    )
    assert _hex(hmac.prf_plus(key, seed, 100)) == want
    try:
        hmac.prf_plus(key, seed, 255 * 32 + 1)
    except ValueError:
        pass
    else:
        assert False, "prf+ longer than 255 * 32 accepted"


# ---- FIPS 180-4 SHA-512

def test_sha512_pure_abc():
    want = (
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
    )
    assert _hex(sha512.sha512_pure(b"abc")) == want
    assert _hex(sha512.sha512(b"abc")) == want


# ---- SP 800-38A (PureAES)

KEY128 = H("2b7e151628aed2a6abf7158809cf4f3c")
PLAIN = H(
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
)


def test_aes_sp800_38a_ecb():
    want = (
        "3ad77bb40d7a3660a89ecaf32466ef97f5d3d58503b9699de785895a96fdbaaf"
        "43b1cd7f598ece23881b00e3ed0306887b0c785e27e8ad3f8223207104725dd4"
    )
    assert _hex(aes_pure.PureAES().ecb_encrypt(KEY128, PLAIN)) == want


def test_aes_sp800_38a_cbc():
    iv = H("000102030405060708090a0b0c0d0e0f")
    want = (
        "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2"
        "73bed6b8e3c1743b7116e69e222295163ff1caa1681fac09120eca307586e1a7"
    )
    p = aes_pure.PureAES()
    assert _hex(p.cbc_encrypt(KEY128, iv, PLAIN)) == want
    assert p.cbc_decrypt(KEY128, iv, H(want)) == PLAIN


def test_aes_sp800_38a_ctr():
    ctr0 = H("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    want = (
        "874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff"
        "5ae4df3edbd5d35e5b4f09020db03eab1e031dda2fbe03d1792170a0f3009cee"
    )
    p = aes_pure.PureAES()
    assert _hex(aes.ctr(p, KEY128, ctr0, PLAIN)) == want
    assert aes.ctr(p, KEY128, ctr0, H(want)) == PLAIN


def test_aes_default_provider_works():
    # cryptolib on boards that have it, PureAES elsewhere: same answer
    p = aes.default_provider()
    want = "3ad77bb40d7a3660a89ecaf32466ef97"
    assert _hex(p.ecb_encrypt(KEY128, PLAIN[:16])) == want
