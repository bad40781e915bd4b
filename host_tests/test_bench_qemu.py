"""`pnp bench`'s Cortex-M3 section (pnp.bench_qemu), quickly: X25519 fixed-base and the
plain RFC 7748 ladder baseline on MicroPython's qemu port with pnpipsec frozen in.

The firmware is built here when missing and the toolchain and the MicroPython tarball
are present (~1 min); without them the test is skipped loudly, and with CI=true fails.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))

from pnp import bench_qemu  # noqa: E402

ONLY = "fixed-base"   # selects "X25519 fixed-base: x25519.public(k)"; the ladder always runs


@pytest.fixture(scope="module")
def firmware():
    if shutil.which("mpremote") is None and not os.path.exists(os.path.join(REPO, ".venv", "bin", "mpremote")):
        return None, "mpremote not found (scripts/setup.sh)"
    try:
        return bench_qemu.firmware(build_missing=True)
    except (OSError, subprocess.CalledProcessError, RuntimeError) as e:
        return None, "qemu firmware build failed: %s" % e


def _bench(*extra):
    p = subprocess.run([sys.executable, "-m", "pnp.cli", "bench", "--only", ONLY, "--no-wasm",
                        "--no-footprint"] + list(extra), capture_output=True, text=True, timeout=600, cwd=REPO)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def _agree(a, b):
    return abs(a - b) <= max(1000, bench_qemu.AGREE_REL * max(a, b))


def test_qemu_section_counts(firmware, require):
    elf, why = firmware
    require(elf is not None, "no qemu firmware for the bench: %s" % why)

    # JSON: both rows measured, positive, checked against the oracle, two boots agree
    q = json.loads(_bench("--json"))["qemu"]
    assert q is not None and "na" not in q, q
    rows = {d["key"]: d for d in q["rows"]}
    assert set(rows) == {"ladder", "x25519_base"}, rows
    base, op = rows["ladder"], rows["x25519_base"]
    for d in (base, op):
        assert not d.get("na"), d
        assert d["instructions"] > 1000000, d
        assert len(d["runs"]) == 2 and d["agree"] and _agree(*d["runs"]), d
        assert d["instructions"] == d["runs"][0]
        assert [e["board"] for e in d["estimates"]] == ["RP2040", "ESP32"]
        assert all(e["seconds"] > 0 for e in d["estimates"])
    assert q["agree"] is True
    assert op["ratio_vs_plain_ladder"] == pytest.approx(op["instructions"] / base["instructions"], rel=1e-12)
    assert q["env"]["machine"] == "mps2-an385 with Cortex-M3"

    # text: the printed ratio is the printed count over the printed baseline, and this
    # run (two more boots) agrees with the JSON run
    text = _bench()
    assert "Cortex-M3 instruction counts" in text
    got = {}
    for line in text.splitlines():
        m = re.match(r"(plain RFC 7748 ladder|X25519 fixed-base)\S*.*?\s{2,}(\d+\.\d+) M\s{2,}(baseline|\d+(?:\.\d+)?x)", line)
        if m:
            got[m.group(1)] = (float(m.group(2)) * 1e6, m.group(3))
    assert set(got) == {"plain RFC 7748 ladder", "X25519 fixed-base"}, text
    n_base, n_op = got["plain RFC 7748 ladder"][0], got["X25519 fixed-base"][0]
    assert got["plain RFC 7748 ladder"][1] == "baseline"
    ratio = float(got["X25519 fixed-base"][1].rstrip("x"))
    # printed to 3 significant digits; counts to 10,000 instructions
    assert ratio == pytest.approx(n_op / n_base, abs=0.0015), (ratio, n_op, n_base)
    assert _agree(n_base, base["instructions"]) or abs(n_base - base["instructions"]) <= 10000
    assert _agree(n_op, op["instructions"]) or abs(n_op - op["instructions"]) <= 10000
