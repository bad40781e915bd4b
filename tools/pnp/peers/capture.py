"""tcpdump capture inside a namespace, and tshark as the judge.

``Capture(ns, "veth0", "udp", path)`` runs ``tcpdump --immediate-mode -U -w`` and on
exit stops it with SIGINT and waits, so the pcap is complete.

``tshark_fields(pcap, fields, ...)`` returns rows of field values.  Decryption keys
go into a "keydir" (used as ``WIRESHARK_CONFIG_DIR``) holding the UAT files
``esp_sa`` and ``ikev2_decryption_table``, written by :func:`write_keydir`.
"""

import os
import signal
import subprocess
import time

TSHARK = "tshark"
TCPDUMP = "tcpdump"

# UAT algorithm names as tshark 4.0 spells them
ESP_ENC_AES_CBC = "AES-CBC [RFC3602]"
ESP_AUTH_SHA256 = "HMAC-SHA-256-128 [RFC4868]"
IKE_ENC_AES_CBC_128 = "AES-CBC-128 [RFC3602]"
IKE_INTEG_SHA256 = "HMAC_SHA2_256_128 [RFC4868]"

ESP_OPTIONS = {"esp.enable_encryption_decode": "TRUE",
               "esp.enable_authentication_check": "TRUE"}


class CaptureError(RuntimeError):
    pass


def available():
    for tool in (TCPDUMP, TSHARK):
        if subprocess.run(["sh", "-c", "command -v " + tool], capture_output=True).returncode:
            return False, tool + " missing (apt-get install tcpdump tshark)"
    return True, ""


class Capture:
    """Context manager: tcpdump in namespace ``ns`` on ``iface`` ("any" allowed)."""

    def __init__(self, ns, iface="veth0", bpf="udp", path=None, snaplen=0):
        self.ns = ns
        self.iface = iface
        self.bpf = bpf
        self.path = path
        self.snaplen = snaplen
        self.proc = None
        self.err_path = (path or "capture") + ".stderr"

    def start(self, timeout=5.0):
        cmd = [TCPDUMP, "-i", self.iface, "--immediate-mode", "-U", "-n", "-s", str(self.snaplen),
               "-w", self.path]
        if self.bpf:
            cmd += self.bpf.split() if isinstance(self.bpf, str) else list(self.bpf)
        err = open(self.err_path, "wb")
        self.proc = self.ns.popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        err.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CaptureError("tcpdump exited: " + self._err())
            if "listening on" in self._err():
                return self
            time.sleep(0.01)
        raise CaptureError("tcpdump did not start: " + self._err())

    def _err(self):
        try:
            with open(self.err_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, timeout=5.0):
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            time.sleep(0.05)     # let the last packets reach the ring buffer
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(2)
        self.proc = None

    def stats(self):
        """tcpdump's own summary ("N packets captured"...), after stop()."""
        return self._err()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


# -- tshark ---------------------------------------------------------------------
def tshark(pcap, args, options=None, keydir=None, timeout=30):
    """Run ``tshark -r pcap -n [-o k:v ...] ARGS``; return CompletedProcess (text).

    ``options``: dict or list of (key, value) pairs (a list allows repeated ``uat`` keys).
    """
    cmd = [TSHARK, "-r", pcap, "-n"]
    items = options.items() if isinstance(options, dict) else (options or ())
    for k, v in items:
        cmd += ["-o", "%s:%s" % (k, v)]
    env = dict(os.environ)
    if keydir:
        env["WIRESHARK_CONFIG_DIR"] = keydir
    env.setdefault("HOME", "/tmp")
    p = subprocess.run(cmd + list(args), capture_output=True, text=True, env=env, timeout=timeout)
    if p.returncode != 0:
        raise CaptureError("tshark failed (%d): %s" % (p.returncode, p.stderr))
    return p


def tshark_fields(pcap, fields, options=None, keydir=None, display_filter=None,
                  decode_as=None, extra_args=()):
    """Rows (lists of str, '' when absent) of ``fields`` for each (filtered) packet.

    Multiple occurrences of a field in one packet are joined with ','.
    ``decode_as``: list like ["udp.port==4500,udpencap"].
    """
    args = ["-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in fields:
        args += ["-e", f]
    if display_filter:
        args += ["-Y", display_filter]
    for d in decode_as or ():
        args += ["-d", d]
    args += list(extra_args)
    out = tshark(pcap, args, options=options, keydir=keydir).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split("\t")
        parts += [""] * (len(fields) - len(parts))
        rows.append(parts)
    return rows


def tshark_verbose(pcap, options=None, keydir=None, display_filter=None):
    """Full packet dissection text (``-V``), for assertions on strings like "incorrect"."""
    args = ["-V"]
    if display_filter:
        args += ["-Y", display_filter]
    return tshark(pcap, args, options=options, keydir=keydir).stdout


# -- key tables -------------------------------------------------------------------
def _hx(b):
    return b.hex() if isinstance(b, (bytes, bytearray)) else str(b).lower().replace("0x", "")


def esp_sa_line(src, dst, spi, enc_key, int_key, enc_alg=ESP_ENC_AES_CBC, auth_alg=ESP_AUTH_SHA256):
    """One ``esp_sa`` UAT record: every field quoted, SPI and keys as 0x-hex."""
    proto = "IPv6" if ":" in src else "IPv4"
    spi = spi if isinstance(spi, str) else "%08x" % spi
    fields = [proto, src, dst, "0x" + _hx(spi).rjust(8, "0"), enc_alg, "0x" + _hx(enc_key),
              auth_alg, "0x" + _hx(int_key)]
    return ",".join('"%s"' % f for f in fields)


def ikev2_line(spi_i, spi_r, sk_ei, sk_er, sk_ai, sk_ar, enc_alg=IKE_ENC_AES_CBC_128,
               integ_alg=IKE_INTEG_SHA256):
    """One ``ikev2_decryption_table`` record: SPIs and keys bare hex, algorithms quoted."""
    return "%s,%s,%s,%s,\"%s\",%s,%s,\"%s\"" % (
        _hx(spi_i).rjust(16, "0"), _hx(spi_r).rjust(16, "0"), _hx(sk_ei), _hx(sk_er), enc_alg,
        _hx(sk_ai), _hx(sk_ar), integ_alg)


def write_keydir(keydir, esp=(), ike=()):
    """Write ``esp_sa`` and ``ikev2_decryption_table`` into keydir (created).

    ``esp``: dicts with src, dst, spi, enc, int (e.g. charon.esp_sa_rows(keys)).
    ``ike``: dicts with spi_i, spi_r, sk_ei, sk_er, sk_ai, sk_ar (e.g. keys["ike"]).
    Returns keydir.  Use with tshark(..., options=ESP_OPTIONS, keydir=keydir).
    """
    os.makedirs(keydir, exist_ok=True)
    with open(os.path.join(keydir, "esp_sa"), "w") as f:
        for r in esp:
            f.write(esp_sa_line(r["src"], r["dst"], r["spi"], r["enc"], r["int"]) + "\n")
    with open(os.path.join(keydir, "ikev2_decryption_table"), "w") as f:
        for e in ike:
            if e.get("spi_i") and e.get("spi_r"):
                f.write(ikev2_line(e["spi_i"], e["spi_r"], e["sk_ei"], e["sk_er"],
                                   e["sk_ai"], e["sk_ar"]) + "\n")
    return keydir


def uat_options(esp=(), ike=()):
    """The same tables as ``-o uat:TABLE:record`` options: a list of (key, value) pairs
    for tshark()'s ``options`` (the ESP decode/check switches included)."""
    pairs = list(ESP_OPTIONS.items())
    for r in esp:
        pairs.append(("uat", "esp_sa:" + esp_sa_line(r["src"], r["dst"], r["spi"], r["enc"], r["int"])))
    for e in ike:
        pairs.append(("uat", "ikev2_decryption_table:" + ikev2_line(
            e["spi_i"], e["spi_r"], e["sk_ei"], e["sk_er"], e["sk_ai"], e["sk_ar"])))
    return pairs


# -- wire analysis ------------------------------------------------------------------
IKE_FIELDS = ["frame.time_epoch", "ip.src", "ipv6.src", "udp.srcport", "udp.dstport",
              "udp.length", "isakmp.ispi", "isakmp.rspi", "isakmp.exchangetype", "isakmp.flags",
              "isakmp.messageid"]
EXCH = {34: "IKE_SA_INIT", 35: "IKE_AUTH", 36: "CREATE_CHILD_SA", 37: "INFORMATIONAL"}


def ike_messages(pcap, keydir=None):
    """IKE messages in a capture: list of dicts time, src, sport, dport, udp_payload
    (bytes of UDP payload incl. any non-ESP marker), ispi, rspi, exch (name), response (bool), mid."""
    rows = tshark_fields(pcap, IKE_FIELDS, keydir=keydir, display_filter="isakmp")
    out = []
    for r in rows:
        t, s4, s6, sp, dp, ulen, ispi, rspi, ex, fl, mid = r[:11]
        ex = int(ex.split(",")[0]) if ex else 0
        fl = int(fl.split(",")[0], 16) if fl else 0
        out.append({"time": float(t), "src": s6 or s4, "sport": int(sp.split(",")[-1]),
                    "dport": int(dp.split(",")[-1]),
                    "udp_payload": int(ulen.split(",")[-1]) - 8 if ulen else 0,
                    "ispi": ispi.split(",")[0].replace("0x", ""), "rspi": rspi.split(",")[0].replace("0x", ""),
                    "exch": EXCH.get(ex, str(ex)), "response": bool(fl & 0x20),
                    "mid": int(mid.split(",")[0], 16 if mid.split(",")[0].startswith("0x") else 10) if mid else 0})
    return out


def handshakes(pcap, keydir=None):
    """One dict per IKE SA started in the capture (by initiator SPI), in order:
    ispi, rspi, wire_time (IKE_SA_INIT request -> last IKE_AUTH response, seconds,
    None if no IKE_AUTH response), bytes (UDP payload bytes of the IKE_SA_INIT and
    IKE_AUTH messages, both directions, incl. the 4-byte non-ESP marker on 4500),
    ike_bytes (same without markers), messages [(exch, is_response, udp_payload)]."""
    msgs = ike_messages(pcap, keydir=keydir)
    out = []
    for req in msgs:
        if req["exch"] != "IKE_SA_INIT" or req["response"]:
            continue
        if any(o["ispi"] == req["ispi"] for o in out):
            continue       # retransmission or INVALID_KE / COOKIE retry with the same SPI
        hs = [m for m in msgs if m["ispi"] == req["ispi"] and m["exch"] in ("IKE_SA_INIT", "IKE_AUTH")]
        auth_resp = [m for m in hs if m["exch"] == "IKE_AUTH" and m["response"]]
        rspi = next((m["rspi"] for m in hs if m["rspi"] and int(m["rspi"], 16)), "")
        markers = sum(4 for m in hs if 4500 in (m["sport"], m["dport"]))
        total = sum(m["udp_payload"] for m in hs)
        out.append({"ispi": req["ispi"], "rspi": rspi,
                    "wire_time": (auth_resp[-1]["time"] - req["time"]) if auth_resp else None,
                    "bytes": total, "ike_bytes": total - markers,
                    "messages": [(m["exch"], m["response"], m["udp_payload"]) for m in hs]})
    return out


def handshake_stats(pcap, keydir=None):
    """handshakes()[0], raising CaptureError when it did not complete."""
    hs = handshakes(pcap, keydir=keydir)
    if not hs or hs[0]["wire_time"] is None:
        raise CaptureError("no complete IKE_SA_INIT + IKE_AUTH in capture")
    return hs[0]


def check_decryption(pcap, keydir):
    """Judge a capture with the keys in ``keydir``.

    Returns counts: esp (ESP packets), esp_good / esp_bad (ICV verdicts),
    ike_encrypted (IKE messages with an SK payload), ike_correct / ike_incorrect
    (tshark's "Integrity Checksum Data ... [correct]" / "[incorrect, should be ...]"),
    ike_decrypted (messages whose inner payloads were dissected, i.e. that carry a
    "Decrypted Data" tree).
    """
    rows = tshark_fields(pcap, ["esp.spi", "esp.icv_good", "esp.icv_bad"], options=ESP_OPTIONS,
                         keydir=keydir, display_filter="esp")
    res = {"esp": len(rows),
           "esp_good": sum(1 for r in rows if r[1] in ("1", "True")),
           "esp_bad": sum(1 for r in rows if r[2] in ("1", "True"))}
    text = tshark_verbose(pcap, options=ESP_OPTIONS, keydir=keydir, display_filter="isakmp")
    res["ike_encrypted"] = text.count("Payload: Encrypted and Authenticated (46)")
    res["ike_decrypted"] = text.count("Decrypted Data (")
    res["ike_correct"] = sum(1 for l in text.splitlines()
                             if "Integrity Checksum Data:" in l and l.rstrip().endswith("[correct]"))
    res["ike_incorrect"] = sum(1 for l in text.splitlines()
                               if "Integrity Checksum Data:" in l and "[incorrect" in l)
    return res
