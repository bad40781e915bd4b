"""ESP per-packet rows for `pnp bench`: seal/open against the bare AES-CBC + HMAC calls.

DESIGN section 12: ESP per-packet cost <= 1.25x the bare AES-CBC + HMAC calls it must
make. The baseline makes exactly those calls on the same sizes (IV and padding
included), with the same providers, so the ratio is our framing's overhead.
"""

from __future__ import annotations

import os


def _providers():
    from pnp_hostboard.crypto import CryptographyAES
    from pnpipsec.crypto.hmac import hmac_sha256
    return CryptographyAES(), hmac_sha256


def _sa(size):
    from pnpipsec import esp
    aes, _ = _providers()
    ek, ik = os.urandom(16), os.urandom(32)
    out = esp.EspOut(0x1234, ek, ik, aes, os.urandom)
    payload = os.urandom(size)
    return esp, aes, ek, ik, out, payload


def seal(size, time_callable, reps, target_s):
    esp, aes, ek, ik, out, payload = _sa(size)
    return time_callable(lambda: out.seal(payload, 17), reps, target_s)


def seal_bare(size, time_callable, reps, target_s):
    esp, aes, ek, ik, out, payload = _sa(size)
    _, hmac = _providers()
    body = payload + bytes(esp.sealed_len(size) - size - 8 - 16 - 16)   # pad + trailer
    header = b"\x00\x00\x12\x34\x00\x00\x00\x01"

    def fn():
        iv = os.urandom(16)
        ct = aes.cbc_encrypt(ek, iv, body)
        return hmac(ik, header + iv + ct)[:16]
    return time_callable(fn, reps, target_s)


def open_(size, time_callable, reps, target_s):
    """Opens a ring of distinct sealed packets (the replay window refuses repeats); a new
    inbound SA on each wrap costs one object per 2,000 packets."""
    esp, aes, ek, ik, out, payload = _sa(size)
    ring = [out.seal(payload, 17) for _ in range(2000)]
    state = {"i": len(ring), "inp": None}

    def fn():
        i = state["i"]
        if i == len(ring):
            state["inp"] = esp.EspIn(0x1234, ek, ik, aes)
            i = 0
        state["i"] = i + 1
        return state["inp"].open(ring[i])
    return time_callable(fn, reps, target_s)


def open_bare(size, time_callable, reps, target_s):
    esp, aes, ek, ik, out, payload = _sa(size)
    _, hmac = _providers()
    pkt = out.seal(payload, 17)

    def fn():
        mac = hmac(ik, pkt[:-16])[:16]
        if mac != pkt[-16:]:
            raise ValueError("bad ICV")
        return aes.cbc_decrypt(ek, pkt[8:24], pkt[24:-16])
    return time_callable(fn, reps, target_s)


def register(PROBES, ROWS, Row, time_callable, Measurement):
    def probe(fn, size):
        def run(ctx):
            try:
                return fn(size, time_callable, ctx.reps, ctx.target_s)
            except ImportError as e:
                return Measurement.na("missing: %s" % e)
        return run

    for size in (100, 1000):
        PROBES["esp_seal_%d/bare" % size] = ("bare AES-CBC + HMAC (cryptography)", probe(seal_bare, size))
        PROBES["esp_seal_%d/pnp" % size] = ("pnpipsec.esp EspOut.seal", probe(seal, size))
        PROBES["esp_open_%d/bare" % size] = ("bare HMAC check + AES-CBC (cryptography)", probe(open_bare, size))
        PROBES["esp_open_%d/pnp" % size] = ("pnpipsec.esp EspIn.open", probe(open_, size))
        ROWS.append(Row("ESP seal %d B" % size, "esp_seal_%d/bare" % size))
        ROWS.append(Row("ESP seal %d B" % size, "esp_seal_%d/pnp" % size, baseline="esp_seal_%d/bare" % size, budget=1.25))
        ROWS.append(Row("ESP open %d B" % size, "esp_open_%d/bare" % size))
        ROWS.append(Row("ESP open %d B" % size, "esp_open_%d/pnp" % size, baseline="esp_open_%d/bare" % size, budget=1.25))
