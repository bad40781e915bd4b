# Frozen modules of the qemu board firmware (boards/qemu/build.py passes this file as
# FROZEN_MANIFEST; the manifest runs with this folder as its working directory).
#
#   asyncio      MicroPython's own package (the stock qemu port freezes none)
#   _boot.py     mounts the RAM disk (run by the patched main.c before boot.py/main.py)
#   board.py     the board glue; a /board.py on the file system takes precedence
#
# With PNP_FREEZE_PACKAGE=1 (build.py --frozen) also pnpipsec ($PNP_FIRMWARE_DIR/manifest.py,
# default firmware/; native=True: its viper field arithmetic frozen as native Thumb-2
# code, the port's board passes -march=armv7m to mpy-cross) and pnpboard, as boards/esp32/manifest.py does for a real board.
import os

include("$(MPY_DIR)/extmod/asyncio")
module("_boot.py")
module("board.py")
if os.environ.get("PNP_FREEZE_PACKAGE") == "1":
    include(os.path.join(os.environ.get("PNP_FIRMWARE_DIR") or "../../firmware", "manifest.py"), native=True)
    package("pnpboard", base_path="../common")
