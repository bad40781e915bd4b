"""Shared pytest plumbing for host_tests.

* ``venv`` fixture: paths of the project's virtualenv (``venv.python``, ``venv.bin(name)``).
* ``needs_root`` marker: the test needs root (network namespaces, apt packages...).
  Locally, without root, it is skipped with a loud reason; when the environment has
  ``CI=true`` it FAILS instead, so CI can never go green by skipping.
* ``require(condition, reason)`` fixture: the same rule for any other prerequisite
  (a tool on PATH, node_modules, ...): skip locally, fail in CI.
"""

import os
import shutil
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_CI = os.environ.get("CI", "").lower() == "true"


class Venv:
    """The project's virtualenv (created by scripts/setup.sh)."""

    def __init__(self, root):
        self.root = root
        self.bindir = os.path.join(root, "bin")
        self.python = os.path.join(self.bindir, "python")

    def bin(self, name):
        """Path of a console script of the venv; falls back to PATH, then None."""
        p = os.path.join(self.bindir, name)
        if os.path.exists(p):
            return p
        # running under some other interpreter: look next to it, then on PATH
        p = os.path.join(os.path.dirname(sys.executable), name)
        return p if os.path.exists(p) else shutil.which(name)


VENV = Venv(os.path.join(REPO, ".venv"))


def missing(reason):
    """Skip the running test locally, fail it when CI=true. Never returns."""
    if IN_CI:
        pytest.fail("CI=true, so this is a failure, not a skip: " + reason, pytrace=False)
    pytest.skip("!!! NOT RUN: " + reason)


@pytest.fixture(scope="session")
def venv():
    return VENV


@pytest.fixture
def require():
    def _require(condition, reason):
        if not condition:
            missing(reason)

    return _require


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "needs_root: needs root (namespaces, packet capture...); skipped locally when "
        "not root, a failure when CI=true",
    )


def pytest_runtest_setup(item):
    if item.get_closest_marker("needs_root") and os.geteuid() != 0:
        missing("needs root (run `sudo make test`, or the CI job which runs as root)")
