"""Key log lines, judged by tshark: it must decrypt our ESP and IKE with them.

The oracle is Wireshark itself (Debian 12: tshark 4.0). We write a pcap (LINKTYPE_RAW)
with packets built by pnpipsec.esp / pnpipsec.inet (ESP) or by the `cryptography`
package (an IKEv2 SK payload), put the key log lines in files named `esp_sa` and
`ikev2_decryption_table` in a WIRESHARK_CONFIG_DIR, and ask tshark what it sees.
Without tshark these tests skip loudly, unless CI=true, where they fail.
"""

import hashlib
import hmac as std_hmac
import os
import shutil
import struct
import subprocess

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from host_tests.oracles import CryptographyAES
from pnpipsec import esp, inet, keylog

TSHARK = shutil.which("tshark")


def need_tshark():
    if TSHARK:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("tshark is required in CI (apt install tshark)")
    pytest.skip("!!! tshark not installed: the Wireshark key-log oracle did NOT run !!!")


def hmac256(key, msg):
    return std_hmac.new(key, msg, hashlib.sha256).digest()


def write_pcap(path, packets):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))  # raw IP
        for i, p in enumerate(packets):
            f.write(struct.pack("<IIII", 1700000000 + i, 0, len(p), len(p)) + p)


def tshark_fields(tmp_path, pcap, fields, extra=()):
    cmd = [TSHARK, "-n", "-r", str(pcap),
           "-o", "esp.enable_encryption_decode:TRUE",
           "-o", "esp.enable_authentication_check:TRUE",
           "-o", "udp.check_checksum:TRUE",
           "-o", "ip.check_checksum:TRUE",
           "-T", "fields", "-E", "separator=|"]
    cmd += list(extra)
    for f in fields:
        cmd += ["-e", f]
    env = dict(os.environ, WIRESHARK_CONFIG_DIR=str(tmp_path / "cfg"), HOME=str(tmp_path))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return [line.split("|") for line in r.stdout.splitlines()]


# ------------------------------------------------------------------ format

def test_esp_line_format():
    line = keylog.esp_line("IPv6", inet.pton("fd00:1::1"), "fd00:1::2", 0xC1234567,
                           bytes(range(16)), bytes(range(32)))
    assert line == ('"IPv6","fd00:1::1","fd00:1::2","0xc1234567","AES-CBC [RFC3602]",'
                    '"0x000102030405060708090a0b0c0d0e0f","HMAC-SHA-256-128 [RFC4868]",'
                    '"0x' + bytes(range(32)).hex() + '"')
    line = keylog.esp_line("IPv4", b"\x0a\x63\x01\x01", "*", b"\x00\x00\x10\x01",
                           bytes(16), bytes(32))
    assert line.startswith('"IPv4","10.99.1.1","*","0x00001001",')
    with pytest.raises(ValueError):
        keylog.esp_line("IPX", "a", "b", 1, bytes(16), bytes(32))


def test_ike_line_format():
    line = keylog.ike_line(b"\x01" * 8, b"\x02" * 8, b"\x03" * 16, b"\x04" * 16,
                           b"\x05" * 32, b"\x06" * 32)
    f = line.split(",")
    assert len(f) == 8
    assert f[0] == "01" * 8 and f[1] == "02" * 8
    assert f[4] == '"AES-CBC-128 [RFC3602]"'
    assert f[7] == '"HMAC_SHA2_256_128 [RFC4868]"'
    assert f[5] == "05" * 32


# ------------------------------------------------------------------ tshark oracle

def _esp_capture(tmp_path, family, log_keys, n=4, wildcard=False):
    if family == "IPv6":
        osrc, odst = inet.pton("fd00:1::1"), inet.pton("fd00:1::2")
        isrc, idst = inet.pton("fd00:99::1"), inet.pton("2001:db8::7")
    else:
        osrc, odst = inet.pton("10.99.1.1"), inet.pton("10.99.1.2")
        isrc, idst = inet.pton("192.168.7.1"), inet.pton("192.168.8.2")
    spi = 0xC1234567
    ek, ik = os.urandom(16), os.urandom(32)
    out = esp.EspOut(spi, ek, ik, CryptographyAES(), os.urandom, hmac=hmac256)
    pkts = []
    for i in range(n):
        nh, inner = inet.build_ip_udp(isrc, idst, 40000 + i, 41234, b"payload %d" % i * (i + 1))
        pkts.append(inet.build_ip_udp(osrc, odst, 4500, 4500, out.seal(inner, nh))[1])
    pcap = tmp_path / "esp.pcap"
    write_pcap(pcap, pkts)
    (tmp_path / "cfg").mkdir()
    lk = log_keys(ek, ik)
    (tmp_path / "cfg" / "esp_sa").write_text(
        "# pnpipsec key log\n" + keylog.esp_line(family, "*" if wildcard else osrc,
                                                 "*" if wildcard else odst,
                                                 spi, lk[0], lk[1]) + "\n")
    return pcap, spi, inet.ntop(isrc), n


@pytest.mark.parametrize("family", ["IPv6", "IPv4"])
def test_tshark_decrypts_our_esp(tmp_path, family):
    need_tshark()
    pcap, spi, isrc, n = _esp_capture(tmp_path, family, lambda ek, ik: (ek, ik))
    ipf = "ipv6.src" if family == "IPv6" else "ip.src"
    rows = tshark_fields(tmp_path, pcap, ["esp.spi", "esp.sequence", "esp.icv_good",
                                          "esp.icv_bad", "udp.checksum.status", ipf, "data"])
    assert len(rows) == n
    for i, (spi_s, seq, good, bad, csum, srcs, data) in enumerate(rows):
        assert int(spi_s, 16) == spi
        assert int(seq) == i + 1
        assert good == "1" and bad in ("", "0"), rows
        # outer and inner UDP checksums (pnpipsec.inet) both "Good" (1)
        assert csum == "1,1", rows
        assert srcs.split(",")[1] == isrc          # inner packet was decrypted
        assert bytes.fromhex(data) == b"payload %d" % i * (i + 1)


def test_tshark_wildcard_addresses(tmp_path):
    need_tshark()
    pcap, _, _, n = _esp_capture(tmp_path, "IPv4", lambda ek, ik: (ek, ik), wildcard=True)
    rows = tshark_fields(tmp_path, pcap, ["esp.icv_good"])
    assert rows == [["1"]] * n


def test_tshark_negative_control_wrong_key(tmp_path):
    need_tshark()
    pcap, _, _, n = _esp_capture(tmp_path, "IPv6", lambda ek, ik: (ek, bytes(32)))
    rows = tshark_fields(tmp_path, pcap, ["esp.icv_good", "esp.icv_bad"])
    assert len(rows) == n
    for good, bad in rows:
        assert good in ("", "0") and bad == "1", rows


def _ike_capture(tmp_path, log_sk_ai=None):
    """An IKE_AUTH-shaped request with an SK payload holding N(INITIAL_CONTACT),
    built with the cryptography package (RFC 7296 s3.14)."""
    spi_i, spi_r = os.urandom(8), os.urandom(8)
    sk_ei, sk_er = os.urandom(16), os.urandom(16)
    sk_ai, sk_ar = os.urandom(32), os.urandom(32)
    inner = struct.pack(">BBHBBH", 0, 0, 8, 0, 0, 16384)
    padlen = (-(len(inner) + 1)) % 16
    plain = inner + bytes(padlen) + bytes([padlen])
    iv = os.urandom(16)
    e = Cipher(algorithms.AES(sk_ei), modes.CBC(iv)).encryptor()
    ct = e.update(plain) + e.finalize()
    sklen = 4 + 16 + len(ct) + 16
    msg = (spi_i + spi_r + struct.pack(">BBBBII", 46, 0x20, 35, 0x08, 1, 28 + sklen)
           + struct.pack(">BBH", 41, 0, sklen) + iv + ct)
    msg += hmac256(sk_ai, msg)[:16]
    pkt = inet.build_ipv4_udp(inet.pton("10.99.1.1"), inet.pton("10.99.1.2"), 500, 500, msg)
    pcap = tmp_path / "ike.pcap"
    write_pcap(pcap, [pkt])
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "ikev2_decryption_table").write_text(
        keylog.ike_line(spi_i, spi_r, sk_ei, sk_er, log_sk_ai or sk_ai, sk_ar) + "\n")
    return pcap


def test_tshark_decrypts_ike_with_our_line(tmp_path):
    need_tshark()
    pcap = _ike_capture(tmp_path)
    rows = tshark_fields(tmp_path, pcap, ["isakmp.notify.msgtype",
                                          "isakmp.ikev2.integrity_checksum",
                                          "ip.checksum.status", "udp.checksum.status"])
    assert rows == [["16384", "", "1", "1"]], rows


def test_tshark_ike_negative_control(tmp_path):
    need_tshark()
    pcap = _ike_capture(tmp_path, log_sk_ai=bytes(32))
    env = dict(os.environ, WIRESHARK_CONFIG_DIR=str(tmp_path / "cfg"), HOME=str(tmp_path))
    r = subprocess.run([TSHARK, "-n", "-r", str(pcap), "-V"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert "incorrect" in r.stdout
