"""`pnp`: the host-side command line of pnpipsec.

Adding a subcommand: write a module in tools/pnp exposing

    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int          # the process exit status

and add one line to SUBCOMMANDS below. Only the module of the chosen subcommand is
imported, so a broken or slow-to-import tool never breaks the others (and `pnp --help`
imports none of them).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Keep sorted by name.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("pnp.bench", "benchmark crypto, IKE handshake CPU and ESP per packet against baselines"),
    "connect": ("pnp.connect_cmd", "bring up the IKE SA (and CHILD SA) with a peer and print it"),
    "deploy": ("pnp.deploy", "compile pnpipsec to .mpy, put it on a MicroPython board with mpremote, self-test it"),
    "events": ("pnp.events_cmd", "the running node's log: recent events, --follow for new ones"),
    "footprint": ("pnp.footprint", "firmware .mpy size and MicroPython heap against the DESIGN budgets"),
    "keygen": ("pnp.keygen", "create (once) and show the node's Ed25519 identity"),
    "node": ("pnp.node_cmd", "run a node until stopped"),
    "pins": ("pnp.pins_cmd", "list the pinned peer keys; approve or revoke one (on the running node if any)"),
    "send": ("pnp.send_cmd", "send one datagram through the SA and print the reply"),
    "status": ("pnp.status_cmd", "what the running node is doing: peers, levels, trust, SAs and why not higher"),
    "sim": ("pnp.sim", "the demo: appliances, a host and a legacy device on loopback; live levels, pcap, key log"),
    "vboard": ("pnp.vboard", "run a virtual board (MicroPython WebAssembly behind a pty) that mpremote can drive"),
    "wirebench": ("pnp.wirebench", "handshakes on the wire: ours beside strongSwan and libreswan (root)"),
}


def _version() -> str:
    try:
        import pnpipsec

        return pnpipsec.__version__
    except Exception:  # noqa: BLE001 - the version line must never crash the CLI
        return "unknown"


def _chosen(argv: list[str]) -> str | None:
    """The subcommand named in argv (the first argument that is not an option)."""
    for a in argv:
        if a == "--":
            return None
        if not a.startswith("-"):
            return a if a in SUBCOMMANDS else None
    return None


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pnp",
        description="Plug-and-Play IPsec for MicroPython appliances: host tools.",
    )
    parser.add_argument("--version", action="version", version="pnp " + _version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    chosen = _chosen(argv)
    for name in sorted(SUBCOMMANDS):
        modname, help_text = SUBCOMMANDS[name]
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            mod = importlib.import_module(modname)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        rc = args._run(args)
    except KeyboardInterrupt:
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
