# Freeze the pnpipsec package into a MicroPython firmware image.
#
# MicroPython manifest API (tools/manifestfile.py, docs: reference/manifest.rst):
# package(package_path, files=None, base_path=".", opt=None) includes
# base_path/package_path/**/*.py as package_path/**/*.py; relative paths are resolved
# against this file's directory. Use it from a board manifest, e.g.
#
#   include("$(PORT_DIR)/boards/manifest.py")
#   include("/path/to/pnpipsec/firmware/manifest.py")
#
# or build with boards/esp32/manifest.py / boards/rp2/manifest.py, which also freeze
# the board glue:
#
#   make -C ports/rp2 BOARD=RPI_PICO_W FROZEN_MANIFEST=/path/to/pnpipsec/boards/rp2/manifest.py
#
# Frozen bytecode runs from flash: the import costs far less heap than .mpy files in
# the file system (see `pnp bench` / pnp.footprint for the non-frozen figures).

metadata(
    description="pnpipsec: Plug-and-Play IPsec (IKEv2 + ESP-in-UDP) for MicroPython appliances",
    version="0.1.0",
)

package("pnpipsec", base_path=".")
