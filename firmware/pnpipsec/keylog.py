"""Key log lines in Wireshark's UAT formats, so captures can be decrypted by tshark.

Two UAT tables (files of the same name in the Wireshark configuration directory, e.g.
``$WIRESHARK_CONFIG_DIR/esp_sa``; one record per line, "#" starts a comment):

``ikev2_decryption_table`` (packet-isakmp.c), 8 fields::

    SPIi,SPIr,SK_ei,SK_er,"AES-CBC-128 [RFC3602]",SK_ai,SK_ar,"HMAC_SHA2_256_128 [RFC4868]"

  SPIs and keys are bare hex (byte fields, no quotes, no 0x); the algorithm names are
  quoted strings (enumerated fields).

``esp_sa`` (packet-ipsec.c, Wireshark 4.0), 8 fields, every one quoted::

    "IPv6","SRC","DST","0xSPI","AES-CBC [RFC3602]","0xENCKEY","HMAC-SHA-256-128 [RFC4868]","0xINTKEY"

  SRC/DST are the addresses of the ESP packet (outer header; "*" matches any), the SPI
  is 0x + 8 hex digits. One line per direction (each SA has its own SPI and keys).
  Checked against tshark 4.0.17 (host_tests/test_keylog.py). Newer Wireshark (the 4.5
  development docs show sn_length/sn_upper in the SA record, for ESN) may expect more
  fields per line; not verified here.

Nothing here writes files: the node runtime or the CLI decides where lines go.
"""

import binascii

IKE_ENCR = "AES-CBC-128 [RFC3602]"
IKE_INTEG = "HMAC_SHA2_256_128 [RFC4868]"
ESP_ENCR = "AES-CBC [RFC3602]"
ESP_AUTH = "HMAC-SHA-256-128 [RFC4868]"


def _hex(b):
    return binascii.hexlify(bytes(b)).decode()


def _q(s):
    # UAT quoted string: escape backslash and double quote (our fields never need it)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _addr(a):
    if isinstance(a, str):
        return a
    from pnpipsec.inet import ntop
    return ntop(a)


def ike_line(spi_i, spi_r, sk_ei, sk_er, sk_ai, sk_ar):
    """One ``ikev2_decryption_table`` record (without newline) for our IKE suite."""
    return ",".join((_hex(spi_i), _hex(spi_r), _hex(sk_ei), _hex(sk_er), _q(IKE_ENCR),
                     _hex(sk_ai), _hex(sk_ar), _q(IKE_INTEG)))


def esp_line(family, src, dst, spi, enc_key, int_key):
    """One ``esp_sa`` record (without newline) for one ESP SA (one direction).

    family "IPv6" or "IPv4"; src/dst packed bytes or text (or "*"); spi int or 4 bytes.
    """
    if family not in ("IPv6", "IPv4"):
        raise ValueError("family must be IPv6 or IPv4")
    if not isinstance(spi, int):
        spi = int.from_bytes(bytes(spi), "big")
    return ",".join((_q(family), _q(_addr(src)), _q(_addr(dst)), _q("0x%08x" % spi),
                     _q(ESP_ENCR), _q("0x" + _hex(enc_key)), _q(ESP_AUTH),
                     _q("0x" + _hex(int_key))))
