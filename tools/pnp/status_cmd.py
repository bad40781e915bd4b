"""`pnp status --state DIR [--json]` (or `--config FILE`): what the running node on that
state folder is doing, asked over its control socket (pnp.control): our identity and
ports, and per peer its identity, address, level and trust (the pin), its SAs (SPIs,
age, lifetimes, bytes and packets), discovery state and why its level is not higher.
The layout follows `wg show`; --json prints pnp.status.describe() as it is.

Exit status: 0 shown, 1 no node runs there (nothing answers on the socket), 2 bad
arguments or an unusable config.
"""

from __future__ import annotations

import json
import sys

from pnp import config, control, status
from pnp.problems import refuse


def add_state_arguments(p):
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--state", help="the node's state folder")
    g.add_argument("--config", help="the node's TOML file (its state folder is used)")


def state_of(args) -> str:
    return args.state if args.state else config.load(args.config).state


def add_arguments(p):
    add_state_arguments(p)
    p.add_argument("--json", action="store_true", help="machine-readable, every field")


def run(args) -> int:
    try:
        path = control.path_for(state_of(args))
    except config.ConfigError as e:
        return refuse("pnp status", e)
    try:
        ans = control.request(path, {"op": "status"})
    except control.ControlError as e:
        print(f"pnp status: {e} (is `pnp node` running on this state folder?)", file=sys.stderr)
        return 1
    if not ans.get("ok"):
        print(f"pnp status: {ans.get('error')}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(ans["status"], indent=2, sort_keys=True))
    else:
        sys.stdout.write(status.render(ans["status"]))
    return 0
