"""The README's examples run, so they cannot rot: every ```python block whose first
line is "# runs in tests" is executed, and every ```toml block is loaded by the real
config loader (`pnp.config.load`) after its relative paths are pointed at a temp dir."""

import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def blocks(lang):
    text = open(README).read()
    return re.findall(r"```%s\n(.*?)```" % lang, text, re.S)


RUNNABLE = [b for b in blocks("python") if b.startswith("# runs in tests")]


def test_the_readme_has_runnable_examples():
    assert RUNNABLE and blocks("toml")


@pytest.mark.parametrize("code", RUNNABLE, ids=lambda c: c.splitlines()[0][:40])
def test_python_example_runs(code, capsys):
    ns = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), ns)
    out = capsys.readouterr().out.splitlines()
    assert out and out[-1] == "{}"          # the example's own claim: nothing lingers


@pytest.mark.parametrize("toml", blocks("toml"), ids=lambda t: t.splitlines()[0][:40])
def test_toml_example_loads(toml, tmp_path):
    from pnp import config
    path = tmp_path / "node.toml"
    path.write_text(toml)
    cfg = config.load(str(path))
    assert cfg is not None
