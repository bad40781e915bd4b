"""Our node as a process in a namespace that also writes its counters, for tests.

    python -m host_tests.peers.statusnode --config node.toml --status FILE [--echo PORT]

Runs the same node as ``pnp node`` (``pnp.runtime.start_node``), echoes datagrams on
PORT, prints "ready" once its sockets are bound, and every 0.1 s replaces FILE with
``json.dumps(node.status())`` plus ``established_with``: {peer host: established IKE SAs}
(read it with :func:`read`). SIGTERM stops it (the node deletes its SAs)."""

import argparse
import asyncio
import json
import os
import signal


def _snapshot(node):
    st = node.status()
    per = {}
    for sa in node.engine.sas.values():
        if sa.state == "established":
            per[sa.peer_addr[0]] = per.get(sa.peer_addr[0], 0) + 1
    st["established_with"] = per
    return st


def read(path):
    with open(path) as f:
        return json.load(f)


async def _main(args):
    from pnp import config
    from pnp.runtime import start_node
    node = await start_node(config.load(args.config), verbose=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def echo():
        ep = node.endpoint(args.echo)
        while True:
            data, addr, _ = await ep.recv()
            try:
                await ep.send(data, addr, timeout=5)
            except Exception:
                pass

    tasks = [asyncio.create_task(echo())] if args.echo else []
    await asyncio.sleep(0.05)
    print("ready", flush=True)
    while not stop.is_set():
        tmp = args.status + ".tmp"
        with open(tmp, "w") as f:
            json.dump(_snapshot(node), f)
        os.replace(tmp, args.status)
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except asyncio.TimeoutError:
            pass
    for t in tasks:
        t.cancel()
    await node.stop()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--status", required=True)
    p.add_argument("--echo", type=int)
    asyncio.run(_main(p.parse_args()))


if __name__ == "__main__":
    main()
