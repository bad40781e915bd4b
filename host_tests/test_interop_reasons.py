"""`pnp send` says why charon refused us (issue 11, item 2): strongSwan 5.9.8 in a network
namespace configured with proposals we do not speak. Before, `pnp send` said only "no SA
with ... within T s"; now it prints the notify charon sent, and that it came from the peer.

* IKE proposal mismatch: charon answers our IKE_SA_INIT with NO_PROPOSAL_CHOSEN (an
  unauthenticated answer: we keep waiting for a better one until the timeout, then say
  what we got);
* ESP proposal mismatch: the IKE SA comes up, charon refuses the CHILD SA in IKE_AUTH
  with NO_PROPOSAL_CHOSEN, and `pnp send` says so at once.
"""

import time

import pytest

from host_tests.peers import netns as nn
from host_tests.test_interop_strongswan import PSK, charon, env_ok, net, node_config  # noqa: F401

APP_PORT = 9999


@pytest.mark.parametrize("what", ["ike", "esp"])
def test_send_prints_charons_no_proposal_chosen(net, charon, tmp_path, what):  # noqa: F811
    ours, theirs = net.ns
    child = {"esp_proposals": "aes256-sha512"} if what == "esp" else {}
    kw = dict(local_id="charon.example", remote_id="node.example", children={"net": child}, psk=PSK)
    if what == "ike":
        kw["proposals"] = "aes256-sha384-ecp384"
    charon.add_conn("node", theirs.addr(6), "%any", **kw)
    charon.load()
    cfg = node_config(tmp_path, ours, theirs, 6, "psk")
    t0 = time.monotonic()
    r = ours.run([nn.VENV_PYTHON, "-m", "pnp.cli", "send", "--config", cfg, theirs.addr(6),
                  str(APP_PORT), "hello", "--timeout", "3"], check=False)
    wall = time.monotonic() - t0
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("pnp send: no SA with %s" % theirs.addr(6)), r.stderr
    assert "NO_PROPOSAL_CHOSEN (from the peer" in last, r.stderr + charon.log_text()[-2000:]
    if what == "esp":
        assert wall < 2.5, wall          # said at once, not at the timeout
