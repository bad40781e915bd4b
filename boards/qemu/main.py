"""Example application: see pnpboard/app.py (the same app on every board).

The GC runs every 8 KB of allocation while the package loads: loading ~130 KB of .mpy
files otherwise fragments a 180 KB heap until a 1.3 KB block cannot be found (seen on
the pico_w profile); frozen firmware does not need it, but it does no harm.
"""

import gc

gc.threshold(8192)
import asyncio

from pnpboard import app
from board import Board

gc.collect()
gc.threshold(-1)
asyncio.run(app.main(Board))
