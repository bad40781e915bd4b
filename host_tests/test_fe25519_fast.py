"""The viper fast path of X25519/Ed25519 (pnpipsec.crypto.fe25519) on real MicroPython
ports with native emitters: the unix port (x64) and the qemu Cortex-M3 board (armv7m).

CPython and the WebAssembly port keep the plain path: host_tests/mp/test_fe25519_mp.py
checks there that kernel() is None, and test_crypto_vectors / test_crypto_differential /
test_micropython cover that path as before. Here the same RFC 7748 / RFC 8032 vectors and
a differential test against the `cryptography` package run through the fast path.
"""

import json
import os
import subprocess

import pytest

from . import mpports
from .conftest import REPO, missing

FIRMWARE = os.path.join(REPO, "firmware")
MP_DIR = os.path.join(REPO, "host_tests", "mp")
MP_MODULES = ("test_fe25519_mp", "test_crypto_mp")


def test_generated_source_is_current():
    from pnpipsec.crypto import _fe25519_src, fe25519

    assert _fe25519_src.SRC == fe25519.source(), (
        "regenerate firmware/pnpipsec/crypto/_fe25519_src.py from fe25519.source()")


def test_kernel_is_none_on_cpython():
    from pnpipsec.crypto import fe25519

    assert fe25519.kernel() is None


def _unix():
    exe = mpports.unix_binary()
    if exe is None:
        missing("MicroPython unix port not built (scripts/build-micropython.sh)")
    return exe


def _run_unix(code, timeout=300):
    p = subprocess.run([_unix(), "-c", code], capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def test_unix_port_has_the_fast_path():
    out = _run_unix("import sys\nsys.path.insert(0, %r)\nfrom pnpipsec.crypto import fe25519\n"
                    "print(fe25519.kernel() is not None)" % FIRMWARE)
    assert out.strip() == "True"


@pytest.mark.parametrize("module", MP_MODULES)
def test_unix_port_vectors(module):
    # host_tests/mp runner under the unix port: RFC 7748 / RFC 8032 vectors, the
    # fast path against the big-integer path, field ops at the limb bounds
    p = subprocess.run([_unix(), os.path.join(MP_DIR, "runner.py"), module],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    last = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    assert p.returncode == 0 and last.endswith(" 0 failed"), p.stdout[-4000:] + p.stderr[-2000:]


def _cases(n):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    raw = serialization.Encoding.Raw
    xs = []
    eds = []
    for i in range(n):
        k = os.urandom(32)
        u = os.urandom(32)
        if i % 3 == 0:
            # a real public key: the common case in IKE
            u = X25519PrivateKey.generate().public_key().public_bytes(raw, serialization.PublicFormat.Raw)
        try:
            out = X25519PrivateKey.from_private_bytes(k).exchange(X25519PublicKey.from_public_bytes(u)).hex()
        except ValueError:
            out = None  # all-zero result: ours must raise
        xs.append((k.hex(), u.hex(), out))
        seed = os.urandom(32)
        msg = os.urandom(i * 7 % 300)
        sk = Ed25519PrivateKey.from_private_bytes(seed)
        pub = sk.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
        eds.append((seed.hex(), msg.hex(), pub.hex(), sk.sign(msg).hex()))
    return xs, eds


DIFF_SCRIPT = """
import binascii, json
from pnpipsec.crypto import fe25519, x25519, ed25519
H = binascii.unhexlify
X = binascii.hexlify
assert fe25519.kernel() is not None
XS, EDS = json.loads(%r)
bad = []
for k, u, out in XS:
    try:
        r = X(x25519.x25519(H(k), H(u))).decode()
    except x25519.X25519Error:
        r = None
    if r != out:
        bad.append(["x25519", k, u, out, r])
for seed, msg, pub, sig in EDS:
    if X(ed25519.public_key(H(seed))).decode() != pub:
        bad.append(["public", seed])
    if X(ed25519.sign(H(seed), H(msg))).decode() != sig:
        bad.append(["sign", seed, msg])
    if not ed25519.verify(H(pub), H(msg), H(sig)):
        bad.append(["verify", seed, msg])
    s = bytearray(H(sig))
    s[5] ^= 4
    if ed25519.verify(H(pub), H(msg), bytes(s)):
        bad.append(["verify-forged", seed, msg])
print("RESULT", json.dumps(bad))
"""


def test_unix_port_differential_vs_openssl():
    xs, eds = _cases(40)
    code = "import sys\nsys.path.insert(0, %r)\n" % FIRMWARE + DIFF_SCRIPT % json.dumps([xs, eds])
    out = _run_unix(code)
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert line and json.loads(line[-1][7:]) == [], out[-3000:]


def _qemu():
    fw = mpports.qemu_firmware(frozen=True)
    if fw is None:
        missing("qemu firmware with pnpipsec frozen not built (scripts/build-micropython.sh)")
    if mpports.qemu_system() is None:
        missing("qemu-system-arm not installed")
    return fw


def _qemu_module_script(module):
    with open(os.path.join(MP_DIR, module + ".py")) as f:
        src = f.read()
    return src + (
        "\n_n = 0\nfor _name in sorted(globals()):\n"
        "    if _name.startswith('test_'):\n"
        "        globals()[_name]()\n"
        "        _n += 1\n"
        "print('QEMU-OK', _n)\n")


@pytest.mark.parametrize("module", MP_MODULES)
def test_qemu_cortex_m3_vectors(module):
    fw = _qemu()
    out = mpports.run_qemu_script(fw, _qemu_module_script(module), timeout=900)
    assert "QEMU-OK" in out, out[-3000:]


def test_qemu_cortex_m3_differential_vs_openssl():
    fw = _qemu()
    xs, eds = _cases(6)
    out = mpports.run_qemu_script(fw, DIFF_SCRIPT % json.dumps([xs, eds]), timeout=900)
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert line and json.loads(line[-1][7:]) == [], out[-3000:]
