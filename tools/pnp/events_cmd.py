"""`pnp events --state DIR [--follow] [--json]` (or `--config FILE`): the running node's
log (engine events with their peer, level changes by name, failures with their reason),
from its control socket: the recent lines, and with --follow every new one until
interrupted.

Exit status: 0 done (or interrupted), 1 no node runs there, 2 an unusable config.
"""

from __future__ import annotations

import json
import sys

from pnp import config, control
from pnp.problems import refuse
from pnp.status_cmd import add_state_arguments, state_of


def add_arguments(p):
    add_state_arguments(p)
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    p.add_argument("--new", action="store_true", help="skip the recent history")
    p.add_argument("--json", action="store_true", help="one JSON object a line")


def run(args) -> int:
    try:
        path = control.path_for(state_of(args))
    except config.ConfigError as e:
        return refuse("pnp events", e)
    try:
        for ans in control.stream(path, {"op": "events", "follow": args.follow,
                                         "history": not args.new}):
            ev = ans.get("event")
            if ev is None:
                break
            if args.json:
                print(json.dumps(ev), flush=True)
            else:
                print(f"{ev['time']} {ev['level']:7} {ev['msg']}", flush=True)
    except control.ControlError as e:
        print(f"pnp events: {e} (is `pnp node` running on this state folder?)", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    return 0
