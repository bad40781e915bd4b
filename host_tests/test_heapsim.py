"""pnp.heapsim: the example app on a 32-bit MicroPython heap with 4 CPython peers.

Issue 10, item 2: "The example app runs on the ESP32 heap profile with 4 peers for a
simulated day, without MemoryError." The board is the frozen 32-bit unix port
(scripts/build-micropython.sh unix32-frozen, or PNP_MICROPYTHON32_FROZEN) with the
ESP32 heap (boards/qemu/build.py PROFILES["esp32"]); the lifetimes are zero_config's
defaults (the app's), so CHILD SAs rekey about every hour and IKE SAs every 4 h.
Locally a missing binary skips loudly; with CI=true it fails."""

import os
import subprocess

import pytest

from pnp import footprint, heapsim

from .conftest import REPO, missing


def _frozen():
    if not os.environ.get("PNP_MICROPYTHON32_FROZEN"):
        p = subprocess.run(["bash", os.path.join(REPO, "scripts", "build-micropython.sh"), "-q", "unix32-frozen"],
                           capture_output=True, text=True, timeout=1800, cwd=REPO)
        if p.returncode != 0:
            missing("the frozen 32-bit unix port cannot be built: " + (p.stderr.strip() or p.stdout.strip()))
    exe = footprint.frozen_binary()
    if exe is None:
        missing("no 32-bit MicroPython unix port with pnpipsec frozen: run scripts/build-micropython.sh "
                "or set PNP_MICROPYTHON32_FROZEN")
    return exe


def _plain():
    exe = footprint.unix_port_binary()
    if exe is None:
        missing("no 32-bit MicroPython unix port: run scripts/build-micropython.sh (needs gcc-multilib) "
                "or set PNP_MICROPYTHON32")
    from pnp.deploy import DeployError, mpy_cross_cmd
    try:
        mpy_cross_cmd()
    except DeployError as e:
        missing(str(e))
    return exe


@pytest.fixture(scope="module")
def day():
    return heapsim.run("frozen", "esp32", 1.0, exe=_frozen())


def test_the_esp32_profile_is_the_qemu_boards():
    import importlib.util
    spec = importlib.util.spec_from_file_location("qemu_build", os.path.join(REPO, "boards", "qemu", "build.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert heapsim.HEAPS["esp32"] == mod.PROFILES["esp32"]


def test_a_simulated_day_on_the_esp32_heap_with_4_peers(day):
    r = day
    assert r["memory_error"] is None, r["memory_error"]
    assert r["ok"], r["failures"]
    assert r["heapsize"] == heapsim.HEAPS["esp32"]
    # every hourly echo came back, from each of the 4 peers
    assert r["echoes_sent"] == 24 * 4 and r["echoes_ok"] == r["echoes_sent"], r["echo_misses"]
    # the app's default lifetimes: CHILD SAs rekeyed within the day, for every peer
    for host in heapsim.PEERS[:4]:
        assert r["peer_rekeys"][host]["ChildRekeyed"] >= 1, r["peer_rekeys"]
    assert sum(v["IkeRekeyed"] for v in r["peer_rekeys"].values()) >= 4, r["peer_rekeys"]
    assert r["board_events"].get("ChildRekeyed", 0) >= 4
    assert 0 < r["heap_final"]["alloc"] <= r["peak"] < r["heapsize"]
    assert len(r["heap_samples"]) == 24


def test_the_measurement_follows_what_the_board_holds(day):
    """The reported live heap is the board's: it grows with each SA and with the
    half-open handshake, and falls when the 5th peer leaves."""
    r = day
    setup, four = r["setup_alloc"], r["heap_4_sas"]["alloc"]
    flight, five, left = r["heap_in_flight"]["alloc"], r["heap_5_sas"]["alloc"], r["heap_after_fifth_left"]["alloc"]
    assert 0 < r["import_alloc"] < setup
    assert four > setup + 4 * 1000          # 4 IKE SAs, CHILD SAs, ESP pairs, pins, peers
    assert four < flight < five             # the half-open SA, then a whole 5th SA
    assert left < five
    assert r["heap_in_flight"]["free"] + flight <= r["heapsize"]
    assert r["peak"] >= five
    assert "pnpipsec.node" in r["modules_at_import"]
    assert set(r["modules_at_import"]) <= set(r["modules_at_end"])


def test_a_heap_too_small_is_a_memory_error_and_a_failure():
    r = heapsim.run("frozen", 40 * 1024, 0, exe=_frozen())
    assert not r["ok"]
    assert r["memory_error"] and "MemoryError" in r["memory_error"]
    assert r["failures"] and "exit 3" in r["failures"][0], r["failures"]


def test_from_mpy_in_a_large_heap():
    r = heapsim.run("mpy", "large", 0, exe=_plain())
    assert r["ok"], (r["memory_error"], r["failures"])
    # the .mpy files are loaded into RAM: far more heap than frozen
    assert r["heap_in_flight"]["alloc"] > r["heap_4_sas"]["alloc"] > r["import_alloc"] > 50000
    size = footprint.app_mpy_size(r["modules_at_end"], r["mpy_sizes"])
    assert 0 < size <= sum(r["mpy_sizes"].values())


def test_the_board_script_compiles_for_micropython():
    from pnp.deploy import DeployError, mpy_cross_cmd
    try:
        cross = mpy_cross_cmd()
    except DeployError as e:
        missing(str(e))
    p = subprocess.run(cross + ["-o", os.devnull, heapsim.BOARD_SCRIPT], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
