"""Our SA proposals and the choice among a peer's (RFC 7296 section 3.3): one suite,
AES-CBC-128 / HMAC-SHA2-256(-128) / PRF-HMAC-SHA2-256 / Curve25519 (group 31)."""

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_AUTH_HMAC_SHA2_256_128 = const(12)
_DH_CURVE25519 = const(31)
_ENCR_AES_CBC = const(12)
_ESN_NO = const(0)
_PRF_HMAC_SHA2_256 = const(5)
_PROTO_ESP = const(3)
_PROTO_IKE = const(1)
_T_DH = const(4)
_T_ENCR = const(1)
_T_ESN = const(5)
_T_INTEG = const(3)
_T_PRF = const(2)

IKE_SUITE = [(_T_ENCR, _ENCR_AES_CBC, 128), (_T_PRF, _PRF_HMAC_SHA2_256, None),
             (_T_INTEG, _AUTH_HMAC_SHA2_256_128, None), (_T_DH, _DH_CURVE25519, None)]
ESP_SUITE = [(_T_ENCR, _ENCR_AES_CBC, 128), (_T_INTEG, _AUTH_HMAC_SHA2_256_128, None),
             (_T_ESN, _ESN_NO, None)]
T_DH31 = (_T_DH, _DH_CURVE25519, None)


def select(props, proto, spisz, dh):
    """First acceptable proposal -> (num, spi, [transforms]) or None.
    dh: "require" (must offer group 31), "none" (no DH or NONE), "ignore"."""
    for num, p, spi, trs in props:
        if p != proto or len(spi) != spisz:
            continue
        if spisz == 4 and int.from_bytes(spi, "big") < 256:
            continue            # ESP SPIs 0-255 are reserved (RFC 4303 section 2.1)
        types = {}
        bad = False
        for t in trs:
            if t[0] < 1 or t[0] > 5:
                bad = True
            types.setdefault(t[0], []).append(t)
        if bad:
            continue
        pick = []
        want = [(_T_ENCR, (_T_ENCR, _ENCR_AES_CBC, 128))]
        if proto == _PROTO_IKE:
            want.append((_T_PRF, (_T_PRF, _PRF_HMAC_SHA2_256, None)))
        want.append((_T_INTEG, (_T_INTEG, _AUTH_HMAC_SHA2_256_128, None)))
        ok = True
        for ttype, need in want:
            if need not in types.get(ttype, ()):
                ok = False
            pick.append(need)
        if proto == _PROTO_ESP and _T_ESN in types:
            if (_T_ESN, 0, None) not in types[_T_ESN]:
                ok = False
            pick.append((_T_ESN, 0, None))
        if proto == _PROTO_IKE and _T_ESN in types:
            ok = False
        if proto == _PROTO_ESP and _T_PRF in types:
            ok = False
        dhs = types.get(_T_DH, ())
        if dh == "require":
            if T_DH31 not in dhs:
                ok = False
            pick.append(T_DH31)
        elif dh == "none":
            if dhs and (_T_DH, 0, None) not in dhs:
                ok = False
        if ok:
            return num, spi, pick
    return None
