"""Published test vectors for pnpipsec.crypto (pure Python) and the host board's
OpenSSL-backed stand-ins: RFC 7748, RFC 8032, RFC 4231, FIPS 180-4, SP 800-38A."""

import hashlib
import time

import pytest

from pnpipsec.crypto import aes, aes_pure, ed25519, hmac as phmac, sha512, x25519
from pnp_hostboard import crypto as hostcrypto

H = bytes.fromhex

X25519_IMPLS = [
    pytest.param(x25519, id="pure"),
    pytest.param(hostcrypto.fast_x25519, id="openssl"),
]
ED25519_IMPLS = [
    pytest.param(ed25519, id="pure"),
    pytest.param(hostcrypto.fast_ed25519, id="openssl"),
]


def _aes_providers():
    out = [pytest.param(aes_pure.PureAES(), id="PureAES"), pytest.param(hostcrypto.CryptographyAES(), id="CryptographyAES")]
    if aes._cryptolib is not None:
        out.append(pytest.param(aes.CryptolibAES(), id="CryptolibAES"))
    # CPython has no cryptolib: test_cryptolib_provider_with_fake_module runs these same
    # vectors through CryptolibAES over a one-way, stateful stand-in for cryptolib.aes.
    return out


AES_PROVIDERS = _aes_providers()

# ---------------------------------------------------------------- RFC 7748

RFC7748_5_2 = [
    (
        "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
        "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
        "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
    ),
    (
        # u as printed in the RFC: top bit set (0x93), which X25519 must mask
        "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
        "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
        "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
    ),
]


@pytest.mark.parametrize("impl", X25519_IMPLS)
@pytest.mark.parametrize("k,u,out", RFC7748_5_2)
def test_rfc7748_5_2(impl, k, u, out):
    assert impl.x25519(H(k), H(u)) == H(out)


def _iterate(impl, n):
    k = u = (9).to_bytes(32, "little")
    for _ in range(n):
        k, u = impl.x25519(k, u), k
    return k


@pytest.mark.parametrize("impl", X25519_IMPLS)
def test_rfc7748_5_2_iterated_1(impl):
    assert _iterate(impl, 1) == H("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079")


@pytest.mark.parametrize("impl", X25519_IMPLS)
def test_rfc7748_5_2_iterated_1000(impl):
    # slow-ish (about 1.2 s for the pure module on CPython) but always run
    assert _iterate(impl, 1000) == H("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51")


ALICE_PRIV = H("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUB = H("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_PRIV = H("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUB = H("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
SHARED = H("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")


@pytest.mark.parametrize("impl", X25519_IMPLS)
def test_rfc7748_6_1(impl):
    assert impl.public(ALICE_PRIV) == ALICE_PUB
    assert impl.public(BOB_PRIV) == BOB_PUB
    assert impl.x25519(ALICE_PRIV, BOB_PUB) == SHARED
    assert impl.x25519(BOB_PRIV, ALICE_PUB) == SHARED


@pytest.mark.parametrize("impl", X25519_IMPLS)
def test_rfc7748_keypair(impl):
    priv, pub = impl.keypair(lambda n: ALICE_PRIV[:n])
    assert priv == ALICE_PRIV and pub == ALICE_PUB


@pytest.mark.parametrize("impl", X25519_IMPLS)
@pytest.mark.parametrize(
    "u",
    [
        bytes(32),  # u = 0
        (1).to_bytes(32, "little"),  # u = 1 (order 4)
        # order-8 point (Curve25519 low-order list) and p (= 0 mod p), p + 1 (= 1)
        H("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
        H("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),  # order 8
        ((1 << 255) - 20).to_bytes(32, "little"),  # p - 1 (order 2)
        ((1 << 255) - 19).to_bytes(32, "little"),
        ((1 << 255) - 18).to_bytes(32, "little"),
    ],
)
def test_x25519_all_zero_raises(impl, u):
    with pytest.raises(x25519.X25519Error):
        impl.x25519(ALICE_PRIV, u)
    assert issubclass(x25519.X25519Error, ValueError)


def test_x25519_bad_lengths():
    with pytest.raises(ValueError):
        x25519.x25519(bytes(31), bytes(32))
    with pytest.raises(ValueError):
        x25519.x25519(bytes(32), bytes(33))


# ---------------------------------------------------------------- RFC 8032

RFC8032_TEST_1024_MSG = (
    "08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98fa6e264bf09efe12ee50f8f54e9f77b1"
    "e355f6c50544e23fb1433ddf73be84d879de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b270b20329d"
    "658675fc6ea534e0810a4432826bf58c941efb65d57a338bbd2e26640f89ffbc1a858efcb8550ee3a5e1998bd177e93a"
    "7363c344fe6b199ee5d02e82d522c4feba15452f80288a821a579116ec6dad2b3b310da903401aa62100ab5d1a36553e"
    "06203b33890cc9b832f79ef80560ccb9a39ce767967ed628c6ad573cb116dbefefd75499da96bd68a8a97b928a8bbc10"
    "3b6621fcde2beca1231d206be6cd9ec7aff6f6c94fcd7204ed3455c68c83f4a41da4af2b74ef5c53f1d8ac70bdcb7ed1"
    "85ce81bd84359d44254d95629e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2d17ba70eb6248e594e1a2297acbbb39d"
    "502f1a8c6eb6f1ce22b3de1a1f40cc24554119a831a9aad6079cad88425de6bde1a9187ebb6092cf67bf2b13fd65f270"
    "88d78b7e883c8759d2c4f5c65adb7553878ad575f9fad878e80a0c9ba63bcbcc2732e69485bbc9c90bfbd62481d9089b"
    "eccf80cfe2df16a2cf65bd92dd597b0707e0917af48bbb75fed413d238f5555a7a569d80c3414a8d0859dc65a46128ba"
    "b27af87a71314f318c782b23ebfe808b82b0ce26401d2e22f04d83d1255dc51addd3b75a2b1ae0784504df543af8969b"
    "e3ea7082ff7fc9888c144da2af58429ec96031dbcad3dad9af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb7"
    "51fb73e666c6c655ade8297297d07ad1ba5e43f1bca32301651339e22904cc8c42f58c30c04aafdb038dda0847dd988d"
    "cda6f3bfd15c4b4c4525004aa06eeff8ca61783aacec57fb3d1f92b0fe2fd1a85f6724517b65e614ad6808d6f6ee34df"
    "f7310fdc82aebfd904b01e1dc54b2927094b2db68d6f903b68401adebf5a7e08d78ff4ef5d63653a65040cf9bfd4aca7"
    "984a74d37145986780fc0b16ac451649de6188a7dbdf191f64b5fc5e2ab47b57f7f7276cd419c17a3ca8e1b939ae49e4"
    "88acba6b965610b5480109c8b17b80e1b7b750dfc7598d5d5011fd2dcc5600a32ef5b52a1ecc820e308aa342721aac09"
    "43bf6686b64b2579376504ccc493d97e6aed3fb0f9cd71a43dd497f01f17c0e2cb3797aa2a2f256656168e6c496afc5f"
    "b93246f6b1116398a346f1a641f3b041e989f7914f90cc2c7fff357876e506b50d334ba77c225bc307ba537152f3f161"
    "0e4eafe595f6d9d90d11faa933a15ef1369546868a7f3a45a96768d40fd9d03412c091c6315cf4fde7cb68606937380d"
    "b2eaaa707b4c4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86aba41c0618983f8741c5ef68d3a101e8a3b8ca"
    "c60c905c15fc910840b94c00a0b9d0"
)

RFC8032_7_1 = [
    pytest.param(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        id="TEST1",
    ),
    pytest.param(
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        id="TEST2",
    ),
    pytest.param(
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        id="TEST3",
    ),
    pytest.param(
        "f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
        "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e",
        RFC8032_TEST_1024_MSG,
        "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350aa5371b1508f9f4528ecea23c436d94b5e8fcd4f681e30a6ac00a9704a188a03",
        id="TEST1024",
    ),
    pytest.param(
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        # SHA-512("abc")
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
        id="SHA(abc)",
    ),
]


def test_rfc8032_test_1024_length():
    assert len(H(RFC8032_TEST_1024_MSG)) == 1023


@pytest.mark.parametrize("impl", ED25519_IMPLS)
@pytest.mark.parametrize("seed,pub,msg,sig", RFC8032_7_1)
def test_rfc8032_7_1(impl, seed, pub, msg, sig):
    seed, pub, msg, sig = H(seed), H(pub), H(msg), H(sig)
    assert impl.public_key(seed) == pub
    assert impl.sign(seed, msg) == sig
    assert impl.verify(pub, msg, sig) is True
    assert impl.verify(pub, msg + b"\x00", sig) is False


def test_rfc8032_sha_abc_message_is_sha512_abc():
    assert sha512.sha512_pure(b"abc") == H(RFC8032_7_1[4].values[2])


# Hostile inputs for verify: it must return False, never raise.
_T1 = RFC8032_7_1[0].values
_PUB1, _SIG1 = H(_T1[1]), H(_T1[3])
_L = 2**252 + 27742317777372353535851937790883648493
_P = 2**255 - 19


@pytest.mark.parametrize("impl", ED25519_IMPLS)
def test_ed25519_verify_rejects_hostile(impl):
    r, s = _SIG1[:32], int.from_bytes(_SIG1[32:], "little")
    cases = [
        (_PUB1, b"", _SIG1[:63]),
        (_PUB1, b"", _SIG1 + b"\x00"),
        (_PUB1[:31], b"", _SIG1),
        (b"", b"", b""),
        (_PUB1, b"", r + (s + _L).to_bytes(32, "little")),  # non-canonical S (S + L)
        (_PUB1, b"", r + _L.to_bytes(32, "little")),  # S = L
        (_PUB1, b"", r + b"\xff" * 32),
        (b"\xff" * 32, b"", _SIG1),
        (bytes(32), b"", _SIG1),
    ]
    for pub, msg, sig in cases:
        assert impl.verify(pub, msg, sig) is False


def test_ed25519_verify_rejects_noncanonical_y():
    # y = p + y0 for a small valid y0 (here y = 1: the identity, x = 0): encodings with
    # y >= p are rejected by RFC 8032 5.1.3 decoding
    for y in range(_P, (1 << 255)):
        enc = y.to_bytes(32, "little")
        assert ed25519._decode(enc) is None
        assert ed25519.verify(enc, b"", _SIG1) is False
    assert ed25519._decode((1).to_bytes(32, "little")) is not None


def test_ed25519_verify_rejects_point_not_on_curve():
    # y = 2: (y^2 - 1) / (d y^2 + 1) is not a square mod p
    enc = (2).to_bytes(32, "little")
    assert ed25519._decode(enc) is None
    assert ed25519.verify(enc, b"", _SIG1) is False


def test_ed25519_verify_wrong_types_never_raise():
    assert ed25519.verify(None, b"", _SIG1) is False
    assert ed25519.verify(_PUB1, None, _SIG1) is False
    assert ed25519.verify(_PUB1, b"", 12345) is False


# ---------------------------------------------------------------- RFC 4231

RFC4231 = [
    pytest.param("0b" * 20, b"Hi There".hex(), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7", id="1"),
    pytest.param(
        b"Jefe".hex(),
        b"what do ya want for nothing?".hex(),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        id="2",
    ),
    pytest.param("aa" * 20, "dd" * 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe", id="3"),
    pytest.param(
        "0102030405060708090a0b0c0d0e0f10111213141516171819",
        "cd" * 50,
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
        id="4",
    ),
    # case 5: output truncated to 128 bits
    pytest.param("0c" * 20, b"Test With Truncation".hex(), "a3b6167473100ee06e0c796c2955552b", id="5"),
    pytest.param(
        "aa" * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First".hex(),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        id="6",
    ),
    pytest.param(
        "aa" * 131,
        b"This is a test using a larger than block-size key and a larger than block-size data. "
        b"The key needs to be hashed before being used by the HMAC algorithm.".hex(),
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
        id="7",
    ),
]


@pytest.mark.parametrize("fn", [phmac.hmac_sha256, phmac.hmac_sha256_pure], ids=["default", "pure"])
@pytest.mark.parametrize("key,data,mac", RFC4231)
def test_rfc4231(fn, key, data, mac):
    mac = H(mac)
    assert fn(H(key), H(data))[: len(mac)] == mac


def test_hmac_default_is_stdlib_on_cpython():
    assert phmac.hmac_sha256.__name__ == "hmac_sha256_stdlib"


def test_prf_plus_structure():
    # RFC 7296 2.13 by hand from the HMAC vectors: T1 = prf(K, S|1), T2 = prf(K, T1|S|2)
    key, seed = b"Jefe", b"seed"
    t1 = phmac.hmac_sha256(key, seed + b"\x01")
    t2 = phmac.hmac_sha256(key, t1 + seed + b"\x02")
    assert phmac.prf_plus(key, seed, 64) == t1 + t2
    assert phmac.prf_plus(key, seed, 40) == (t1 + t2)[:40]
    assert phmac.prf_plus(key, seed, 0) == b""
    assert len(phmac.prf_plus(key, seed, 255 * 32)) == 255 * 32
    with pytest.raises(ValueError):
        phmac.prf_plus(key, seed, 255 * 32 + 1)


# ---------------------------------------------------------------- FIPS 180-4 SHA-512

SHA512_ABC = "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
SHA512_896 = "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909"
SHA512_MILLION_A = "e718483d0ce769644e2e42c7bc15b4638e1f98b13b2044285632a803afa973ebde0ff244877ea60a4cb0432ce577c31beb009c5c2c49aa2e4eadb217ad8cc09b"
MSG_896 = b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"


@pytest.mark.parametrize("fn", [sha512.sha512, sha512.sha512_pure], ids=["default", "pure"])
def test_fips180_sha512(fn):
    assert len(MSG_896) == 112
    assert fn(b"abc") == H(SHA512_ABC)
    assert fn(MSG_896) == H(SHA512_896)
    assert fn(b"") == hashlib.sha512(b"").digest()


def test_fips180_sha512_million_a():
    assert sha512.sha512(b"a" * 1000000) == H(SHA512_MILLION_A)
    t = time.time()
    # the pure version: 7813 blocks; skipped if this machine is too slow for it
    first = sha512.sha512_pure(b"a" * 128 * 200)
    est = (time.time() - t) * 1000000 / (128 * 200)
    assert first == hashlib.sha512(b"a" * 128 * 200).digest()
    if est > 10:
        pytest.skip("sha512_pure over 10^6 bytes would take about %.0f s" % est)
    assert sha512.sha512_pure(b"a" * 1000000) == H(SHA512_MILLION_A)


# ---------------------------------------------------------------- SP 800-38A

KEY128 = H("2b7e151628aed2a6abf7158809cf4f3c")
PLAIN = H(
    "6bc1bee22e409f96e93d7e117393172a"
    "ae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52ef"
    "f69f2445df4f9b17ad2b417be66c3710"
)
ECB128 = H(
    "3ad77bb40d7a3660a89ecaf32466ef97"
    "f5d3d58503b9699de785895a96fdbaaf"
    "43b1cd7f598ece23881b00e3ed030688"
    "7b0c785e27e8ad3f8223207104725dd4"
)
CBC_IV = H("000102030405060708090a0b0c0d0e0f")
CBC128 = H(
    "7649abac8119b246cee98e9b12e9197d"
    "5086cb9b507219ee95db113a917678b2"
    "73bed6b8e3c1743b7116e69e22229516"
    "3ff1caa1681fac09120eca307586e1a7"
)
CTR_IV = H("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
CTR128 = H(
    "874d6191b620e3261bef6864990db6ce"
    "9806f66b7970fdff8617187bb9fffdff"
    "5ae4df3edbd5d35e5b4f09020db03eab"
    "1e031dda2fbe03d1792170a0f3009cee"
)


@pytest.mark.parametrize("prov", AES_PROVIDERS)
def test_sp800_38a_f_1_1_ecb_aes128(prov):
    assert prov.ecb_encrypt(KEY128, PLAIN) == ECB128
    assert prov.ecb_encrypt(KEY128, PLAIN[:16]) == ECB128[:16]


@pytest.mark.parametrize("prov", AES_PROVIDERS)
def test_sp800_38a_f_2_1_cbc_aes128_encrypt(prov):
    assert prov.cbc_encrypt(KEY128, CBC_IV, PLAIN) == CBC128


@pytest.mark.parametrize("prov", AES_PROVIDERS)
def test_sp800_38a_f_2_2_cbc_aes128_decrypt(prov):
    assert prov.cbc_decrypt(KEY128, CBC_IV, CBC128) == PLAIN


@pytest.mark.parametrize("prov", AES_PROVIDERS)
def test_sp800_38a_f_5_1_ctr_aes128(prov):
    assert aes.ctr(prov, KEY128, CTR_IV, PLAIN) == CTR128
    assert aes.ctr(prov, KEY128, CTR_IV, CTR128) == PLAIN  # F.5.2
    assert aes.ctr(prov, KEY128, CTR_IV, PLAIN[:37]) == CTR128[:37]


@pytest.mark.parametrize("prov", AES_PROVIDERS)
def test_aes_validation(prov):
    for bad_key in (b"", bytes(15), bytes(17), bytes(33)):
        with pytest.raises(ValueError):
            prov.ecb_encrypt(bad_key, bytes(16))
        with pytest.raises(ValueError):
            prov.cbc_encrypt(bad_key, bytes(16), bytes(16))
    for bad_len in (1, 15, 17, 33):
        with pytest.raises(ValueError):
            prov.ecb_encrypt(KEY128, bytes(bad_len))
        with pytest.raises(ValueError):
            prov.cbc_encrypt(KEY128, bytes(16), bytes(bad_len))
        with pytest.raises(ValueError):
            prov.cbc_decrypt(KEY128, bytes(16), bytes(bad_len))
    with pytest.raises(ValueError):
        prov.cbc_encrypt(KEY128, bytes(15), bytes(16))
    with pytest.raises(ValueError):
        aes.ctr(prov, KEY128, bytes(15), b"x")
    assert prov.ecb_encrypt(KEY128, b"") == b""


def test_default_provider_on_cpython_is_pure():
    assert isinstance(aes.default_provider(), aes_pure.PureAES)


def test_cryptolib_absent_on_cpython_raises():
    if aes._cryptolib is None:
        with pytest.raises(ImportError):
            aes.CryptolibAES()


class _FakeCryptolibAES:
    """Stands in for MicroPython's cryptolib.aes: one object, one direction, CBC state
    carried between calls (so reusing an object across calls would give wrong bytes)."""

    made = 0

    def __init__(self, key, mode, iv=None):
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        assert mode in (1, 2)
        _FakeCryptolibAES.made += 1
        m = modes.ECB() if mode == 1 else modes.CBC(iv)
        self._c = Cipher(algorithms.AES(key), m)
        self._dir = None
        self._ctx = None

    def _use(self, d):
        assert self._dir in (None, d), "cryptolib objects are one-way"
        if self._dir is None:
            self._dir = d
            self._ctx = self._c.encryptor() if d == "e" else self._c.decryptor()
        return self._ctx

    def encrypt(self, data):
        return self._use("e").update(data)

    def decrypt(self, data):
        return self._use("d").update(data)


def test_cryptolib_provider_with_fake_module(monkeypatch):
    import importlib.util
    import sys
    import types

    fake = types.ModuleType("cryptolib")
    fake.aes = _FakeCryptolibAES
    monkeypatch.setitem(sys.modules, "cryptolib", fake)
    spec = importlib.util.spec_from_file_location("_aes_with_fake_cryptolib", aes.__file__)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod._cryptolib is fake
    prov = mod.default_provider()
    assert type(prov).__name__ == "CryptolibAES"
    before = _FakeCryptolibAES.made
    for _ in range(2):  # twice: a fresh cipher object per call
        assert prov.ecb_encrypt(KEY128, PLAIN) == ECB128
        assert prov.cbc_encrypt(KEY128, CBC_IV, PLAIN) == CBC128
        assert prov.cbc_decrypt(KEY128, CBC_IV, CBC128) == PLAIN
        assert mod.ctr(prov, KEY128, CTR_IV, PLAIN) == CTR128
    assert _FakeCryptolibAES.made - before == 8
    with pytest.raises(ValueError):
        prov.ecb_encrypt(bytes(15), bytes(16))
