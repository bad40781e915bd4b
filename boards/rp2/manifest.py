# Firmware for the rp2 board with pnpipsec and its board glue frozen in:
#
#   make -C ports/rp2 BOARD=RPI_PICO_W FROZEN_MANIFEST=/path/to/pnpipsec/boards/rp2/manifest.py
#
# Frozen modules import from flash (no heap for their bytecode). /main.py and
# /wifi.json stay on the file system; the frozen `board` module is imported by main.py.

include("$(BOARD_DIR)/manifest.py")  # RPI_PICO_W: port manifest + networking bundle
include("../../firmware/manifest.py", native=True)  # + viper field arithmetic as native code
package("pnpboard", base_path="../common")
module("board.py")
