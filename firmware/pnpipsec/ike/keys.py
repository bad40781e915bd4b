"""IKEv2 key schedule (RFC 7296 sections 2.13, 2.14, 2.17, 2.18) for the device suite:
PRF_HMAC_SHA2_256, AES-CBC-128 (16-byte keys), HMAC-SHA2-256-128 (32-byte keys)."""

from pnpipsec.crypto.hmac import hmac_sha256, prf_plus

ENC_LEN = 16
INT_LEN = 32
PRF_LEN = 32


class IkeKeys:
    """SK_d, SK_ai, SK_ar, SK_ei, SK_er, SK_pi, SK_pr (and the SKEYSEED for logs).

    The keys are slices of one stored KEYMAT (fewer heap objects per IKE SA)."""

    def __init__(self, skeyseed, km):
        self.skeyseed = skeyseed
        self._km = km

    def __getattr__(self, name):
        # sk_d, sk_ai, sk_ar, sk_ei, sk_er, sk_pi, sk_pr: slices of KEYMAT
        names = ("sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr")
        if name in names:
            i = names.index(name)
            o = (0, 32, 64, 96, 112, 128, 160, 192)
            return self._km[o[i]:o[i + 1]]
        raise AttributeError(name)


def ike_keys(ni, nr, shared, spi_i, spi_r, old_sk_d=None):
    """SKEYSEED = prf(Ni | Nr, g^ir), or prf(SK_d_old, g^ir | Ni | Nr) for a rekey;
    then prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)."""
    if old_sk_d is None:
        skeyseed = hmac_sha256(ni + nr, shared)
    else:
        skeyseed = hmac_sha256(old_sk_d, shared + ni + nr)
    km = prf_plus(skeyseed, ni + nr + spi_i + spi_r, 3 * PRF_LEN + 2 * INT_LEN + 2 * ENC_LEN)
    return IkeKeys(skeyseed, km)


def child_keys(sk_d, ni, nr, shared=None):
    """KEYMAT = prf+(SK_d, [g^ir |] Ni | Nr) -> (enc_i2r, int_i2r, enc_r2i, int_r2i)."""
    seed = (shared + ni + nr) if shared else (ni + nr)
    km = prf_plus(sk_d, seed, 2 * (ENC_LEN + INT_LEN))
    a = ENC_LEN
    b = a + INT_LEN
    c = b + ENC_LEN
    return km[0:a], km[a:b], km[b:c], km[c:c + INT_LEN]
