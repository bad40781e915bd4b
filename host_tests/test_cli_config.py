"""`pnp` CLI: keygen output and clear errors for bad configs and arguments."""

import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization

from pnp import config

PNP = [sys.executable, "-m", "pnp.cli"]


def run(*args, cwd=None):
    return subprocess.run(PNP + list(args), capture_output=True, text=True, timeout=60, cwd=cwd)


def test_keygen_creates_then_keeps(tmp_path):
    st = tmp_path / "st"
    r1 = run("keygen", "--state", str(st))
    assert r1.returncode == 0, r1.stderr
    assert "created identity" in r1.stdout
    r2 = run("keygen", "--state", str(st))
    assert r2.returncode == 0 and "existing identity" in r2.stdout
    line = lambda out, k: [l for l in out.splitlines() if l.startswith(k)][0].split()[-1]  # noqa: E731
    assert line(r1.stdout, "public key") == line(r2.stdout, "public key")
    pem = (st / "identity.pub.pem").read_bytes()
    key = serialization.load_pem_public_key(pem)
    assert key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex() == line(r1.stdout, "public key")


def test_keygen_refuses_corrupt_store(tmp_path):
    st = tmp_path / "st"
    assert run("keygen", "--state", str(st)).returncode == 0
    (st / "identity").write_bytes(b"junk")
    r = run("keygen", "--state", str(st))
    # one line naming the file and the problem, exit 2 (host_tests/test_cli_stores.py has the rest)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert str(st / "identity") in r.stderr and "unknown format" in r.stderr
    assert (st / "identity").read_bytes() == b"junk"


def write(tmp_path, text):
    p = tmp_path / "node.toml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("text,needle", [
    ("bogus = 1\n", "unknown key"),
    ("[[peer]]\nauth='psk'\n", "missing 'address'"),
    ("[[peer]]\naddress='fd00::1'\nauth='psk'\n", "needs a non-empty psk"),
    ("[[peer]]\naddress='fd00::1'\nauth='rsa'\n", "not one of null, psk, pubkey"),
    ("[[peer]]\naddress='fd00::zz'\n", "not an IPv4 or IPv6 address"),
    ("[[peer]]\naddress='fd00::1'\nproposals=['aes256-sha384-ecp384']\n", "unsupported"),
    ("[[peer]]\naddress='fd00::1'\nauth='pubkey'\npeer_pubkey='nope.pem'\n", "cannot read"),
    ("natt_port = 70000\n", "not a port number"),
    ("[[peer]]\naddress='fd00::1'\nlocal_id='x500:cn'\n", "must be null or one of"),
    ("[[peer]]\naddress='fd00::1'\nmode='beet'\n", "not transport or tunnel"),
    ("this is not toml", "not valid TOML"),
    ("zero_config = 'yes'\n", "zero_config must be true or false"),
    ("[[spd]]\npeer='any'\naction='sometimes'\n", "spd[0].action"),
    ("zero_config = true\n[accept_any]\nauth='null'\n", "choose one"),
])
def test_config_errors_name_the_problem(tmp_path, text, needle):
    with pytest.raises(config.ConfigError) as ei:
        config.load(write(tmp_path, text))
    assert needle in str(ei.value)
    assert "node.toml" in str(ei.value)


def test_config_good(tmp_path):
    cfg = config.load(write(tmp_path, """
addresses = ["fd00:1::1", "10.99.1.1"]
keylog = "keys"
[[peer]]
address = "fd00:1::2"
auth = "psk"
psk = "s3cret-s3cret-s3cret"
local_id = "fqdn:alice"
remote_id = "fqdn:bob"
mode = "tunnel"
"""))
    (p,) = cfg.peers
    assert p.host == "fd00:1::2" and p.cfg.psk == b"s3cret-s3cret-s3cret" and p.cfg.mode == "tunnel"
    assert p.cfg.local_id == (2, b"alice")
    assert p.cfg.local_ts == [(bytes.fromhex("fd000001" + "00" * 11 + "01"),) * 2]
    assert p.cfg.remote_ts[0][0][-1] == 2
    assert cfg.keylog == str(tmp_path / "keys")


def test_cli_bad_usage_exit_2(tmp_path):
    r = run("send", "--config", write(tmp_path, "bogus=1\n"), "fd00::1", "7", "x")
    assert r.returncode == 2 and "unknown key" in r.stderr
    r = run("node")
    assert r.returncode == 2 and "--config" in r.stderr


def test_pins_cli_approve_changed_key(tmp_path):
    from pnp_hostboard.storage import DirStorage
    from pnpipsec.pins import PinStore
    st = str(tmp_path / "st")
    k1, k2 = os.urandom(32), os.urandom(32)
    store = PinStore(DirStorage(st))
    store.observe(bytes([10, 0, 0, 2]), k1)
    assert store.observe(bytes([10, 0, 0, 2]), k2) == "changed"
    r = run("pins", "--state", st, "list")
    assert r.returncode == 0 and "10.0.0.2" in r.stdout and "approve with --pending" in r.stdout
    r = run("pins", "--state", st, "approve", "10.0.0.2", "--pending")
    assert r.returncode == 0, r.stderr
    again = PinStore(DirStorage(st))
    assert again.is_trusted(bytes([10, 0, 0, 2]), k2) and again.state(bytes([10, 0, 0, 2])) == "approved"
    r = run("pins", "--state", st, "approve", "10.0.0.9", "--pending")
    assert r.returncode == 1 and "no changed key" in r.stderr
    r = run("pins", "--state", st, "approve", "10.0.0.9", "--key", "abcd")
    assert r.returncode == 2
    assert run("pins", "--state", st, "forget", "10.0.0.2").returncode == 0
    assert run("pins", "--state", st, "forget", "10.0.0.2").returncode == 1
