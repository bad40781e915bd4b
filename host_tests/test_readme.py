"""The README's examples run, so they cannot rot: every ```python block whose first
line is "# runs in tests" is executed as it is (in a temporary current folder, where
the application example keeps its state folders), and every ```toml block is loaded
by the real config loader (`pnp.config.load`) after its relative paths are pointed at a
temp dir. The Linux-peer files (```conf title=... and ```ini title=...) run in
host_tests/test_readme_linux_peer.py."""

import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def blocks(lang):
    """The bodies of the ```LANG blocks (with or without a title=NAME after the language)."""
    text = open(README).read()
    return re.findall(r"```%s(?: title=\S+)?\n(.*?)```" % lang, text, re.S)


def titled(title):
    """The body of the one block whose info string ends in title=TITLE."""
    found = re.findall(r"```\w+ title=%s\n(.*?)```" % re.escape(title), open(README).read(), re.S)
    assert len(found) == 1, "README: %d blocks titled %s" % (len(found), title)
    return found[0]


RUNNABLE = [b for b in blocks("python") if b.startswith("# runs in tests")]


def test_the_readme_has_runnable_examples():
    assert RUNNABLE and blocks("toml")


APPLICATION = [b for b in RUNNABLE if "an application" in b.splitlines()[0]]


def test_the_application_example_is_runnable():
    assert len(APPLICATION) == 1 and "HostBoard(" in APPLICATION[0]


@pytest.mark.parametrize("code", [b for b in RUNNABLE if b not in APPLICATION], ids=lambda c: c.splitlines()[0][:40])
def test_python_example_runs(code, capsys):
    ns = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), ns)
    out = capsys.readouterr().out.splitlines()
    assert out and out[-1] == "{}"          # the example's own claim: nothing lingers


def test_application_example_runs(capsys, tmp_path, monkeypatch):
    """"Using it from an application", as written: the board is made, the levels print as
    names, the first datagram leaves at once and the command arrives AUTHENTICATED."""
    monkeypatch.chdir(tmp_path)
    ns = {"__name__": "readme_example"}
    exec(compile(APPLICATION[0], "README.md", "exec"), ns)
    out = capsys.readouterr().out.splitlines()
    assert "127.0.0.2 CLEAR -> ENCRYPTED" in out and "127.0.0.2 ENCRYPTED -> AUTHENTICATED" in out, out
    assert "127.0.0.1 CLEAR -> ENCRYPTED" in out, out          # the peer's view, printed by its callback
    assert re.match(r"b'HI' 127\.0\.0\.2 (CLEAR|ENCRYPTED|AUTHENTICATED)$", out[[i for i, l in enumerate(out) if l.startswith("b'HI'")][0]])
    assert "b'CMD' 127.0.0.2 AUTHENTICATED" in out, out
    assert out[-1].endswith("AUTHENTICATED -> CLEAR"), out         # node.stop() deleted the SAs
    assert (tmp_path / "st" / "app").is_dir() and (tmp_path / "st" / "peer").is_dir()


@pytest.mark.parametrize("toml", blocks("toml"), ids=lambda t: t.splitlines()[0][:40])
def test_toml_example_loads(toml, tmp_path):
    from pnp import config
    path = tmp_path / "node.toml"
    path.write_text(toml)
    cfg = config.load(str(path))
    assert cfg is not None
