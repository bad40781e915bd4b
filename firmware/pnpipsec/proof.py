"""Proof later: channel-bound Ed25519 proof over a NULL-authenticated IKE SA (DESIGN s3).

After a NULL-authenticated IKE SA is up, each side sends, in an INFORMATIONAL exchange,
a private-use notify carrying its Ed25519 public key and a signature over exactly the
octets an RFC 7296 AUTH payload of this side would have covered for this IKE SA
(RealMessage | peer nonce | prf(SK_px, ID)). Those octets contain both nonces and this
SA's own SK_p, so a man in the middle, who holds two different IKE SAs, cannot relay a
victim's proof into his other SA: the signature would not verify there. He can only
send a proof of his own key, which pins and approvals will not vouch for. This is
RFC 5387's channel binding, in IKEv2 terms; peers that ignore the notify stay at
ENCRYPTED.

Wire: notify type PROOF (private-use range, RFC 7296 s3.10.1), data =
version (1) | public key (32) | signature (64).
"""

PROOF = 40969   # private use (40960-65535)
VERSION = 1
LENGTH = 97


def make(sign, seed, public, octets):
    """The notify data proving `public` (whose seed signs) for these AUTH octets."""
    return bytes((VERSION,)) + public + sign(seed, octets)


def check(verify, data, octets):
    """The proved public key, or None when the data is malformed or the signature fails."""
    if len(data) != LENGTH or data[0] != VERSION:
        return None
    public = bytes(data[1:33])
    if not verify(public, octets, bytes(data[33:97])):
        return None
    return public
