"""Where the files `pnp` needs live, in a checkout and in an installed wheel.

`pnp deploy`, `vboard`, `footprint`, `bench` and `mkpackage` read files that are not
Python modules of the `pnp` package: the firmware sources (firmware/pnpipsec,
firmware/manifest.py), the board glue (boards/<board>/, boards/common/pnpboard), the
virtual board's Node scripts (boards/wasm/*.mjs), tools/pnp/mpy_measure.mjs and the
qemu board's builder. ROOT is a folder laid out like the repository that holds them:

* a checkout (tools/pnp/../..), when it has firmware/pnpipsec and boards/common;
* else the package data of a wheel or `pip install .`: the `pnp_data` folder beside
  this package in site-packages (pyproject.toml maps `pnp_data` to the project root
  and lists the files), with the same layout.

The MicroPython WebAssembly port is an npm package, not part of the wheel:
wasm_package() finds it (PNP_NODE_MODULES, ROOT/node_modules, the current folder or
one of its parents); the .mjs scripts load it from PNP_WASM_PKG when that is set,
else by the package name (node_modules beside the checkout).
"""

from __future__ import annotations

import os

HERE = os.path.dirname(os.path.abspath(__file__))
WASM_NPM = "@micropython/micropython-webassembly-pyscript"


def _is_root(d: str) -> bool:
    return (os.path.isdir(os.path.join(d, "firmware", "pnpipsec"))
            and os.path.isdir(os.path.join(d, "boards", "common", "pnpboard")))


def find_root() -> str:
    """The checkout, else the installed `pnp_data` folder; the checkout path when neither
    has the files (the callers then name what is missing)."""
    checkout = os.path.abspath(os.path.join(HERE, "..", ".."))
    if _is_root(checkout):
        return checkout
    cands = [os.path.join(os.path.dirname(HERE), "pnp_data")]
    try:
        import importlib.util
        spec = importlib.util.find_spec("pnp_data")
        if spec is not None and spec.submodule_search_locations:
            cands += list(spec.submodule_search_locations)
    except (ImportError, ValueError):
        pass
    for d in cands:
        if _is_root(d):
            return os.path.abspath(d)
    return checkout


ROOT = find_root()
FIRMWARE = os.path.join(ROOT, "firmware", "pnpipsec")
BOARDS = os.path.join(ROOT, "boards")


def wasm_package() -> str | None:
    """The folder of the npm package @micropython/micropython-webassembly-pyscript, or None.

    Looked for in $PNP_NODE_MODULES (a node_modules folder), ROOT/node_modules, then
    node_modules in the current folder and each of its parents."""
    rel = os.path.join(*WASM_NPM.split("/"))
    dirs = []
    env = os.environ.get("PNP_NODE_MODULES")
    if env:
        dirs.append(env)
    dirs.append(os.path.join(ROOT, "node_modules"))
    d = os.getcwd()
    while True:
        dirs.append(os.path.join(d, "node_modules"))
        up = os.path.dirname(d)
        if up == d:
            break
        d = up
    for nm in dirs:
        pkg = os.path.join(nm, rel)
        if os.path.isfile(os.path.join(pkg, "micropython.mjs")):
            return os.path.abspath(pkg)
    return None


WASM_MISSING = ("the npm package %s@1.27.0 was not found (npm install it in this folder or a parent, "
                "or set PNP_NODE_MODULES to the node_modules folder that holds it; a checkout: "
                "scripts/setup.sh runs npm ci)" % WASM_NPM)


def node_env(env: dict | None = None) -> dict:
    """A copy of env (default os.environ) with PNP_WASM_PKG set when the package was found,
    so the .mjs scripts load it from there (they are not beside node_modules in a wheel)."""
    env = dict(os.environ if env is None else env)
    pkg = wasm_package()
    if pkg:
        env["PNP_WASM_PKG"] = pkg
    return env
