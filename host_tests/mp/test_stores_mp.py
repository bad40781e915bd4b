# Unusable identity and pin stores under MicroPython and CPython: the errors are typed
# (.path, .problem), name the problem ("truncated", "checksum", ...) and change nothing.
# Plain asserts; imports only pnpipsec and modules MicroPython has.

from pnpipsec import identity, pins
from pnpipsec.identity import IdentityError
from pnpipsec.pins import PinError, PinStore

K1 = bytes(range(32))


class MemStorage:
    def __init__(self, root=None):
        self.d = {}
        self.root = root

    def path(self, name):
        if self.root is None:
            raise ValueError("no paths here")
        return self.root + "/" + name

    def read(self, name):
        return self.d.get(name)

    def write(self, name, data):
        self.d[name] = bytes(data)


def _err(cls, fn, *args):
    try:
        fn(*args)
    except cls as e:
        return e
    raise AssertionError("no %s" % cls.__name__)


def _rand(n):
    return bytes(range(7, 7 + n))


def test_identity_problems_are_named():
    st = MemStorage("/flash/st")
    ident, created = identity.load_or_create(st, _rand)
    assert created
    good = st.d["identity"]
    assert len(good) == 106
    cases = [
        (good[:10], "truncated"), (good[:60], "truncated"), (good[:100], "truncated"),
        (b"", "empty"), (b"\x00" * 106, "unknown format"),
        (good.replace(b"v1", b"v2"), "unsupported version"),
        (good[:30] + b"z" + good[31:], "not hex"),
        (good[:30] + (b"1" if good[30:31] != b"1" else b"2") + good[31:], "checksum"),
        (good[:99] + (b"1" if good[99:100] != b"1" else b"2") + good[100:], "checksum"),
        (good + b"more\n", "trailing"),
    ]
    for bad, word in cases:
        st.d["identity"] = bad
        e = _err(IdentityError, identity.load_or_create, st, _rand)
        assert e.path == "/flash/st/identity", e.path
        assert word in e.problem, (word, e.problem)
        assert str(e) == "/flash/st/identity: " + e.problem
        assert st.d["identity"] == bad        # never replaced
    st.d["identity"] = good[:-1]              # only the final newline lost: still usable
    assert identity.load_or_create(st, _rand)[0].seed == ident.seed


def test_identity_error_without_paths():
    st = MemStorage()                         # a storage with no path(): the name stands in
    st.d["identity"] = b"pnpipsec identity v1\nseed 00"
    e = _err(IdentityError, identity.load_or_create, st, _rand)
    assert e.path == "identity" and "truncated" in e.problem
    e = _err(IdentityError, identity.public_from_pem, b"junk")
    assert e.path is None and str(e) == e.problem


def test_pin_problems_are_named():
    st = MemStorage("/flash/st")
    ps = PinStore(st)
    ps.observe(b"cam", K1, 0)
    good = st.d["pins"]
    body = good[:good.rfind(b"check ")]
    cases = [
        (good[:len(good) // 2], "truncated"), (good[:5], "truncated"), (good[:-5], "truncated"),
        (b"", "empty"), (b"\xff" * 50, "unknown format"),
        (good.replace(b"pins v1", b"pins v9"), "unsupported version"),
        (good[:20] + (b"1" if good[20:21] != b"1" else b"2") + good[21:], "checksum"),
        (body + b"zz yy t\n" + b"check " + pins._check(body + b"zz yy t\n") + b"\n", "line"),
    ]
    for bad, word in cases:
        st.d["pins"] = bad
        e = _err(PinError, PinStore, st)
        assert e.path == "/flash/st/pins", e.path
        assert word in e.problem, (word, e.problem)
        assert st.d["pins"] == bad
    # too large: checked on a 2-pin store, so the test needs no 17 KB block (on the qemu
    # Cortex-M3 board, once Ed25519's comb table is resident, the heap has no such block)
    st.d["pins"] = bad = b"pnpipsec pins v1\n" + b"0" * pins.max_size(2)
    e = _err(PinError, PinStore, st, "pins", 2)
    assert e.path == "/flash/st/pins" and "too large" in e.problem, e.problem
    assert st.d["pins"] == bad
    e = _err(PinError, PinStore(MemStorage(), limit=0).approve, b"x", K1)
    assert e.path is None                     # refused, but not about the file
