# Firmware for the esp32 board with pnpipsec and its board glue frozen in:
#
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/pnpipsec/boards/esp32/manifest.py
#
# Frozen modules import from flash (no heap for their bytecode). /main.py and
# /wifi.json stay on the file system; the frozen `board` module is imported by main.py.

include("$(PORT_DIR)/boards/manifest.py")
include("../../firmware/manifest.py", native=True)  # + viper field arithmetic as native code
package("pnpboard", base_path="../common")
module("board.py")
