// ROMFS of the qemu board (boards/qemu/build.py --romfs builds with
// MICROPY_VFS_ROM_IOCTL=1; the other variants compile nothing of this file).
//
// One ROM segment: ROMFS_SIZE bytes of the MPS2-AN385's PSRAM at 0x21000000 (16 MiB of
// RAM in qemu's mps2 model; the firmware's code, data, GC heap and stack live in SSRAM1
// at 0x0, the littlefs RAM disk of _boot.py at 0x20000000). At boot mp_init() mounts the
// segment at /rom (when it holds a ROMFS image) and appends /rom and /rom/lib to sys.path;
// .mpy files there are imported in place (extmod/vfs_reader.c: a VfsRom file exposes the
// buffer protocol, so the reader is MP_READER_IS_ROM and py/persistentcode.c references
// bytecode, strings and qstr data in the segment instead of copying them to the heap).
//
// The write ioctls make the segment behave like flash for `mpremote romfs deploy`:
// WRITE_PREPARE "erases" (0xff), WRITE copies, WRITE_COMPLETE does nothing. A system
// reset (machine.reset()) leaves PSRAM alone, so an image survives resets, not a
// restart of qemu.
#include <string.h>

#include "py/runtime.h"
#include "py/mperrno.h"
#include "py/objarray.h"
#include "extmod/vfs.h"

#if MICROPY_VFS_ROM_IOCTL

#define ROMFS_ADDR (0x21000000)
#define ROMFS_SIZE (2 * 1024 * 1024)
#define ROMFS_MIN_WRITE (4)

static const MP_DEFINE_MEMORYVIEW_OBJ(romfs_obj, 'B', 0, ROMFS_SIZE, (void *)ROMFS_ADDR);

static mp_obj_t romfs_einval(void) {
    return MP_OBJ_NEW_SMALL_INT(-MP_EINVAL);
}

mp_obj_t mp_vfs_rom_ioctl(size_t n_args, const mp_obj_t *args) {
    mp_int_t cmd = mp_obj_get_int(args[0]);
    if (cmd == MP_VFS_ROM_IOCTL_GET_NUMBER_OF_SEGMENTS) {
        return MP_OBJ_NEW_SMALL_INT(1);
    }
    if (n_args < 2 || mp_obj_get_int(args[1]) != 0) {
        return romfs_einval();
    }
    uint8_t *base = (uint8_t *)ROMFS_ADDR;
    switch (cmd) {
        case MP_VFS_ROM_IOCTL_GET_SEGMENT:
            return MP_OBJ_FROM_PTR(&romfs_obj);

        case MP_VFS_ROM_IOCTL_WRITE_PREPARE: {
            // (3, id, len) or (3, id, offset, len)
            mp_int_t offset = 0, len;
            if (n_args == 3) {
                len = mp_obj_get_int(args[2]);
            } else if (n_args == 4) {
                offset = mp_obj_get_int(args[2]);
                len = mp_obj_get_int(args[3]);
            } else {
                return romfs_einval();
            }
            if (offset < 0 || len < 0 || offset > ROMFS_SIZE || len > ROMFS_SIZE - offset) {
                return romfs_einval();
            }
            memset(base + offset, 0xff, len);
            return MP_OBJ_NEW_SMALL_INT(ROMFS_MIN_WRITE);
        }

        case MP_VFS_ROM_IOCTL_WRITE: {
            // (4, id, offset, buf)
            if (n_args != 4) {
                return romfs_einval();
            }
            mp_int_t offset = mp_obj_get_int(args[2]);
            mp_buffer_info_t bufinfo;
            mp_get_buffer_raise(args[3], &bufinfo, MP_BUFFER_READ);
            if (offset < 0 || offset > ROMFS_SIZE || bufinfo.len > (size_t)(ROMFS_SIZE - offset)) {
                return romfs_einval();
            }
            memcpy(base + offset, bufinfo.buf, bufinfo.len);
            return MP_OBJ_NEW_SMALL_INT(0);
        }

        case MP_VFS_ROM_IOCTL_WRITE_COMPLETE:
            return MP_OBJ_NEW_SMALL_INT(0);
    }
    return romfs_einval();
}

#endif
