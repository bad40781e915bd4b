"""The host_tests/mp modules run inside real MicroPython (the WebAssembly port, via
boards/wasm/runner.mjs) and under CPython (host_tests/mp/runner.py).

One test per module, so a failure names it. Without node_modules the MicroPython runs
are skipped locally and fail in CI (CI=true).
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

from .conftest import REPO, missing

MP_DIR = os.path.join(REPO, "host_tests", "mp")
RUNNER_MJS = os.path.join(REPO, "boards", "wasm", "runner.mjs")
WASM_PKG = os.path.join(REPO, "node_modules", "@micropython", "micropython-webassembly-pyscript")
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$")
TIMEOUT = 900


def _modules():
    return sorted(f[:-3] for f in os.listdir(MP_DIR) if f.startswith("test_") and f.endswith(".py"))


def _node():
    node = shutil.which("node")
    if node is None:
        missing("node not found (install Node.js >= 20)")
    if not os.path.isdir(WASM_PKG):
        missing("node_modules missing: run scripts/setup.sh (npm ci)")
    return node


def _run(cmd, timeout=TIMEOUT):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    lines = p.stdout.rstrip("\n").splitlines()
    m = SUMMARY.match(lines[-1]) if lines else None
    return p, m


def _explain(p):
    return "exit %d\n--- stdout\n%s\n--- stderr\n%s" % (p.returncode, p.stdout[-6000:], p.stderr[-3000:])


def test_there_are_mp_modules():
    assert "test_smoke_mp" in _modules()


@pytest.mark.parametrize("module", _modules())
def test_module_on_micropython_wasm(module):
    p, m = _run([_node(), RUNNER_MJS, "--timeout", str(TIMEOUT - 30), "-v", module])
    assert m is not None, "no summary line\n" + _explain(p)
    passed, failed = int(m.group(1)), int(m.group(2))
    assert failed == 0 and passed >= 1 and p.returncode == 0, _explain(p)


@pytest.mark.parametrize("module", _modules())
def test_module_on_cpython_runner(module):
    p, m = _run([sys.executable, os.path.join(MP_DIR, "runner.py"), module])
    assert m is not None and int(m.group(2)) == 0 and int(m.group(1)) >= 1 and p.returncode == 0, _explain(p)


# ---- the harness itself: failures, import errors, escapes and hangs are caught

def _write(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    shutil.copy(os.path.join(MP_DIR, "runner.py"), tmp_path / "runner.py")


def test_runner_reports_failures(tmp_path):
    _write(tmp_path, "test_bad_mp.py", "def test_a():\n    assert 1 == 2, 'nope'\n\ndef test_b():\n    pass\n")
    (tmp_path / "test_imp_mp.py").write_text("import no_such_module_here\n")
    p, m = _run([_node(), RUNNER_MJS, "--tests", str(tmp_path)], timeout=120)
    assert p.returncode == 1, _explain(p)
    assert m and m.groups() == ("1", "2"), _explain(p)
    assert "FAIL test_bad_mp.test_a" in p.stdout and "AssertionError: nope" in p.stdout
    assert "FAIL test_imp_mp (import)" in p.stdout
    p2, m2 = _run([sys.executable, str(tmp_path / "runner.py")], timeout=120)
    assert p2.returncode == 1 and m2 and m2.groups() == ("1", "2"), _explain(p2)


def test_runner_zero_tests_is_failure(tmp_path):
    _write(tmp_path, "test_empty_mp.py", "X = 1\n")
    p, m = _run([_node(), RUNNER_MJS, "--tests", str(tmp_path)], timeout=120)
    assert p.returncode == 1 and m and m.groups() == ("0", "0"), _explain(p)


def test_runner_escaped_exception_and_exit_status(tmp_path):
    node = _node()
    p = subprocess.run([node, RUNNER_MJS, "-c", "raise ValueError('escaped')"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "ValueError: escaped" in p.stderr
    p = subprocess.run([node, RUNNER_MJS, "-c", "import sys; sys.exit(3)"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 3


def test_runner_timeout(tmp_path):
    _write(tmp_path, "test_hang_mp.py", "def test_forever():\n    while True:\n        pass\n")
    p, _ = _run([_node(), RUNNER_MJS, "--timeout", "2", "--tests", str(tmp_path)], timeout=60)
    assert p.returncode == 124 and "TIMEOUT" in p.stderr, _explain(p)


def test_wasm_randomness_and_clock():
    code = (
        "import pnpwasm\n"
        "a = pnpwasm.urandom(32); b = pnpwasm.urandom(32)\n"
        "assert len(a) == 32 and a != b and pnpwasm.urandom(0) == b''\n"
        "t = pnpwasm.perf_ms(); assert isinstance(t, float) and pnpwasm.perf_ms() >= t\n"
        "print('RANDOM_OK')\n"
    )
    p = subprocess.run([_node(), RUNNER_MJS, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "RANDOM_OK" in p.stdout, _explain(p)


def test_bench_measures_every_row():
    # `pnp bench` (CPython pure, cryptography, and MicroPython wasm through runner.mjs
    # --script): every row must produce a figure, i.e. no "n/a".
    _node()
    import json

    p = subprocess.run(
        [sys.executable, "-m", "pnp.cli", "bench", "--reps", "1", "--target-ms", "1", "--json"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert p.returncode == 0, _explain(p)
    rows = json.loads(p.stdout)["rows"]
    assert len(rows) >= 9
    na = ["%s / %s: %s" % (r["operation"], r["implementation"], r["na"]) for r in rows if r.get("na")]
    assert not na, "\n".join(na)
    assert all(r["median"] > 0 for r in rows)
