# User C module of the qemu board (boards/qemu/build.py passes USER_C_MODULES).
PNPQEMU_MOD_DIR := $(USERMOD_DIR)
SRC_USERMOD_C += $(PNPQEMU_MOD_DIR)/time_ns.c
SRC_USERMOD_C += $(PNPQEMU_MOD_DIR)/romfs.c
