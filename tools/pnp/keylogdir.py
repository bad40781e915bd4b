"""Opt-in key log: a folder Wireshark reads as its configuration directory.

`WIRESHARK_CONFIG_DIR=DIR wireshark capture.pcap` (or tshark) then decrypts our IKE
and ESP traffic. Secrets are written only here, and only when the user asked.
"""

from __future__ import annotations

import os

from pnpipsec import keylog


class KeylogDir:
    def __init__(self, path: str):
        self.path = path
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o700)

    def _append(self, name: str, line: str) -> None:
        fn = os.path.join(self.path, name)
        fd = os.open(fn, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(line.rstrip("\n") + "\n")

    def ike(self, sa) -> None:
        self._append("ikev2_decryption_table",
                     keylog.ike_line(sa.spi_i, sa.spi_r, sa.sk_ei, sa.sk_er, sa.sk_ai, sa.sk_ar))

    def esp(self, child) -> None:
        fam = "IPv6" if ":" in child.peer_addr[0] else "IPv4"
        # Wildcard addresses: NAT-T may change the outer addresses; the SPI identifies the SA.
        self._append("esp_sa", keylog.esp_line(fam, "*", "*", child.spi_out, child.enc_out, child.int_out))
        self._append("esp_sa", keylog.esp_line(fam, "*", "*", child.spi_in, child.enc_in, child.int_in))
