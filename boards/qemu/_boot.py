"""Frozen boot step of the qemu board: a littlefs file system on a RAM disk.

The disk lives at RAM_DISK_ADDR in the MPS2-AN385's second SRAM bank (SSRAM2/3,
0x20000000, 4 MiB), which the firmware does not use (its linker script places code,
data, GC heap and stack in SSRAM1 at 0x0). A machine.reset() of this build is a system
reset (boards/qemu/build.py), which leaves that RAM alone: the file system survives
resets, like flash, but not a restart of qemu. Nothing of it is on the GC heap.
"""

import sys
import uctypes
import vfs

RAM_DISK_ADDR = 0x20000000
BLOCK_SIZE = 1024
BLOCKS = 1024          # 1 MiB


class RAMBlockDev:
    def __init__(self, addr, block_size, blocks):
        self.bs = block_size
        self.n = blocks
        self.mem = memoryview(uctypes.bytearray_at(addr, block_size * blocks))

    def readblocks(self, block, buf, offset=0):
        a = block * self.bs + offset
        buf[:] = self.mem[a:a + len(buf)]

    def writeblocks(self, block, buf, offset=None):
        a = block * self.bs + (offset or 0)
        self.mem[a:a + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:
            return self.n
        if op == 5:
            return self.bs
        if op == 6:
            return 0
        return None


def _mount():
    bdev = RAMBlockDev(RAM_DISK_ADDR, BLOCK_SIZE, BLOCKS)
    try:
        vfs.mount(vfs.VfsLfs2(bdev), "/")
    except OSError:
        vfs.VfsLfs2.mkfs(bdev)
        vfs.mount(vfs.VfsLfs2(bdev), "/")
    if "/lib" not in sys.path:
        sys.path.append("/lib")


_mount()
del _mount
