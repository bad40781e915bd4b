"""Issue 11, items 3, 4, 5 and 8: file modes, sockets, one-line errors and strict
config, and the smaller points (sim's final table, self negotiation, deploy to the
wrong board type, pins creating a folder).

Every user error goes through the real CLI (a subprocess) and must be exactly one
line on stderr naming the file, key or argument, exit 2, no traceback.
"""

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from pnp import config, deploy
from pnp_hostboard.board import BindError, HostBoard
from pnp_hostboard.storage import DirStorage
from pnpipsec.identity import Identity
from pnpipsec.node import Node, NodeError, zero_config

PNP = [sys.executable, "-m", "pnp.cli"]


def run(*args, cwd=None, timeout=60):
    return subprocess.run(PNP + list(args), capture_output=True, text=True, timeout=timeout, cwd=cwd)


def one_line_exit_2(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def free_udp_port():
    """A port free on both families' wildcard addresses (the node binds both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s4:
            s4.bind(("0.0.0.0", 0))
            port = s4.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s6:
                    s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    s6.bind(("::", port))
            except OSError:
                continue
            return port


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def node_config(tmp_path, extra="", name="node.toml"):
    ike, natt = free_udp_port(), free_udp_port()
    p = tmp_path / name
    p.write_text('state = "st"\nike_port = %d\nnatt_port = %d\n%s' % (ike, natt, extra))
    return str(p), ike, natt


def start_node(cfg, timeout=15):
    """`pnp node` until it says ready; returns the Popen (or the finished process)."""
    proc = subprocess.Popen(PNP + ["node", "--config", cfg], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    line = proc.stdout.readline()       # "ready", or "" when it exits
    assert time.monotonic() < deadline
    return proc, line.strip()


def stop_node(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


# ---------------------------------------------------------------- item 3: files
def test_keygen_state_is_private(tmp_path, umask022):
    """Before: st/identity (the seed) was -rw-r--r-- in a 0755 folder."""
    st = tmp_path / "st"
    r = run("keygen", "--state", str(st))
    assert r.returncode == 0, r.stderr
    assert mode(st) == 0o700
    assert mode(st / "identity") == 0o600
    assert mode(st / "identity.pub.pem") == 0o600


def test_node_state_is_private(tmp_path, umask022):
    cfg, _, _ = node_config(tmp_path)
    proc, line = start_node(cfg)
    try:
        assert line == "ready", stop_node(proc)
        assert mode(tmp_path / "st") == 0o700
        assert mode(tmp_path / "st" / "identity") == 0o600
    finally:
        stop_node(proc)


def test_store_writes_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        st = DirStorage(str(tmp_path / "st"))
        st.write("pins", b"x")
        st.write("identity", b"y")
    finally:
        os.umask(old)
    assert mode(tmp_path / "st") == 0o700
    assert mode(tmp_path / "st" / "pins") == 0o600
    assert mode(tmp_path / "st" / "identity") == 0o600


def test_open_identity_warns_loudly(tmp_path):
    st = tmp_path / "st"
    assert run("keygen", "--state", str(st)).returncode == 0
    os.chmod(st / "identity", 0o644)
    r = run("keygen", "--state", str(st))
    assert r.returncode == 0                # a warning, not a refusal
    assert "WARNING" in r.stderr and str(st / "identity") in r.stderr and "0644" in r.stderr
    assert "chmod 600" in r.stderr
    os.chmod(st / "identity", 0o600)
    r = run("keygen", "--state", str(st))
    assert r.returncode == 0 and r.stderr == ""


# ---------------------------------------------------------------- item 4: sockets
def test_unicast_sockets_do_not_reuse_addresses():
    async def go():
        board = HostBoard(bind6=None, bind4="127.0.0.1")
        s = await board.udp(0)
        try:
            for tr in s._transports.values():
                assert tr.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
        finally:
            s.close()
    asyncio.run(go())


def test_second_node_on_the_same_ports_is_refused(tmp_path):
    """Before: SO_REUSEADDR let the second node bind too, and it also said `ready`."""
    cfg, ike, natt = node_config(tmp_path)
    first, line = start_node(cfg)
    try:
        assert line == "ready"
        # the same ports from another state folder (the same folder is refused sooner,
        # by its control socket: test_control.py)
        other = tmp_path / "other.toml"
        other.write_text(open(cfg).read().replace('state = "st"', 'state = "st2"'))
        r = run("node", "--config", str(other), "-q", timeout=20)   # (-q: no INFO lines)
        err = one_line_exit_2(r, "address already in use")
        assert str(natt) in err or str(ike) in err
        assert "ready" not in r.stdout
    finally:
        stop_node(first)


def test_taken_ipv4_port_is_an_error_not_ipv6_only(tmp_path):
    """Before: the IPv4 bind failed quietly and the node ran IPv6-only."""
    cfg, ike, natt = node_config(tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("0.0.0.0", natt))
        proc, line = start_node(cfg)
        out, err = stop_node(proc)
    assert line != "ready", err
    assert proc.returncode == 2
    assert "0.0.0.0:%d" % natt in err and "address already in use" in err
    assert "Traceback" not in err


def test_bind_key(tmp_path):
    cfg = config.load(node_config(tmp_path, 'bind = ["127.0.0.1"]\n')[0])
    assert cfg.bind == ["127.0.0.1"]
    board = HostBoard.binding(cfg.bind)
    assert board.bind4 == "127.0.0.1" and board.bind6 is None

    async def go():
        s = await board.udp(cfg.natt_port)
        try:
            assert list(s._transports) == [socket.AF_INET]
            assert s._transports[socket.AF_INET].sock.getsockname() == ("127.0.0.1", cfg.natt_port)
        finally:
            s.close()
    asyncio.run(go())
    assert HostBoard.binding([]).bound() == ["::", "0.0.0.0"]


def test_bound_address_that_is_not_ours_is_an_error():
    async def go():
        with pytest.raises(BindError) as ei:
            await HostBoard(bind6=None, bind4="192.0.2.77").udp(free_udp_port())
        assert "192.0.2.77" in str(ei.value) and "not one of this host's" in str(ei.value)
    asyncio.run(go())


def test_send_to_our_own_address_is_refused(tmp_path):
    """Before: `pnp send ... 127.0.0.9` negotiated with itself and reported ENCRYPTED."""
    cfg, _, _ = node_config(tmp_path, "zero_config = true\n")
    r = run("send", "--config", cfg, "127.0.0.9", "7", "hello", "--timeout", "3", "--no-reply")
    one_line_exit_2(r, "127.0.0.9", "own address")
    assert not (tmp_path / "st").exists()      # refused before the node started


def test_node_drops_its_own_ike_sa_init():
    """The node's own check (any path back to itself: an alias, a hairpin NAT): its
    IKE_SA_INIT coming back is dropped and the attempt fails, naming the reason."""
    async def go():
        port = free_udp_port()
        node = Node(HostBoard(), Identity(os.urandom(32)), ike_port=port, natt_port=port,
                    accept_any=zero_config())
        await node.start()
        try:
            with pytest.raises(NodeError) as ei:
                await node.connect("127.0.0.9", timeout=3)
            assert "this node itself" in str(ei.value)
            assert node.stats["own_init"] >= 1
            assert node.level("127.0.0.9") == 0
            assert not [sa for sa in node.engine.sas.values() if sa.state == "established"]
        finally:
            await node.stop()
    asyncio.run(go())


def test_peer_in_bind_is_refused(tmp_path):
    with pytest.raises(config.ConfigError) as ei:
        config.load(node_config(tmp_path, 'bind = ["127.0.0.1"]\n[[peer]]\naddress = "127.0.0.1"\n')[0])
    assert "peer[0].address" in str(ei.value) and "our own address" in str(ei.value)


# ---------------------------------------------------------------- item 5: errors and config
CLI_CONFIG_CASES = {
    # case: (config text, words the one line holds) -- the file's path is always checked
    "state-int": ("state = 5\n", ["state", "must be a string"]),
    "childless-yes": ('[[peer]]\naddress = "127.0.0.2"\nchildless = "yes"\n', ["peer[0].childless", "true or false"]),
    "childless-false-str": ('[[peer]]\naddress = "127.0.0.2"\nchildless = "false"\n', ["peer[0].childless", "true or false"]),
    "psk-int": ('[[peer]]\naddress = "127.0.0.2"\nauth = "psk"\npsk = 12345\n', ["peer[0].psk", "must be a string"]),
    "psk-short": ('[[peer]]\naddress = "127.0.0.2"\nauth = "psk"\npsk = "12345"\n', ["peer[0].psk", "too short", "16"]),
    "psk-without-auth": ('[[peer]]\naddress = "127.0.0.2"\npsk = "0123456789abcdef"\n', ["peer[0].psk", "auth"]),
    "duplicate-peer": ('[[peer]]\naddress = "fd00::1"\n[[peer]]\naddress = "fd00:0::1"\n',
                       ["peer[1].address", "already peer[0]"]),
    "address-any": ('[[peer]]\naddress = "any"\n', ["peer[0].address", "not an IPv4 or IPv6 address"]),
    "address-unspecified": ('[[peer]]\naddress = "0.0.0.0"\n', ["peer[0].address", "unspecified"]),
    "address-int": ('[[peer]]\naddress = 7\n', ["peer[0].address", "not an IPv4 or IPv6 address"]),
    "addresses-any": ('addresses = ["any"]\n', ["addresses", "not an IPv4 or IPv6 address"]),
    "bind-any": ('bind = ["any"]\n', ["bind", "not an IPv4 or IPv6 address"]),
    "bind-two-ipv4": ('bind = ["127.0.0.1", "127.0.0.2"]\n', ["bind", "at most one IPv6 and one IPv4"]),
}


@pytest.mark.parametrize("case", sorted(CLI_CONFIG_CASES))
def test_config_error_is_one_line(tmp_path, case):
    text, words = CLI_CONFIG_CASES[case]
    cfg = tmp_path / "node.toml"
    cfg.write_text(text)
    r = run("node", "--config", str(cfg), timeout=20)
    one_line_exit_2(r, str(cfg), *words)
    assert not (tmp_path / "st").exists()


def test_config_is_a_directory(tmp_path):
    r = run("node", "--config", str(tmp_path))
    one_line_exit_2(r, str(tmp_path), "not a regular file")


def test_corrupt_identity_under_node(tmp_path):
    cfg, _, _ = node_config(tmp_path)
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "identity").write_bytes(b"junk\n")
    r = run("node", "--config", cfg, timeout=20)
    one_line_exit_2(r, str(tmp_path / "st" / "identity"), "not a pnpipsec identity")
    assert (tmp_path / "st" / "identity").read_bytes() == b"junk\n"


@pytest.mark.parametrize("cmd", ["send", "connect"])
@pytest.mark.parametrize("addr", ["not-an-ip", "10.0.0.300", "::", ""])
def test_peer_argument_not_an_ip(tmp_path, cmd, addr):
    cfg, _, _ = node_config(tmp_path)
    args = [cmd, "--config", cfg, addr] + (["7", "x"] if cmd == "send" else []) + ["--timeout", "2"]
    r = run(*args)
    one_line_exit_2(r, "pnp %s: address" % cmd)
    assert not (tmp_path / "st").exists()


def test_vboard_state_is_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("a file\n")
    r = run("vboard", "--state", str(f))
    one_line_exit_2(r, str(f), "not a directory")
    assert f.read_text() == "a file\n"


def test_zero_config_defaults_to_true(tmp_path):
    """Plug and play: a config that says nothing accepts and probes any peer."""
    cfg = config.load(node_config(tmp_path)[0])
    assert cfg.accept_any is not None and cfg.accept_any.auth == "null"
    off = config.load(node_config(tmp_path, "zero_config = false\n")[0])
    assert off.accept_any is None
    own = config.load(node_config(tmp_path, '[accept_any]\nauth = "psk"\npsk = "0123456789abcdef"\n')[0])
    assert own.accept_any.auth == "psk"     # [accept_any] alone replaces the default


# ---------------------------------------------------------------- item 8: smaller points
def test_pins_never_creates_the_state_folder(tmp_path):
    typo = tmp_path / "TYPO"
    for action in (["list"], ["forget", "10.0.0.2"], ["approve", "10.0.0.2", "--key", "00" * 32]):
        r = run("pins", "--state", str(typo), *action)
        one_line_exit_2(r, str(typo), "no such state folder")
        assert not typo.exists()


def test_sim_final_table_is_the_run_not_the_shutdown(tmp_path, umask022):
    """Before: the final table was drawn after the nodes stopped, when stopping had
    deleted the SAs, so pairs that were AUTHENTICATED read CLEAR (and a level drop
    between the end of the scenario and stop could enter the events). The final table
    now shows the view taken when the scenario ended (view.json's), and no level
    falls in the events of a healthy run. Also checks the modes the sim writes."""
    out = tmp_path / "sim"
    r = run("sim", "--out", str(out), "--duration", "3", "--seed", "1", timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    view = json.load(open(out / "view.json"))
    final = r.stdout[r.stdout.index("pnp sim  final"):].splitlines()
    rows = {}
    for line in final[2:]:
        if line.startswith("legacy") or line.startswith("events:"):
            break
        parts = line.split()
        if len(parts) >= 3 and parts[0] in view["nodes"]:
            rows[(parts[0], parts[1])] = parts[2]
    expected = {(n, p): e["level"] for n, peers in view["nodes"].items() for p, e in peers.items()}
    assert rows == expected
    assert rows[("laptop", "camera")] == "AUTHENTICATED" and rows[("camera", "display")] == "AUTHENTICATED"
    order = ["CLEAR", "ENCRYPTED", "AUTHENTICATED"]
    drops = [e for e in view["timeline"] if order.index(e["to"]) < order.index(e["from"])]
    assert drops == []
    assert " -> CLEAR" not in r.stdout
    for n in ("camera", "display", "laptop"):
        assert mode(out / n) == 0o700 and mode(out / n / "identity") == 0o600
    assert mode(out / "keys") == 0o700
    for f in ("esp_sa", "ikev2_decryption_table"):
        assert mode(out / "keys" / f) == 0o600


class _FakeMpremote:
    """Stands in for mpremote: the device says `platform`; records every other run."""

    def __init__(self, platform):
        self.platform = platform
        self.runs = []

    def __call__(self, args, timeout, log, echo=True):
        if args[-1].startswith("import sys; print('PLATFORM'"):
            return 0, ["PLATFORM %s" % self.platform]
        self.runs.append(args)
        return 0, ["selftest ok"]


def _deploy_args(*argv):
    import argparse
    p = argparse.ArgumentParser()
    deploy.add_arguments(p)
    return p.parse_args(list(argv))


def test_deploy_refuses_another_board_type(monkeypatch, capsys):
    """Before: `pnp deploy --board esp32` to a wasm board copied and said `deployed`."""
    fake = _FakeMpremote("webassembly")
    monkeypatch.setattr(deploy, "_run_mpremote", fake)
    rc = deploy.run(_deploy_args("--port", "/dev/pts/99", "--board", "esp32", "--no-compile"))
    err = capsys.readouterr()
    assert rc == 2, err
    assert "--board esp32" in err.err and "wasm board" in err.err and "nothing was changed" in err.err
    assert "deployed" not in err.out + err.err
    assert fake.runs == []                   # nothing copied
    fake = _FakeMpremote("webassembly")
    monkeypatch.setattr(deploy, "_run_mpremote", fake)
    assert deploy.run(_deploy_args("--port", "/dev/pts/99", "--board", "wasm", "--no-compile",
                                   "--no-selftest")) == 0
    assert fake.runs                         # the matching type deploys


def test_deploy_esp32_to_the_wasm_vboard(tmp_path, require):
    """The same on the real virtual board (MicroPython WebAssembly behind a pty)."""
    from pnp import vboard
    require(not vboard.prerequisites(), "virtual board: " + "; ".join(vboard.prerequisites()))
    proc, dev = vboard.start(str(tmp_path / "vb"))
    try:
        before = sorted(os.listdir(tmp_path / "vb" / "fs")) if (tmp_path / "vb" / "fs").exists() else []
        r = run("deploy", "--port", dev, "--board", "esp32", "--no-compile", "--no-selftest", timeout=120)
        one_line_exit_2(r, "--board esp32", "wasm board")
        assert "deployed" not in r.stdout
    finally:
        vboard.stop(proc)
    after = sorted(os.listdir(tmp_path / "vb" / "fs")) if (tmp_path / "vb" / "fs").exists() else []
    assert "lib" not in after or "lib" in before
