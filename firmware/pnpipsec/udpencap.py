"""UDP encapsulation of IKE and ESP on one port (RFC 3948).

On port 4500 a datagram is one of:
- a NAT keepalive: the single octet 0xFF (RFC 3948 s2.3);
- IKE: four zero octets (the non-ESP marker) then the IKE message (s2.2);
- ESP: the ESP packet itself, whose first four octets are the nonzero SPI (s2.1).
"""

MARKER = b"\0\0\0\0"
KEEPALIVE = b"\xff"

IKE = "ike"
ESP = "esp"
KEEPALIVE_KIND = "keepalive"
BAD = "bad"


def classify(datagram):
    """Return (kind, body): kind "keepalive", "ike" (marker stripped), "esp" or "bad"."""
    n = len(datagram)
    if n == 1:
        if datagram[0] == 0xFF:
            return KEEPALIVE_KIND, datagram
        return BAD, datagram
    if n < 4:
        return BAD, datagram
    if datagram[0:4] == MARKER:
        return IKE, datagram[4:]
    if n < 8:
        return BAD, datagram
    return ESP, datagram


def frame_ike(msg):
    """Prefix an IKE message with the non-ESP marker for port 4500."""
    return MARKER + msg
