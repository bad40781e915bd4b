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


NATIVE_SCRIPT = """
import sys, gc, binascii
sys.path.insert(0, "/remote/lib")  # the deployed files, when mounted
gc.collect()
free = gc.mem_free()
from pnpipsec.crypto import fe25519, x25519
run = fe25519.kernel()
import pnpipsec.crypto._fe25519_native as nat
gc.collect()
print("ORIGIN", run is nat._run, nat.__file__, free - gc.mem_free())
H = binascii.unhexlify
X = lambda b: binascii.hexlify(b).decode()
print("V1", X(x25519.x25519(H("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"),
                            H("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c"))))
print("V2", X(x25519.x25519(H("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d"),
                            H("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493"))))
k = u = b"\\x09" + bytes(31)
for i in range(ITER):
    k, u = x25519.x25519(k, u), k
print("I1000", X(k), fe25519.kernel() is nat._run)
"""


def test_qemu_frozen_kernel_is_the_frozen_native_module():
    # the frozen firmware carries the viper code as native code (firmware/manifest.py,
    # native=True): kernel() is that module's _run (not compiled from _fe25519_src on
    # the board: that costs ~59 M instructions and ~21 KB of heap), frozen (its
    # __file__ has no directory of a file system), and RFC 7748 5.2 runs through it
    fw = _qemu()
    got = _native_run(fw, 1000)
    origin = got["ORIGIN"].split()
    assert origin[:2] == ["True", "pnpipsec/crypto/_fe25519_native.py"], got
    assert int(origin[2]) < 8000, got            # no ~21 KB of compiled code on the heap
    assert got.get("I1000") == "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51 True", got


def _native_run(fw, iterations, mount=None):
    out = mpports.run_qemu_script(fw, "ITER = %d\n" % iterations + NATIVE_SCRIPT, timeout=900, mount=mount)
    got = dict(ln.split(" ", 1) for ln in out.strip().splitlines() if ln[:2] in ("OR", "V1", "V2", "I1"))
    assert "ORIGIN" in got, out[-3000:]
    assert got.get("V1") == "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552", out
    assert got.get("V2") == "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957", out
    return got


def test_qemu_deployed_native_mpy(tmp_path):
    # pnp deploy --native-arch armv7m: the package as .mpy plus the viper code compiled
    # by mpy-cross -march=armv7m, loaded from the (mounted) file system by the plain
    # firmware (nothing of pnpipsec frozen): kernel() takes the native module
    import sys

    sys.path.insert(0, os.path.join(REPO, "tools"))
    from pnp import deploy

    fw = mpports.qemu_firmware()
    if fw is None or mpports.qemu_system() is None:
        missing("plain qemu firmware or qemu-system-arm missing (scripts/build-micropython.sh)")
    try:
        deploy.mpy_cross_cmd()
    except deploy.DeployError as e:
        missing(str(e))
    items, _dirs = deploy.make_plan("qemu")
    items.append(deploy.Item(deploy.native_source(str(tmp_path / "gen")), "/lib/pnpipsec/crypto/_fe25519_native.mpy",
                             True, "armv7m"))
    deploy.build(items, str(tmp_path / "b"), log=lambda m: None)
    with open(items[-1].local, "rb") as f:
        assert f.read(4)[2] >> 2 == 5                # mpy header: native arch armv7m
    got = _native_run(fw, 1, mount=str(tmp_path / "b"))
    assert got["ORIGIN"].split()[:2] == ["True", "/remote/lib/pnpipsec/crypto/_fe25519_native.mpy"], got
