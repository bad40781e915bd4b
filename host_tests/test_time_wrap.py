"""400 simulated days of two real nodes on ticks that wrap at 2^30 ms (32 wraps).

The world is host_tests/mp/test_time_mp.py (the same one runs for 13 days inside every
MicroPython port): A and B talk hourly, lose each other for 3 minutes every 10 days
(liveness check, retransmissions, give-up, a new SA), rekey CHILD SAs daily and IKE SAs
every few days, while a legacy host C sends A clear datagrams (discovery, the doubling
negative cache). The oracle is the same world on a clock that never wraps
(pnpipsec.ticks widened to 62 bits): every datagram must leave at the same simulated
millisecond, and the schedule checks of check_schedule() must hold. OpenSSL's X25519 /
Ed25519 (the host board's) keep it fast; the protocol code is the device's.
"""

import os
import sys

from pnp_hostboard.crypto import CryptographyAES, fast_ed25519, fast_x25519

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "mp"))
import test_time_mp as world  # noqa: E402

DAYS = 400


def _run(t0, wide):
    return world.simulate(DAYS, t0, CryptographyAES(), fast_x25519, fast_ed25519, wide=wide)


def test_400_days_across_32_wraps_keep_every_interval():
    w = _run(world.ticks.MASK - 60000, False)     # the first wrap a minute in
    ref = _run(0, True)
    assert w.t >= DAYS * world.DAY and w.t // world.ticks.PERIOD >= 32
    # the same datagrams, each at the same simulated millisecond (a digest of them all)
    assert w.rec.n == ref.rec.n and w.rec.digest() == ref.rec.digest()
    assert w.levels == ref.levels
    runs, rekeys, probes = world.check_schedule(w, DAYS)
    assert runs >= 40 and rekeys >= 400 and probes >= 8000
