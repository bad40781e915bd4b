"""Network namespaces joined by veth (two) or a bridge (three or more).

Every name carries the pid of the test process and a counter, so parallel runs
never clash.  Everything created here is removed on exit, also after an error:
processes started through :meth:`Namespace.popen` (and any other process still
living in one of our namespaces) are terminated, then the namespaces deleted.

Only addresses inside the namespaces are used: ``fd00:99:<net>::<i>/64`` and
``10.99.<net>.<i>/24`` by default (``i`` = 1, 2, ...).
"""

import itertools
import os
import signal
import subprocess
import sys
import time

from pnp.paths import ROOT as REPO   # the checkout (or the installed package data)
# the checkout's venv; an installed `pnp` runs its own interpreter
VENV_PYTHON = os.path.join(REPO, ".venv", "bin", "python")
if not os.path.exists(VENV_PYTHON):
    VENV_PYTHON = sys.executable

_counter = itertools.count()


class NetnsError(RuntimeError):
    pass


def _sh(cmd, check=True, timeout=20, **kw):
    """Run a command (list) in the root namespace; return CompletedProcess."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise NetnsError("%s failed (%d): %s%s" % (" ".join(cmd), p.returncode, p.stdout, p.stderr))
    return p


def can_use_netns():
    """(ok, reason): True when we are root and `ip netns` works."""
    if os.geteuid() != 0:
        return False, "not root (network namespaces need CAP_SYS_ADMIN)"
    for tool in ("ip", "unshare"):
        if not any(os.access(os.path.join(d, tool), os.X_OK) for d in os.environ.get("PATH", "/usr/bin").split(":") + ["/usr/sbin", "/sbin"]):
            return False, "%s not found" % tool
    name = "pnpchk%d" % os.getpid()
    p = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if p.returncode != 0:
        return False, "ip netns add failed: " + p.stderr.strip()
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return True, ""


class Namespace:
    """One network namespace: ``name``, ``ifname`` (the veth inside), ``ip6``, ``ip4``."""

    def __init__(self, net, name, index, ip6, ip4, ifname="veth0"):
        self.net = net
        self.name = name
        self.index = index
        self.ip6 = ip6
        self.ip4 = ip4
        self.ifname = ifname
        self.procs = []

    def __repr__(self):
        return "<Namespace %s %s %s>" % (self.name, self.ip6, self.ip4)

    def addr(self, family=6):
        return self.ip6 if family == 6 else self.ip4

    def prefix(self):
        return ["ip", "netns", "exec", self.name]

    def run(self, cmd, check=True, timeout=30, **kw):
        """Run ``cmd`` (list, or str for ``sh -c``) in this namespace; wait; CompletedProcess (text)."""
        if isinstance(cmd, str):
            cmd = ["sh", "-c", cmd]
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        p = subprocess.run(self.prefix() + list(cmd), timeout=timeout, **kw)
        if check and p.returncode != 0:
            raise NetnsError("[%s] %s failed (%d): %s%s" % (self.name, " ".join(cmd), p.returncode, p.stdout, p.stderr))
        return p

    def popen(self, cmd, **kw):
        """Start ``cmd`` in this namespace (own session); tracked and killed on teardown."""
        if isinstance(cmd, str):
            cmd = ["sh", "-c", cmd]
        kw.setdefault("start_new_session", True)
        p = subprocess.Popen(self.prefix() + list(cmd), **kw)
        self.procs.append(p)
        return p

    def popen_python(self, code_or_args, env=None, **kw):
        """Start the project's venv CPython in this namespace.

        ``code_or_args`` is a str (run as ``python -c CODE``) or a list of
        arguments (e.g. ``["-m", "pnp", "node", ...]``).  cwd defaults to the repo.
        """
        if isinstance(code_or_args, str):
            args = ["-c", code_or_args]
        else:
            args = list(code_or_args)
        e = dict(os.environ)
        e["PYTHONUNBUFFERED"] = "1"
        if env:
            e.update(env)
        kw.setdefault("cwd", REPO)
        py = VENV_PYTHON if os.path.exists(VENV_PYTHON) else sys.executable
        return self.popen([py] + args, env=e, **kw)

    def kill_procs(self, grace=3.0):
        """Terminate tracked processes (SIGTERM to their group, then SIGKILL)."""
        alive = [p for p in self.procs if p.poll() is None]
        for p in alive:
            _signal_group(p, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in alive:
            try:
                p.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(p, signal.SIGKILL)
                try:
                    p.wait(2)
                except subprocess.TimeoutExpired:
                    pass
        self.procs = []

    def pids(self):
        p = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        return [int(x) for x in p.stdout.split() if x.strip().isdigit()]


def _signal_group(p, sig):
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            p.send_signal(sig)
        except ProcessLookupError:
            pass


def stop_process(p, grace=5.0):
    """SIGTERM a daemon, SIGKILL its process group after `grace` s; its exit status."""
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(5)
    return p.returncode


class Netns:
    """Context manager: ``n`` namespaces on one link.

    ``with Netns(2) as net: a, b = net.ns`` -- ``a.ip6 == "fd00:99:1::1"`` etc.
    ``net.run(ns, cmd)`` / ``net.popen(ns, cmd)`` / ``net.popen_python(ns, code)``
    accept a Namespace, an index or a name.
    """

    def __init__(self, n=2, net_id=1, prefix6=None, prefix4=None, warmup=True):
        if n < 2:
            raise ValueError("need at least two namespaces")
        self.n = n
        tag = "pnp%d_%d" % (os.getpid(), next(_counter))
        self.tag = tag
        self.prefix6 = prefix6 or "fd00:99:%x::" % net_id
        self.prefix4 = prefix4 or "10.99.%d." % net_id
        self.ns = []
        self.hub = None
        self.warmup = warmup
        for i in range(n):
            self.ns.append(Namespace(self, "%s_%s" % (tag, chr(ord("a") + i)), i,
                                     "%s%d" % (self.prefix6, i + 1), "%s%d" % (self.prefix4, i + 1)))

    # -- lifecycle -------------------------------------------------------
    def __enter__(self):
        try:
            self.setup()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc):
        self.teardown()
        return False

    def setup(self):
        made = []
        for ns in self.ns:
            _sh(["ip", "netns", "add", ns.name])
            made.append(ns)
        if self.n == 2:
            a, b = self.ns
            _sh(["ip", "link", "add", "veth0", "netns", a.name, "type", "veth",
                 "peer", "name", "veth0", "netns", b.name])
        else:
            self.hub = Namespace(self, self.tag + "_hub", -1, None, None, ifname="br0")
            _sh(["ip", "netns", "add", self.hub.name])
            self.hub.run(["ip", "link", "add", "br0", "type", "bridge"])
            self.hub.run(["ip", "link", "set", "br0", "up"])
            self.hub.run(["ip", "link", "set", "lo", "up"])
            for ns in self.ns:
                port = "p%d" % ns.index
                _sh(["ip", "link", "add", port, "netns", self.hub.name, "type", "veth",
                     "peer", "name", "veth0", "netns", ns.name])
                self.hub.run(["ip", "link", "set", port, "master", "br0", "up"])
        for ns in self.ns:
            ns.run(["ip", "link", "set", "lo", "up"])
            ns.run(["ip", "-6", "addr", "add", ns.ip6 + "/64", "dev", ns.ifname, "nodad"])
            ns.run(["ip", "addr", "add", ns.ip4 + "/24", "dev", ns.ifname])
            ns.run(["ip", "link", "set", ns.ifname, "up"])
        if self.warmup:
            self.warm_neighbours()

    def mac(self, ns):
        out = self.get(ns).run(["cat", "/sys/class/net/%s/address" % self.get(ns).ifname]).stdout
        return out.strip()

    def warm_neighbours(self):
        """Permanent neighbour entries (IPv6 ND and ARP) between all namespaces, so the
        first IKE packet is not delayed by address resolution (no ping needed)."""
        macs = [self.mac(ns) for ns in self.ns]
        for ns in self.ns:
            for other, mac in zip(self.ns, macs):
                if other is ns:
                    continue
                for addr in (other.ip6, other.ip4):
                    ns.run(["ip", "neigh", "replace", addr, "lladdr", mac, "dev", ns.ifname,
                            "nud", "permanent"])

    def teardown(self):
        every = list(self.ns) + ([self.hub] if self.hub else [])
        for ns in every:
            try:
                ns.kill_procs()
            except Exception:
                pass
        # anything else still in our namespaces was started by us (e.g. via run())
        for ns in every:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                pids = ns.pids()
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                t = time.monotonic() + 2
                while ns.pids() and time.monotonic() < t:
                    time.sleep(0.05)
        for ns in every:
            subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)

    # -- helpers taking a Namespace, an index or a name --------------------
    def get(self, ns):
        if isinstance(ns, Namespace):
            return ns
        if isinstance(ns, int):
            return self.ns[ns]
        for x in self.ns:
            if x.name == ns:
                return x
        raise KeyError(ns)

    def run(self, ns, cmd, **kw):
        return self.get(ns).run(cmd, **kw)

    def popen(self, ns, cmd, **kw):
        return self.get(ns).popen(cmd, **kw)

    def popen_python(self, ns, code_or_args, **kw):
        return self.get(ns).popen_python(code_or_args, **kw)

    def addrs(self, family=6):
        return [ns.addr(family) for ns in self.ns]


def leftover_namespaces():
    """Names of pnp* namespaces created by this process (for leak checks in tests)."""
    p = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    mine = "pnp%d_" % os.getpid()
    return [l.split()[0] for l in p.stdout.splitlines() if l.startswith(mine)]
