"""Example application: see pnpboard/app.py (the same app on every board)."""

import asyncio

from pnpboard import app
from board import Board

asyncio.run(app.main(Board))
