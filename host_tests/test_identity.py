"""Identity store: made once, survives restarts, never replaced, corrupt store left intact."""

import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pnp_hostboard.storage import DirStorage
from pnpipsec import identity


def test_first_boot_creates_and_restart_keeps(tmp_path):
    st = DirStorage(str(tmp_path))
    a, created = identity.load_or_create(st, os.urandom)
    assert created
    b, created2 = identity.load_or_create(DirStorage(str(tmp_path)), os.urandom)
    assert not created2
    assert (a.seed, a.public, a.fingerprint) == (b.seed, b.public, b.fingerprint)


def test_public_key_matches_cryptography(tmp_path):
    ident, _ = identity.load_or_create(DirStorage(str(tmp_path)), os.urandom)
    oracle = Ed25519PrivateKey.from_private_bytes(ident.seed).public_key()
    assert oracle.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == ident.public


def test_pem_is_spki_that_cryptography_loads(tmp_path):
    ident, _ = identity.load_or_create(DirStorage(str(tmp_path)), os.urandom)
    pem = identity.spki_pem(ident.public)
    key = serialization.load_pem_public_key(pem)
    assert key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == ident.public
    assert identity.public_from_pem(pem) == ident.public
    # And a PEM written by cryptography (as `pki --pub` writes) parses back.
    other = Ed25519PrivateKey.generate().public_key()
    pem2 = other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert identity.public_from_pem(pem2) == other.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.mark.parametrize("damage", [
    lambda b: b[:-10],                                  # truncated
    lambda b: b.replace(b"seed ", b"sead "),            # mangled line
    lambda b: b[:30] + bytes([b[30] ^ 1]) + b[31:],     # one bit flipped in the seed hex
    lambda b: b"",                                      # emptied
    lambda b: b"\xff" * len(b),                         # garbage
])
def test_corrupt_store_is_an_error_and_left_intact(tmp_path, damage):
    st = DirStorage(str(tmp_path))
    identity.load_or_create(st, os.urandom)
    path = st.path(identity.FILE)
    bad = damage(open(path, "rb").read())
    open(path, "wb").write(bad)
    with pytest.raises(identity.IdentityError):
        identity.load_or_create(st, os.urandom)
    assert open(path, "rb").read() == bad   # nothing replaced the user's data


def test_fingerprint_shape_and_spread():
    fps = {identity.fingerprint(os.urandom(32)) for _ in range(200)}
    assert len(fps) == 200
    for fp in fps:
        parts = fp.split("-")
        assert [len(p) for p in parts] == [4, 4, 4, 4]
        assert set("".join(parts)) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def test_pem_rejects_non_ed25519():
    from cryptography.hazmat.primitives.asymmetric import ec
    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(identity.IdentityError):
        identity.public_from_pem(pem)
