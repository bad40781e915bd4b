"""strongSwan charon (5.9.8) as an interop peer inside a network namespace.

See shared/recipes/strongswan.md.  One charon per namespace, userspace ESP
(kernel-libipsec, tunnel mode only), own ``/run`` in a private mount namespace,
self-contained ``strongswan.conf``, vici socket in the work directory.
"""

import os
import re
import socket
import subprocess
import time

from pnp.peers.netns import stop_process

CHARON_BIN = "/usr/lib/ipsec/charon"
PLUGIN_DIR = "/usr/lib/ipsec/plugins"   # libstrongswan-<name>.so
SWANCTL = "swanctl"
PKI = "pki"

LOAD = ("random nonce openssl aes sha2 hmac kdf curve25519 pem pkcs1 pkcs8 x509 pubkey "
        "kernel-libipsec kernel-netlink socket-default vici")

IKE_SUITE = "aes128-sha256-x25519"
ESP_SUITE = "aes128-sha256"


class CharonError(RuntimeError):
    pass


def available():
    """(ok, reason) -- charon, swanctl and pki installed."""
    if not os.access(CHARON_BIN, os.X_OK):
        return False, CHARON_BIN + " missing (apt-get install strongswan-charon)"
    for tool in (SWANCTL, PKI):
        if subprocess.run(["sh", "-c", "command -v " + tool], capture_output=True).returncode:
            return False, tool + " missing (strongswan-swanctl / strongswan-pki)"
    return True, ""


def vici_accepts(path):
    """True when a connection to the unix socket ``path`` succeeds (charon listens)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


# -- keys ---------------------------------------------------------------------
def gen_ed25519(directory, name):
    """Generate an Ed25519 key pair with ``pki``; return (private_pem_path, public_pem_path).

    The public key is PEM SubjectPublicKeyInfo (``-----BEGIN PUBLIC KEY-----``), the
    same format ``pnp keygen`` writes, so either can be given to ``remote_pubkey``.
    """
    os.makedirs(directory, exist_ok=True)
    priv = os.path.join(directory, name + ".pem")
    pub = os.path.join(directory, name + ".pub")
    # pki complains about a missing TPM library on stderr: keep it quiet
    with open(priv, "wb") as f:
        subprocess.run([PKI, "--gen", "--type", "ed25519", "--outform", "pem"], stdout=f,
                       stderr=subprocess.DEVNULL, check=True)
    with open(pub, "wb") as f:
        subprocess.run([PKI, "--pub", "--in", priv, "--type", "priv", "--outform", "pem"],
                       stdout=f, stderr=subprocess.DEVNULL, check=True)
    return priv, pub


# -- swanctl.conf rendering ------------------------------------------------------
def _value(v):
    if v is True:
        return "yes"
    if v is False:
        return "no"
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)


def render_swanctl(tree, indent=0):
    """Render a nested dict as swanctl.conf text (dict -> section, else key = value)."""
    pad = "    " * indent
    out = []
    for k, v in tree.items():
        if v is None:
            continue
        if isinstance(v, dict):
            out.append("%s%s {" % (pad, k))
            out.append(render_swanctl(v, indent + 1))
            out.append("%s}" % pad)
        else:
            out.append("%s%s = %s" % (pad, k, _value(v)))
    return "\n".join(x for x in out if x != "")


def _host_ts(addr):
    return addr + ("/128" if ":" in addr else "/32")


# -- log parsing ----------------------------------------------------------------
# charon hex dumps look like (ike=4 / chd=4):
#   ... [IKE] Sk_ei secret => 16 bytes @ 0x7f...
#   ... [IKE]    0: 9E 41 ...  16 hex bytes then ASCII
_DUMP_HEAD = re.compile(r"^()(\S.*?) => (\d+) bytes @ (?:0x)?[0-9a-fA-F]+\s*$")
_DUMP_LINE = re.compile(r"^()\s*(\d+): ((?:[0-9A-F]{2} ?){1,16})")


def parse_hexdumps(text):
    """Return a list of (label, bytes) for every hex dump in a charon log, in order."""
    dumps = []
    cur = None
    need = 0
    for line in text.splitlines():
        lm = _LINE.match(line)
        if not lm:
            continue
        line = lm.group(4)
        m = _DUMP_HEAD.match(line)
        if m:
            if cur is not None:
                dumps.append((cur[0], bytes(cur[1])))
            cur = [m.group(2).strip(), bytearray()]
            need = int(m.group(3))
            if need == 0:
                dumps.append((cur[0], b""))
                cur = None
            continue
        if cur is not None:
            m = _DUMP_LINE.match(line)
            if m and int(m.group(2)) == len(cur[1]):
                cur[1] += bytes.fromhex(m.group(3).replace(" ", ""))
                if len(cur[1]) >= need:
                    dumps.append((cur[0], bytes(cur[1][:need])))
                    cur = None
                continue
            dumps.append((cur[0], bytes(cur[1])))
            cur = None
    if cur is not None:
        dumps.append((cur[0], bytes(cur[1])))
    return dumps


class Charon:
    """One charon in namespace ``ns`` (a netns.Namespace), files under ``workdir``.

    Typical use::

        c = Charon(ns, workdir)
        c.start()
        c.add_conn("host", local_addrs=a, remote_addrs=b, psk="secret", local_id="a", remote_id="b",
                   children={"net": {}})
        c.load()
        c.initiate("net", "host")
        c.keys()   # SK_* and ESP keys with SPIs, from the log
        c.stop()
    """

    def __init__(self, ns, workdir, name="charon", log_levels=None, extra_conf="",
                 plugins=None, plugin_dir=None, conf_text=None):
        """``plugins``: the ``load`` list (default :data:`LOAD`); ``plugin_dir``: a
        directory bind-mounted over :data:`PLUGIN_DIR` in charon's mount namespace
        (the set-up verifier's tests use it to hide plugins). ``conf_text``: a
        strongswan.conf written as it is instead of the harness's (the README's, in
        host_tests/test_readme_linux_peer.py); without a ``vici { socket }`` setting
        charon listens on its default /var/run/charon.vici, which is ``run/`` here, and
        without a filelog there is no charon.log (charon.out has what it prints)."""
        self.ns = ns
        self.workdir = os.path.abspath(workdir)
        self.name = name
        self.rundir = os.path.join(self.workdir, "run")
        self.swanctl_dir = os.path.join(self.workdir, "swanctl")
        self.conf_path = os.path.join(self.workdir, "strongswan.conf")
        self.vici = os.path.join(self.workdir, "charon.vici")
        self.log_path = os.path.join(self.workdir, "charon.log")
        self.out_path = os.path.join(self.workdir, "charon.out")
        self.log_levels = {"default": 1, "ike": 4, "chd": 4, "mgr": 2}
        if log_levels:
            self.log_levels.update(log_levels)
        self.extra_conf = extra_conf
        self.plugins = plugins or LOAD
        self.plugin_dir = plugin_dir
        self.conf_text = conf_text
        if conf_text is not None and "vici" in conf_text and "socket =" not in conf_text:
            self.vici = os.path.join(self.rundir, "charon.vici")
        self.proc = None
        self.conns = {}
        self.secrets = {}
        for d in (self.rundir, self.swanctl_dir):
            os.makedirs(d, exist_ok=True)
        for sub in ("pubkey", "private", "x509", "x509ca", "conf.d"):
            os.makedirs(os.path.join(self.swanctl_dir, sub), exist_ok=True)

    # -- daemon -------------------------------------------------------------
    def write_strongswan_conf(self):
        if self.conf_text is not None:
            with open(self.conf_path, "w") as f:
                f.write(self.conf_text)
            return
        levels = "\n            ".join("%s = %s" % kv for kv in self.log_levels.items())
        text = """charon {
    load_modular = no
    load = %(load)s
    install_routes = yes
    plugins {
        vici { socket = unix://%(vici)s }
        kernel-libipsec { allow_peer_ts = yes }
        socket-default { fwmark = 0x42 }
        kernel-netlink { fwmark = !0x42 }
    }
    filelog {
        log {
            path = %(log)s
            ike_name = yes
            append = no
            flush_line = yes
            %(levels)s
        }
    }
%(extra)s
}
""" % {"load": self.plugins, "vici": self.vici, "log": self.log_path, "levels": levels,
       "extra": self.extra_conf}
        with open(self.conf_path, "w") as f:
            f.write(text)

    def start(self, timeout=5.0):
        """Start charon in the namespace; return once the vici socket accepts connections.

        The socket *file* appears before charon listens on it (a connect then gets
        "Connection refused"), so this connects to it, within ``timeout`` seconds;
        it fails at once when charon exits (log tail in the error).
        """
        self.write_strongswan_conf()
        for stale in (self.vici, os.path.join(self.rundir, "charon.pid")):
            if os.path.exists(stale):
                os.unlink(stale)
        script = "mount --bind %s /run && " % self.rundir
        if self.plugin_dir:
            script += "mount --bind %s %s && " % (self.plugin_dir, PLUGIN_DIR)
        script += "exec env STRONGSWAN_CONF=%s %s" % (self.conf_path, CHARON_BIN)
        out = open(self.out_path, "wb")
        self.t_start = time.monotonic()
        self.proc = self.ns.popen(["unshare", "--mount", "--propagation", "private",
                                   "sh", "-c", script], stdout=out, stderr=subprocess.STDOUT)
        out.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise CharonError("charon exited with %s: %s%s" % (
                    self.proc.returncode, self.output_text(), self.log_text()[-3000:]))
            if os.path.exists(self.vici) and vici_accepts(self.vici):
                self.t_ready = time.monotonic()
                return self
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
        raise CharonError("vici socket %s did not accept connections within %.1fs: %s%s" % (
            self.vici, timeout, self.output_text(), self.log_text()[-3000:]))

    def stop(self, grace=5.0):
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL."""
        p = self.proc
        if p is None:
            return None
        self.proc = None
        return stop_process(p, grace)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def output_text(self):
        try:
            with open(self.out_path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_text(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # -- swanctl ------------------------------------------------------------
    def swanctl(self, *args, check=True, timeout=30):
        """Run ``swanctl ARGS --uri unix://vici`` in the namespace; CompletedProcess."""
        env = dict(os.environ, SWANCTL_DIR=self.swanctl_dir)
        cmd = [SWANCTL] + list(args) + ["--uri", "unix://" + self.vici]
        p = self.ns.run(cmd, check=False, timeout=timeout, env=env)
        if check and p.returncode != 0:
            raise CharonError("%s failed (%d):\n%s%s" % (" ".join(cmd), p.returncode, p.stdout, p.stderr))
        return p

    def add_key(self, path_or_pem, kind="pubkey", name=None):
        """Copy a key file (or PEM text) into swanctl/<kind>/; return its file name."""
        if "-----BEGIN" in str(path_or_pem):
            data = path_or_pem.encode() if isinstance(path_or_pem, str) else path_or_pem
            name = name or "key%d.pem" % len(os.listdir(os.path.join(self.swanctl_dir, kind)))
        else:
            with open(path_or_pem, "rb") as f:
                data = f.read()
            name = name or os.path.basename(path_or_pem)
        with open(os.path.join(self.swanctl_dir, kind, name), "wb") as f:
            f.write(data)
        return name

    def add_conn(self, name, local_addrs="%any", remote_addrs="%any", *, local_id=None,
                 remote_id="%any", psk=None, local_key=None, local_pubkey=None,
                 remote_pubkey=None, local_auth=None, remote_auth=None,
                 children=None, proposals=IKE_SUITE, encap=True, remote_port=None,
                 local_port=None, mobike=False, extra=None):
        """Add an IKE connection.

        Authentication: ``psk="..."`` (both sides psk, secret added for the two ids),
        or raw keys: ``local_key`` (private PEM path) + ``local_pubkey`` (own public PEM)
        and ``remote_pubkey`` (the peer's PEM SPKI public key, path or text).
        ``children`` maps child names to dicts overriding: mode=tunnel,
        local_ts/remote_ts (default: the host addresses), esp_proposals=aes128-sha256,
        start_action=none.  ``remote_addrs="%any"`` makes a responder-only conn.
        """
        if psk is not None:
            local_auth = local_auth or "psk"
            remote_auth = remote_auth or "psk"
        elif local_key or remote_pubkey:
            local_auth = local_auth or "pubkey"
            remote_auth = remote_auth or "pubkey"
        local = {"auth": local_auth, "id": local_id}
        remote = {"auth": remote_auth, "id": remote_id}
        if local_key:
            self.add_key(local_key, "private")
        if local_pubkey:
            local["pubkeys"] = self.add_key(local_pubkey, "pubkey")
        if remote_pubkey:
            remote["pubkeys"] = self.add_key(remote_pubkey, "pubkey",
                                             name="%s-remote.pub" % name)
        kids = {}
        for cname, c in (children or {}).items():
            c = dict(c or {})
            ch = {
                "mode": c.pop("mode", "tunnel"),
                "local_ts": c.pop("local_ts", _host_ts(local_addrs) if local_addrs != "%any" else "dynamic"),
                "remote_ts": c.pop("remote_ts", _host_ts(remote_addrs) if remote_addrs != "%any" else "dynamic"),
                "esp_proposals": c.pop("esp_proposals", ESP_SUITE),
                "start_action": c.pop("start_action", "none"),
            }
            ch.update(c)
            kids[cname] = ch
        conn = {
            "version": 2,
            "local_addrs": local_addrs,
            "remote_addrs": remote_addrs,
            "local_port": local_port,
            "remote_port": remote_port,
            "proposals": proposals,
            "encap": encap,
            "mobike": mobike,
            "local": local,
            "remote": remote,
            "children": kids,
        }
        if extra:
            conn.update(extra)
        self.conns[name] = conn
        if psk is not None:
            ids = [i for i in (local_id, remote_id) if i and i != "%any"]
            sec = {"secret": psk}
            for i, ident in enumerate(ids):
                sec["id-%d" % (i + 1)] = ident
            self.secrets["ike-" + name] = sec
        return conn

    def write_swanctl_conf(self):
        tree = {"connections": self.conns, "secrets": self.secrets}
        text = render_swanctl(tree) + "\n"
        with open(os.path.join(self.swanctl_dir, "swanctl.conf"), "w") as f:
            f.write(text)
        return text

    def load(self):
        """Write swanctl.conf and ``swanctl --load-all``."""
        self.write_swanctl_conf()
        return self.swanctl("--load-all")

    def initiate(self, child=None, ike=None, timeout=10, check=True):
        args = ["--initiate"]
        if child:
            args += ["--child", child]
        if ike:
            args += ["--ike", ike]
        args += ["--timeout", str(int(timeout))]
        return self.swanctl(*args, check=check, timeout=timeout + 10)

    def rekey_child(self, name, check=True):
        return self.swanctl("--rekey", "--child", name, check=check)

    def rekey_ike(self, name, check=True):
        return self.swanctl("--rekey", "--ike", name, check=check)

    def terminate(self, ike=None, child=None, timeout=5, check=False):
        args = ["--terminate"]
        if child:
            args += ["--child", child]
        if ike:
            args += ["--ike", ike]
        if not ike and not child:
            return [self.terminate(ike=n, timeout=timeout, check=check) for n in self.conns]
        args += ["--timeout", str(int(timeout))]
        return self.swanctl(*args, check=check, timeout=timeout + 10)

    def list_sas(self):
        """Parse ``swanctl --list-sas``: list of IKE SA dicts.

        Each: name, uniqueid, state, version, spi_i, spi_r (hex, 16 digits),
        initiator (bool: we are initiator), local, remote, suite,
        children: list of dicts name, uniqueid, reqid, state, mode, suite,
        spi_in, spi_out (hex, 8 digits), bytes_in/out, packets_in/out, local_ts, remote_ts.
        """
        return parse_list_sas(self.swanctl("--list-sas").stdout)

    def wait_for(self, pred, timeout=5.0, interval=0.02):
        """Poll list_sas() until pred(sas) is truthy; return that value or raise."""
        deadline = time.monotonic() + timeout
        while True:
            sas = self.list_sas()
            v = pred(sas)
            if v:
                return v
            if time.monotonic() > deadline:
                raise CharonError("condition not met within %.1fs; SAs: %r" % (timeout, sas))
            time.sleep(interval)

    # -- keys ---------------------------------------------------------------
    def keys(self):
        """Keys charon logged, in order of appearance.

        Returns {"ike": [ {sk_d, sk_ai, sk_ar, sk_ei, sk_er, sk_pi, sk_pr, spi_i, spi_r}, ...],
                 "esp": [ {spi_in, spi_out, encr_i, encr_r, integ_i, integ_r, ...}, ...]}
        See :func:`parse_keys`.
        """
        return parse_keys(self.log_text())

    def write_keydir(self, keydir):
        """Write this charon's logged keys as Wireshark UAT files into ``keydir``."""
        from pnp.peers import capture
        k = self.keys()
        return capture.write_keydir(keydir, esp_sa_rows(k), k["ike"])


# -- list-sas parsing -----------------------------------------------------------
_IKE_HEAD = re.compile(r"^(\S+): #(\d+), (\w+), IKEv(\d), ([0-9a-f]{16})_i(\*?) ([0-9a-f]{16})_r(\*?)")
_CHILD_HEAD = re.compile(r"^\s+(\S+): #(\d+), reqid (\d+), (\w+), ([\w-]+), (\S+)")
_INOUT = re.compile(r"^\s+(in|out)\s+([0-9a-f]{8})(?:\s*\([^)]*\))?,\s+(\d+) bytes,\s+(\d+) packets")


def parse_list_sas(text):
    sas = []
    ike = child = None
    for line in text.splitlines():
        m = _IKE_HEAD.match(line)
        if m:
            ike = {"name": m.group(1), "uniqueid": int(m.group(2)), "state": m.group(3),
                   "version": int(m.group(4)), "spi_i": m.group(5), "spi_r": m.group(7),
                   "initiator": m.group(6) == "*", "children": []}
            sas.append(ike)
            child = None
            continue
        if ike is None:
            continue
        m = _CHILD_HEAD.match(line)
        if m:
            child = {"name": m.group(1), "uniqueid": int(m.group(2)), "reqid": int(m.group(3)),
                     "state": m.group(4), "mode": m.group(5), "suite": m.group(6)}
            ike["children"].append(child)
            continue
        m = _INOUT.match(line)
        if m and child is not None:
            d = m.group(1)
            child["spi_" + d] = m.group(2)
            child["bytes_" + d] = int(m.group(3))
            child["packets_" + d] = int(m.group(4))
            continue
        s = line.strip()
        if child is not None and (s.startswith("local ") or s.startswith("remote ")):
            k, v = s.split(None, 1)
            child[k + "_ts"] = v.split()
            continue
        if child is None:
            if s.startswith("local ") or s.startswith("remote "):
                k, v = s.split(None, 1)
                ike[k] = v
            elif "/" in s and " " not in s and "suite" not in ike:
                ike["suite"] = s
    return sas


# -- key parsing ----------------------------------------------------------------
_LINE = re.compile(r"^(?:\S+ )?(\d+)\[(\w+)\] (?:<([^>]*)> )?(.*)$")
_CHECKIN = re.compile(r"checkin IKEv2 SA .* with SPIs ([0-9a-f]{16})_i ([0-9a-f]{16})_r")
_MSG = re.compile(r"^(parsed|generating) (\w+) (request|response) (\d+)")
_ESP_ADD = re.compile(r"^adding (inbound|outbound) ESP SA")
_ESP_SPI = re.compile(r"^\s*SPI 0x([0-9a-f]+), src (\S+) dst (\S+)")
_IKE_LABELS = {"Sk_d secret": "sk_d", "Sk_ai secret": "sk_ai", "Sk_ar secret": "sk_ar",
               "Sk_ei secret": "sk_ei", "Sk_er secret": "sk_er", "Sk_pi secret": "sk_pi",
               "Sk_pr secret": "sk_pr"}
_ESP_LABELS = {"encryption initiator key": "encr_i", "encryption responder key": "encr_r",
               "integrity initiator key": "integ_i", "integrity responder key": "integ_r"}


def parse_keys(text):
    """Extract IKE and ESP keys from a charon log (levels ike=4, chd=4, mgr=2, enc=1).

    Returns {"ike": [...], "esp": [...]} in order of appearance.

    IKE entry: ike ("name|uniqueid"), sk_d, sk_ai, sk_ar, sk_ei, sk_er, sk_pi, sk_pr
    (bytes), spi_i, spi_r (16 hex digits, from the following
    "checkin IKEv2 SA ... with SPIs X_i Y_r" line not used before; None if absent).

    ESP entry (one CHILD_SA): ike, initiator (this charon initiated the exchange that
    created the CHILD_SA), encr_i, encr_r, integ_i, integ_r (bytes), and the two
    installed SAs: spi_in/src_in/dst_in/enc_in/int_in and
    spi_out/src_out/dst_out/enc_out/int_out (SPI 8 hex digits).
    """
    ike_list, esp_list = [], []
    used_spis = set()
    last_dir = {}            # ctx -> "request"/"response" of the last parsed message
    cur_ike = {}             # ctx -> ike entry being filled
    cur_esp = {}             # ctx -> esp entry being filled
    pending_spi = []         # ike entries waiting for their SPIs
    dump = None              # [ctx, label, need, bytearray]
    expect_esp = None        # (ctx, "in"/"out") after "adding ... ESP SA"

    def finish_dump(d):
        ctx, label, data = d[0], d[1], bytes(d[3])
        if label in _IKE_LABELS:
            e = cur_ike.get(ctx)
            if e is None or _IKE_LABELS[label] in e:
                e = {"ike": ctx, "spi_i": None, "spi_r": None}
                cur_ike[ctx] = e
                ike_list.append(e)
                pending_spi.append(e)
            e[_IKE_LABELS[label]] = data
        elif label in _ESP_LABELS:
            e = cur_esp.get(ctx)
            if e is None or _ESP_LABELS[label] in e:
                e = {"ike": ctx, "initiator": last_dir.get(ctx) == "response"}
                cur_esp[ctx] = e
                esp_list.append(e)
            e[_ESP_LABELS[label]] = data

    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        ctx, msg = m.group(3), m.group(4)
        if dump is not None:
            dm = _DUMP_LINE.match(msg)
            if dm and int(dm.group(2)) == len(dump[3]):
                dump[3] += bytes.fromhex(dm.group(3).replace(" ", ""))
                if len(dump[3]) >= dump[2]:
                    finish_dump(dump)
                    dump = None
                continue
            finish_dump(dump)
            dump = None
        hm = _DUMP_HEAD.match(msg)
        if hm:
            dump = [ctx, hm.group(2).strip(), int(hm.group(3)), bytearray()]
            if dump[2] == 0:
                finish_dump(dump)
                dump = None
            continue
        mm = _MSG.match(msg)
        if mm and mm.group(1) == "parsed":
            last_dir[ctx] = mm.group(3)
            continue
        cm = _CHECKIN.search(msg)
        if cm:
            spis = (cm.group(1), cm.group(2))
            if "0" * 16 not in spis and spis not in used_spis and pending_spi:
                e = pending_spi.pop(0)
                e["spi_i"], e["spi_r"] = spis
                used_spis.add(spis)
            continue
        am = _ESP_ADD.match(msg)
        if am:
            expect_esp = (ctx, "in" if am.group(1) == "inbound" else "out")
            continue
        sm = _ESP_SPI.match(msg)
        if sm and expect_esp is not None and expect_esp[0] == ctx:
            e = cur_esp.get(ctx)
            d = expect_esp[1]
            expect_esp = None
            if e is None:
                continue
            e["spi_" + d] = sm.group(1).rjust(8, "0")
            e["src_" + d] = sm.group(2)
            e["dst_" + d] = sm.group(3)
            # child_create: the CHILD initiator sends with the initiator keys
            sends_i = e["initiator"]
            use_i = sends_i if d == "out" else not sends_i
            e["enc_" + d] = e.get("encr_i" if use_i else "encr_r")
            e["int_" + d] = e.get("integ_i" if use_i else "integ_r")
            continue
    if dump is not None:
        finish_dump(dump)
    return {"ike": ike_list, "esp": esp_list}


def esp_sa_rows(keys):
    """Flatten parse_keys()["esp"] to one dict per direction: src, dst, spi, enc, int."""
    rows = []
    for e in keys["esp"] if isinstance(keys, dict) else keys:
        for d in ("out", "in"):
            if e.get("spi_" + d) and e.get("enc_" + d) is not None:
                rows.append({"src": e["src_" + d], "dst": e["dst_" + d], "spi": e["spi_" + d],
                             "enc": e["enc_" + d], "int": e["int_" + d]})
    return rows
