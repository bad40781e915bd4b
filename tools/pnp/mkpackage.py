"""Write firmware/package.json, the mip package description of pnpipsec.

    python -m pnp.mkpackage            # rewrite firmware/package.json
    python -m pnp.mkpackage --check    # exit 1 when it is stale (the test suite checks too)

mip (MicroPython's installer, also `mpremote mip`) reads a micropython-lib style
package.json: {"urls": [[path_on_device, url], ...], "version": "..."}; it installs
each file under the first `/lib` entry of sys.path. Relative URLs are resolved against
the folder of package.json, so the same file serves

    mpremote mip install github:OWNER/REPO/firmware          (from GitHub; @branch/@tag)
    >>> import mip; mip.install("github:OWNER/REPO/firmware") (on a board with Wi-Fi)
    mpremote mip install firmware/package.json                (from this checkout)

(`github:OWNER/REPO/firmware` gets "/package.json" appended by mip.) This installs the
.py sources; `pnp deploy` installs compiled .mpy files plus the board glue instead.
"""

from __future__ import annotations

import json
import os
import sys

from pnp import paths

REPO = paths.ROOT   # the checkout, or the installed package data (pnp/paths.py)
FIRMWARE = os.path.join(REPO, "firmware")
PACKAGE_JSON = os.path.join(FIRMWARE, "package.json")


def package_files():
    """Paths of every .py file of firmware/pnpipsec, relative to firmware/, sorted."""
    out = []
    root = os.path.join(FIRMWARE, "pnpipsec")
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x != "__pycache__" and not x.startswith(".")]
        for f in files:
            if f.endswith(".py"):
                out.append(os.path.relpath(os.path.join(d, f), FIRMWARE).replace(os.sep, "/"))
    return sorted(out)


def version():
    ns = {}
    with open(os.path.join(FIRMWARE, "pnpipsec", "__init__.py")) as f:
        for line in f:
            if line.startswith("__version__"):
                exec(line, ns)
    return ns.get("__version__", "0.0.0")


def package_json():
    # one [device path, url] pair per line, so diffs show added and removed files
    rows = ",\n".join("    " + json.dumps([p, p]) for p in package_files())
    return '{\n  "urls": [\n%s\n  ],\n  "version": %s\n}\n' % (rows, json.dumps(version()))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    text = package_json()
    if "--check" in argv:
        try:
            with open(PACKAGE_JSON) as f:
                cur = f.read()
        except OSError:
            cur = None
        if cur != text:
            print("firmware/package.json is stale: run python -m pnp.mkpackage", file=sys.stderr)
            return 1
        return 0
    with open(PACKAGE_JSON, "w") as f:
        f.write(text)
    print("wrote %s (%d files, version %s)" % (os.path.relpath(PACKAGE_JSON, REPO),
                                               len(package_files()), version()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
