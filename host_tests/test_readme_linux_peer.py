"""The README's "A Linux box joins a node" files, run as they are written.

The README blocks ```conf title=strongswan.conf, ```conf title=swanctl.conf,
```toml title=node.toml and ```ini title=pnp-node.service are extracted verbatim. The
README's addresses are the ones the test builds: two network namespaces joined by a veth
pair, the node at fd00:1::1 and the Linux box at fd00:1::2 (Netns prefix6="fd00:1::").

* charon (pnp.peers.charon.Charon, conf_text=) runs with the README's strongswan.conf
  in place of the harness's; its swanctl.conf is the README's, loaded with
  `swanctl --load-all`. Charon listens on its default vici socket, /var/run/charon.vici,
  which the harness's private /run makes WORKDIR/run/charon.vici.
* The node is the unit's ExecStart: `pnp node --config /etc/pnpipsec/node.toml`, run as
  `python -m pnp node ...` (this checkout's code) with the one path that cannot be used
  here, the config, pointed at the README's node.toml written into a temp folder; the
  test adds `--echo 9999` so that a datagram can come back.
* `swanctl --initiate --child pnp` as the README says; the CHILD SA must be INSTALLED,
  a datagram from the box to the node must come back through the tunnel, and the capture
  on the veth must show ESP and no clear datagram of the application's port.
* The unit passes `systemd-analyze verify` (in a temporary root where
  /usr/local/bin/pnp is the venv's pnp), and its ExecStart's command line parses.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from host_tests.peers import capture as cap
from host_tests.peers import charon as ch
from host_tests.peers import netns as nn
from host_tests.peers import require_real_peers
from host_tests.peers.udpapp import CLIENT

from .conftest import REPO, VENV, missing
from .test_readme import titled

NODE, BOX = "fd00:1::1", "fd00:1::2"
APP_PORT = 9999


def unit_fields(text):
    """{section: {key: value}} of a systemd unit (no continuation lines in ours)."""
    out, sec = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"\[(\w+)\]$", line)
        if m:
            sec = out.setdefault(m.group(1), {})
            continue
        k, v = line.split("=", 1)
        sec[k.strip()] = v.strip()
    return out


def test_the_readme_blocks_agree():
    """The addresses and secrets of the four files fit each other (before running them)."""
    sw, conf, node, unit = (titled(t) for t in ("swanctl.conf", "strongswan.conf", "node.toml",
                                                "pnp-node.service"))
    for word in ("kdf", "kernel-libipsec", "kernel-netlink", "allow_peer_ts = yes", "fwmark = 0x42",
                 "fwmark = !0x42", "vici"):
        assert word in conf, word
    assert conf.index("kernel-libipsec") < conf.index("kernel-netlink")
    for line in ("local_addrs = %s" % BOX, "remote_addrs = %s" % NODE, "proposals = aes128-sha256-x25519",
                 "encap = yes", "esp_proposals = aes128-sha256", "mode = tunnel"):
        assert line in sw, line
    secret = re.search(r'secret = "([^"]+)"', sw).group(1)
    assert 'psk = "%s"' % secret in node
    assert 'address = "%s"' % BOX in node and 'addresses = ["%s"]' % NODE in node
    u = unit_fields(unit)
    assert shlex.split(u["Service"]["ExecStart"])[1:] == ["node", "--config", "/etc/pnpipsec/node.toml"]


def test_systemd_unit_verifies(tmp_path):
    unit = titled("pnp-node.service")
    argv = shlex.split(unit_fields(unit)["Service"]["ExecStart"])
    pnp = VENV.bin("pnp")
    # the command line parses with the installed entry point
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(REPO, "tools"), REPO,
                                                        os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "pnp"] + argv[1:] + ["--help"], capture_output=True, text=True,
                       env=env, timeout=30)
    assert r.returncode == 0 and "--config" in r.stdout, r.stderr
    if pnp:
        r = subprocess.run([pnp, "node", "--help"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    sa = shutil.which("systemd-analyze")
    if sa is None:
        missing("systemd-analyze not installed (Debian package systemd)")
    root = tmp_path / "root"
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/pnpipsec").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    os.symlink("/usr/lib/systemd", root / "usr/lib/systemd")     # the standard targets
    exe = root / argv[0].lstrip("/")
    exe.write_text("#!/bin/sh\nexec %s -m pnp \"$@\"\n" % sys.executable)
    exe.chmod(0o755)
    path = root / "etc/systemd/system/pnp-node.service"
    path.write_text(unit)
    r = subprocess.run([sa, "verify", "--root", str(root), str(path)], capture_output=True, text=True, timeout=60)
    problems = [l for l in (r.stdout + r.stderr).splitlines() if "pnp-node.service" in l]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


@pytest.fixture
def net():
    require_real_peers(charon=True, capture=True)
    with nn.Netns(2, net_id=0x11, prefix6="fd00:1::") as n:
        assert (n.ns[0].ip6, n.ns[1].ip6) == (NODE, BOX)
        yield n
    assert not nn.leftover_namespaces()


def test_linux_box_joins_a_node_with_the_readme_files(net, tmp_path):
    node_ns, box = net.ns
    charon = ch.Charon(box, str(tmp_path / "box"), conf_text=titled("strongswan.conf"))
    etc = tmp_path / "etc-pnpipsec"
    etc.mkdir()
    (etc / "node.toml").write_text(titled("node.toml"))
    argv = shlex.split(unit_fields(titled("pnp-node.service"))["Service"]["ExecStart"])
    argv = [str(etc / "node.toml") if a == "/etc/pnpipsec/node.toml" else a for a in argv[1:]]
    node = node_ns.popen_python(["-m", "pnp"] + argv + ["--echo", str(APP_PORT)], stdout=subprocess.PIPE,
                                stderr=open(tmp_path / "node.err", "w"), text=True)
    charon.start()
    try:
        assert node.stdout.readline().strip() == "ready", open(tmp_path / "node.err").read()
        with open(os.path.join(charon.swanctl_dir, "swanctl.conf"), "w") as f:
            f.write(titled("swanctl.conf"))
        charon.swanctl("--load-all")
        pcap = str(tmp_path / "join.pcap")
        with cap.Capture(box, "veth0", "udp", pcap):
            r = charon.swanctl("--initiate", "--child", "pnp", "--timeout", "10", check=False, timeout=20)
            assert r.returncode == 0, r.stdout + r.stderr + open(tmp_path / "node.err").read()
            sas = charon.list_sas()
            assert sas and sas[0]["state"] == "ESTABLISHED" and sas[0]["name"] == "pnp-node1", sas
            kid = sas[0]["children"][0]
            assert kid["state"] == "INSTALLED" and kid["mode"] == "TUNNEL-in-UDP", kid   # UDP-encapsulated
            out = box.run([nn.VENV_PYTHON, "-c", CLIENT, NODE, str(APP_PORT), "hello-from-linux"], check=False)
            assert out.stdout.strip() == "hello-from-linux", out.stderr   # the node echoed it through the SA
            kid = charon.list_sas()[0]["children"][0]
            assert kid["packets_in"] >= 1 and kid["packets_out"] >= 1, kid
        assert node.poll() is None
    finally:
        node.terminate()
        rc = node.wait(timeout=10)
        charon.stop()
    assert rc == 0, open(tmp_path / "node.err").read()          # SIGTERM: a clean stop, as under systemd
    assert cap.tshark_fields(pcap, ["frame.number"], display_filter="udp.port == %d" % APP_PORT) == []
    assert len(cap.tshark_fields(pcap, ["frame.number"], display_filter="esp")) >= 2
