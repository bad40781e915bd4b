"""On-board known-answer self-test, run by `pnp deploy` after copying the package.

    import pnpipsec.selftest as t; t.main()        # prints "selftest ok" or the failures

Vectors: X25519 RFC 7748 section 5.2 (first vector), HMAC-SHA-256 RFC 4231 test case 2,
SHA-512 FIPS 180-4 "abc", AES-128 FIPS-197 appendix C.1 (ECB) and SP 800-38A F.2.1
(first CBC block, both directions) through the board's AES provider: `aes_provider()`
of the board module when the board glue defines one, else
pnpipsec.crypto.aes.default_provider() (cryptolib on ESP32/RP2, else PureAES).
"""

from binascii import unhexlify as _h

try:
    from time import ticks_ms as _ms, ticks_diff as _diff
except ImportError:  # CPython
    from time import monotonic as _mono

    def _ms():
        return int(_mono() * 1000)

    def _diff(a, b):
        return a - b

_X_K = "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"
_X_U = "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c"
_X_R = "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"
_HMAC_R = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
_SHA512_ABC = ("ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
               "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")
_AES_K = "000102030405060708090a0b0c0d0e0f"
_AES_P = "00112233445566778899aabbccddeeff"
_AES_C = "69c4e0d86a7b0430d8cdb78070b4c55a"
_CBC_K = "2b7e151628aed2a6abf7158809cf4f3c"
_CBC_IV = "000102030405060708090a0b0c0d0e0f"
_CBC_P = "6bc1bee22e409f96e93d7e117393172a"
_CBC_C = "7649abac8119b246cee98e9b12e9197d"


def board_aes():
    """The board's AES provider and its class name."""
    aes = None
    try:
        import board
        f = getattr(board, "aes_provider", None)
        if f is not None:
            aes = f()
    except ImportError:
        pass    # no board glue on this port: the default provider is the board's
    except Exception as e:  # noqa: BLE001 - glue that cannot load here
        print("  (board.aes_provider unavailable: %s: %s)" % (e.__class__.__name__, e))
    if aes is None:
        from pnpipsec.crypto.aes import default_provider
        aes = default_provider()
    return aes, aes.__class__.__name__


def _x25519():
    from pnpipsec.crypto import x25519
    return x25519.x25519(_h(_X_K), _h(_X_U)) == _h(_X_R)


def _hmac():
    from pnpipsec.crypto.hmac import hmac_sha256
    return hmac_sha256(b"Jefe", b"what do ya want for nothing?") == _h(_HMAC_R)


def _sha512():
    from pnpipsec.crypto.sha512 import sha512
    return sha512(b"abc") == _h(_SHA512_ABC)


def _aes_checks(aes):
    def run():
        ok = aes.ecb_encrypt(_h(_AES_K), _h(_AES_P)) == _h(_AES_C)
        ok = ok and aes.cbc_encrypt(_h(_CBC_K), _h(_CBC_IV), _h(_CBC_P)) == _h(_CBC_C)
        return ok and aes.cbc_decrypt(_h(_CBC_K), _h(_CBC_IV), _h(_CBC_C)) == _h(_CBC_P)
    return run


def run(aes=None):
    """[(name, ok, ms, detail)] for every check; never raises for a failed check."""
    if aes is None:
        aes, aname = board_aes()
    else:
        aname = aes.__class__.__name__
    checks = (("x25519", _x25519), ("hmac-sha256", _hmac), ("sha512", _sha512),
              ("aes-" + aname, _aes_checks(aes)))
    out = []
    for name, fn in checks:
        t0 = _ms()
        detail = ""
        try:
            ok = bool(fn())
            if not ok:
                detail = "wrong answer"
        except Exception as e:  # noqa: BLE001 - a self-test reports, it does not crash
            ok = False
            detail = "%s: %s" % (e.__class__.__name__, e)
        out.append((name, ok, _diff(_ms(), t0), detail))
    return out


def main(aes=None):
    """Print one line per check and "selftest ok" (or "selftest FAILED: ..."); True if ok."""
    results = run(aes)
    bad = []
    for name, ok, ms, detail in results:
        print("  %-24s %s %6d ms%s" % (name, "ok  " if ok else "FAIL", ms, ("  " + detail) if detail else ""))
        if not ok:
            bad.append(name)
    if bad:
        print("selftest FAILED: " + ", ".join(bad))
        return False
    print("selftest ok")
    return True
