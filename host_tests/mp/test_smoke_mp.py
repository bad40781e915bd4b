"""Smoke tests for the MicroPython test harness itself (runs under MicroPython and CPython).

They check that the firmware package imports, that the level constants of DESIGN
section 4 hold, and that the standard modules the firmware relies on behave the same
on both interpreters.
"""

import binascii
import hashlib
import struct
import sys

import pnpipsec


def test_levels_are_ordered_ints():
    assert pnpipsec.CLEAR == 0
    assert pnpipsec.ENCRYPTED == 1
    assert pnpipsec.AUTHENTICATED == 2
    assert pnpipsec.AUTHORIZED == 3
    assert pnpipsec.CLEAR < pnpipsec.ENCRYPTED < pnpipsec.AUTHENTICATED < pnpipsec.AUTHORIZED
    assert pnpipsec.LEVEL_NAMES[pnpipsec.AUTHENTICATED] == "AUTHENTICATED"
    assert len(pnpipsec.LEVEL_NAMES) == 4


def test_struct_network_order():
    b = struct.pack("!HIQ", 0x1234, 0xDEADBEEF, 0x0102030405060708)
    assert b == binascii.unhexlify("1234deadbeef0102030405060708")
    assert struct.unpack("!HIQ", b) == (0x1234, 0xDEADBEEF, 0x0102030405060708)
    assert struct.calcsize("!BBH") == 4


def test_sha256_fips180_vector():
    # FIPS 180-4 example "abc"
    d = hashlib.sha256(b"abc").digest()
    assert binascii.hexlify(d) == (
        b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_sha256_incremental():
    h = hashlib.sha256()
    h.update(b"a" * 100)
    h.update(b"b" * 1000)
    assert h.digest() == hashlib.sha256(b"a" * 100 + b"b" * 1000).digest()


def test_big_int_bytes_roundtrip():
    p = 2**255 - 19
    b = p.to_bytes(32, "little")
    assert int.from_bytes(b, "little") == p
    assert pow(2, p - 2, p) * 2 % p == 1


def test_random_source():
    # os.urandom on CPython and boards; the virtual board supplies pnpwasm.urandom.
    try:
        import pnpwasm

        rand = pnpwasm.urandom
    except ImportError:
        import os

        if not hasattr(os, "urandom"):
            # MicroPython's qemu port (the MPS2 Cortex-M boards) has no RNG and so no
            # os.urandom; a board there gets rand() from its host relay. Any other port
            # without it is a failure.
            assert "mps2" in getattr(sys.implementation, "_machine", ""), "no os.urandom"
            return
        rand = os.urandom
    a = rand(32)
    b = rand(32)
    assert isinstance(a, bytes) and len(a) == 32
    assert a != b
    assert rand(0) == b""


def test_interpreter_identity():
    assert sys.implementation.name in ("micropython", "cpython")
    if sys.implementation.name == "micropython":
        assert sys.implementation.version[:2] >= (1, 27)
