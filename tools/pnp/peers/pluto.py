"""libreswan 4.10 pluto as the judge of NULL authentication (RFC 7619).

See shared/recipes/libreswan.md.  libreswan conflicts with strongSwan's packages,
so it is unpacked (never installed) into ``<repo>/.deps/libreswan`` by
:func:`ensure_libreswan`; pluto runs in a private mount namespace where an overlay
adds the unpacked ``/usr/libexec/ipsec`` (pluto has that path compiled in).
The kernel has no ESP here, so only IKE SAs are useful: childless (RFC 6023).

CLI: ``python -m pnp.peers.pluto --ensure [DIR]`` (used by setup scripts).
"""

import glob
import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
import time

from pnp.peers.netns import stop_process

from pnp.paths import ROOT as REPO   # the checkout (or the installed package data)
DEFAULT_DIR = os.path.join(REPO, ".deps", "libreswan")
# pluto/whack link against these; not all come with the listed ones
RUNTIME_PACKAGES = ["libnss3-tools", "libevent-pthreads-2.1-7", "libldns3", "libcurl3-nss",
                    "libunbound8"]

IKE_SUITE = "aes128-sha2_256;dh31"
ESP_SUITE = "aes128-sha2_256"


class PlutoError(RuntimeError):
    pass


def _norm_addr(text):
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def _pluto_bin(d):
    return os.path.join(d, "usr", "libexec", "ipsec", "pluto")


def missing_libs(d=DEFAULT_DIR):
    """Shared libraries pluto cannot find (empty list when it can run)."""
    p = subprocess.run(["ldd", _pluto_bin(d)], capture_output=True, text=True)
    return [l.split()[0] for l in p.stdout.splitlines() if "not found" in l]


def ensure_libreswan(d=DEFAULT_DIR, install_runtime=True):
    """Make sure libreswan is unpacked in ``d``; return ``d``.

    Runs ``apt-get download libreswan`` and ``dpkg-deb -x`` when pluto is absent, and
    (as root, when ``install_runtime``) ``apt-get install`` of pluto's runtime libraries
    (libnss3-tools libevent-pthreads-2.1-7 libldns3) when ldd reports them missing.
    """
    d = os.path.abspath(d)
    if not os.access(_pluto_bin(d), os.X_OK):
        tmp = tempfile.mkdtemp(prefix="lsdl")
        try:
            p = subprocess.run(["apt-get", "download", "libreswan"], cwd=tmp,
                               capture_output=True, text=True)
            debs = glob.glob(os.path.join(tmp, "libreswan_*.deb"))
            if p.returncode != 0 or not debs:
                raise PlutoError("apt-get download libreswan failed: %s%s" % (p.stdout, p.stderr))
            os.makedirs(d, exist_ok=True)
            subprocess.run(["dpkg-deb", "-x", debs[0], d], check=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if install_runtime and (missing_libs(d) or not shutil.which("certutil")):
        if os.geteuid() == 0:
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends"] + RUNTIME_PACKAGES,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
                           capture_output=True)
    return d


def available(d=DEFAULT_DIR):
    """(ok, reason) without downloading anything."""
    if not os.access(_pluto_bin(d), os.X_OK):
        return False, "libreswan not unpacked in %s (python -m pnp.peers.pluto --ensure)" % d
    miss = missing_libs(d)
    if miss:
        return False, "pluto libraries missing: %s (apt-get install %s)" % (" ".join(miss), " ".join(RUNTIME_PACKAGES))
    if not shutil.which("certutil"):
        return False, "certutil missing (apt-get install libnss3-tools)"
    return True, ""


class Pluto:
    """One pluto in namespace ``ns`` with files under ``workdir``.

    ::

        p = Pluto(ns, workdir)
        p.add_conn("null", left=ns.ip6, right=peer_ip_or_%any)   # authby=null
        p.start()
        p.initiate("null")      # or p.impair("omit-v2-ike-auth-child") first
        p.wait_log("authenticated peer using authby=null")
        p.stop()
    """

    def __init__(self, ns, workdir, lsdir=DEFAULT_DIR, listen=None, debug="none"):
        self.ns = ns
        self.workdir = os.path.abspath(workdir)
        self.lsdir = os.path.abspath(lsdir)
        self.listen = listen
        self.debug = debug
        self.rundir = os.path.join(self.workdir, "run")
        self.nssdir = os.path.join(self.workdir, "nss")
        self.ipsecdir = os.path.join(self.workdir, "ipsec.d")
        self.conf_path = os.path.join(self.workdir, "ipsec.conf")
        self.secrets_path = os.path.join(self.workdir, "ipsec.secrets")
        self.log_path = os.path.join(self.workdir, "pluto.log")
        self.ctl = os.path.join(self.rundir, "pluto.ctl")
        self.conns = {}
        self.secrets = []
        self.proc = None
        for x in (self.rundir, self.nssdir, self.ipsecdir):
            os.makedirs(x, exist_ok=True)

    @property
    def libexec(self):
        return os.path.join(self.lsdir, "usr", "libexec", "ipsec")

    def initnss(self):
        if os.path.exists(os.path.join(self.nssdir, "cert9.db")):
            return
        env = dict(os.environ, IPSEC_EXECDIR=self.libexec)
        p = subprocess.run([os.path.join(self.lsdir, "usr", "sbin", "ipsec"), "initnss",
                            "--nssdir", self.nssdir], capture_output=True, text=True, env=env)
        if p.returncode != 0:
            raise PlutoError("initnss failed: %s%s" % (p.stdout, p.stderr))

    def add_conn(self, name, left, right="%any", authby="null", leftid="%null", rightid="%null",
                 ike=IKE_SUITE, esp=ESP_SUITE, encapsulation="yes", type="tunnel", auto="add",
                 **extra):
        """Add a conn (defaults: NULL auth, device suite, forced UDP encapsulation).
        Extra keyword args are written as ``key=value`` lines."""
        c = {"authby": authby, "left": left, "leftid": leftid, "right": right,
             "rightid": rightid, "ike": ike, "esp": esp, "encapsulation": encapsulation,
             "type": type, "auto": auto}
        c.update(extra)
        self.conns[name] = c
        if self.listen is None:
            self.listen = left
        return c

    def add_psk(self, left_id, right_id, secret):
        self.secrets.append('%s %s : PSK "%s"' % (left_id, right_id, secret))

    def write_config(self):
        lines = ["config setup",
                 "\tplutodebug=%s" % self.debug,
                 "\tipsecdir=%s" % self.ipsecdir,
                 "\tnssdir=%s" % self.nssdir,
                 "\tsecretsfile=%s" % self.secrets_path,
                 "\tdumpdir=%s" % self.rundir,
                 "\tdnssec-enable=no"]
        if self.listen:
            lines.append("\tlisten=%s" % self.listen)
        for name, c in self.conns.items():
            lines.append("conn %s" % name)
            for k, v in c.items():
                if v is not None:
                    lines.append("\t%s=%s" % (k, v))
        with open(self.conf_path, "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(self.secrets_path, "w") as f:
            f.write("\n".join(self.secrets) + ("\n" if self.secrets else ""))

    def start(self, timeout=10.0):
        """initnss, write config, start pluto (stderr -> pluto.log); return once pluto
        answers on pluto.ctl, has loaded the conns and listens for IKE (its status
        lists a UDP interface on port 500 -- pluto adds the conns *before* it binds
        its sockets).  Fails at once when pluto exits."""
        self.initnss()
        self.write_config()
        for stale in (self.ctl, os.path.join(self.rundir, "pluto.pid")):
            if os.path.exists(stale):
                os.unlink(stale)
        script = ("mount -t overlay lsx -o lowerdir=%s:/usr/libexec /usr/libexec && "
                  "exec %s --config %s --nofork --stderrlog --rundir %s"
                  % (os.path.join(self.lsdir, "usr", "libexec"), os.path.join(self.libexec, "pluto"),
                     self.conf_path, self.rundir))
        log = open(self.log_path, "wb")
        self.proc = self.ns.popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                  stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PlutoError("pluto exited with %s:\n%s" % (self.proc.returncode, self.log_text()))
            if os.path.exists(self.ctl):
                st = self.whack("--status", check=False)
                if st.returncode == 0 and self._ready(st.stdout):
                    return self
            time.sleep(0.02)
        raise PlutoError("pluto not ready within %.1fs:\n%s" % (timeout, self.log_text()))

    def _ready(self, status):
        """``whack --status`` shows every conn (auto=add: loaded by addconn after
        start-up) and an IKE interface on port 500 (on the listen address, if set)."""
        if not all(("\"%s\"" % n) in status for n in self.conns):
            return False
        want = _norm_addr(self.listen) if self.listen else None
        for line in status.splitlines():
            words = line.split()
            # 000 interface veth0 UDP [fd00:99:1::2]:500   /   ... UDP 10.99.1.2:500
            if len(words) >= 5 and words[1] == "interface":
                addr, _, port = words[-1].rpartition(":")
                if port == "500" and (want is None or _norm_addr(addr.strip("[]")) == want):
                    return True
        return False

    def whack(self, *args, check=True, timeout=20):
        cmd = [os.path.join(self.libexec, "whack"), "--ctlsocket", self.ctl] + list(args)
        p = self.ns.run(cmd, check=False, timeout=timeout)
        if check and p.returncode != 0:
            raise PlutoError("%s failed (%d):\n%s%s" % (" ".join(cmd), p.returncode, p.stdout, p.stderr))
        return p

    def initiate(self, name, asynchronous=False, check=False):
        args = ["--initiate", "--name", name]
        if asynchronous:
            args.append("--asynchronous")
        return self.whack(*args, check=check)

    def impair(self, what):
        """e.g. impair("omit-v2-ike-auth-child") to initiate a childless IKE SA,
        impair("revival") to stop re-initiation loops."""
        return self.whack("--impair", what)

    def showstates(self):
        return self.whack("--showstates").stdout

    def terminate(self, name):
        return self.whack("--terminate", "--name", name, check=False)

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_log(self, text, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            lt = self.log_text()
            if text in lt:
                return lt
            if time.monotonic() > deadline:
                raise PlutoError("%r not in pluto log within %.1fs:\n%s" % (text, timeout, lt[-3000:]))
            time.sleep(0.02)

    def stop(self, grace=5.0):
        p = self.proc
        if p is None:
            return None
        self.proc = None
        return stop_process(p, grace)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--ensure":
        d = ensure_libreswan(argv[1] if len(argv) > 1 else DEFAULT_DIR)
        ok, why = available(d)
        print(d if ok else "libreswan unpacked in %s but: %s" % (d, why))
        return 0 if ok else 1
    print("usage: python -m pnp.peers.pluto --ensure [DIR]")
    return 2


if __name__ == "__main__":
    sys.exit(main())
