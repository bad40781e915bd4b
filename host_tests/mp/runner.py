"""Tiny test runner for host_tests/mp: runs under MicroPython and CPython.

    python host_tests/mp/runner.py [-v] [test_module ...]      (CPython)
    node boards/wasm/runner.mjs [-v] [test_module ...]         (MicroPython WebAssembly)

Imports each test_*.py module of this directory (or the named ones; "test_x" and
"test_x.py" both work), calls every module-level function whose name starts with
"test_" (sorted by name, no arguments), and prints one block per failure with its
traceback. The last line is exactly "N passed, M failed". A module that fails to
import counts as one failure. The exit status (CPython) / return value of main() is
0 only when nothing failed and at least one test passed.

Test functions are plain synchronous functions using assert; they import only
pnpipsec and standard modules that MicroPython has.
"""

import sys

try:
    import os
except ImportError:  # pragma: no cover - every port we use has os
    os = None

IS_MICROPYTHON = sys.implementation.name == "micropython"


def _here():
    f = globals().get("__file__") or ""
    i = f.rfind("/")
    if i < 0:
        return "."
    return f[:i] or "/"


def _now_ms():
    try:
        import _pnpwasm  # MicroPython WebAssembly: performance.now()

        return _pnpwasm.now_ms()
    except ImportError:
        pass
    import time

    if hasattr(time, "ticks_ms"):
        return time.ticks_ms()
    return time.perf_counter() * 1000.0


def _print_exception(e):
    if IS_MICROPYTHON:
        sys.print_exception(e, sys.stdout)
    else:
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stdout)


def discover(directory):
    names = []
    for fn in os.listdir(directory):
        if fn.startswith("test_") and fn.endswith(".py"):
            names.append(fn[:-3])
    names.sort()
    return names


def _ensure_pnpipsec(directory):
    # Under CPython without an installed package, use the firmware tree of this checkout.
    try:
        import pnpipsec  # noqa: F401
    except ImportError:
        repo = directory + "/../.."
        sys.path.insert(0, repo + "/firmware")


def run_module(name, verbose=False):
    """Run one test module; returns (passed, failed)."""
    passed = 0
    failed = 0
    t0 = _now_ms()
    try:
        mod = __import__(name)
    except Exception as e:  # noqa: BLE001 - an import error is a test failure
        print("FAIL %s (import)" % name)
        _print_exception(e)
        return 0, 1
    tests = []
    for attr in dir(mod):
        if attr.startswith("test_"):
            fn = getattr(mod, attr)
            if callable(fn):
                tests.append(attr)
    tests.sort()
    for attr in tests:
        t1 = _now_ms()
        try:
            getattr(mod, attr)()
        except Exception as e:  # noqa: BLE001
            failed += 1
            print("FAIL %s.%s" % (name, attr))
            _print_exception(e)
            continue
        passed += 1
        if verbose:
            print("ok   %s.%s (%.1f ms)" % (name, attr, _now_ms() - t1))
    if verbose:
        print("%s: %d passed, %d failed (%.1f ms)" % (name, passed, failed, _now_ms() - t0))
    return passed, failed


def main(argv=None, verbose=False):
    if argv is None:
        argv = sys.argv[1:]
    names = []
    for a in argv:
        if a in ("-v", "--verbose"):
            verbose = True
            continue
        if a.endswith(".py"):
            a = a[:-3]
        i = a.rfind("/")
        if i >= 0:
            a = a[i + 1 :]
        names.append(a)
    directory = _here()
    if directory not in sys.path:
        sys.path.insert(0, directory)
    _ensure_pnpipsec(directory)
    if not names:
        names = discover(directory)
    passed = 0
    failed = 0
    for name in names:
        p, f = run_module(name, verbose)
        passed += p
        failed += f
    print("%d passed, %d failed" % (passed, failed))
    if failed or not passed:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
