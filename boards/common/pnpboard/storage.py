"""Flash storage for the board: named files under one directory, replaced atomically.

write(name, data) never leaves a half-written file in place of the old one:

    1. write  ROOT/name.tmp  and close it (MicroPython files have no fsync; close flushes)
    2. rename ROOT/name.tmp -> ROOT/name.new   (target absent: safe on every VFS)
    3. rename ROOT/name.new -> ROOT/name       (replaces the old file)

Step 3 is one atomic operation on littlefs (the default file system of the ESP32 and RP2
ports: lfs_rename replaces an existing target). On FAT, MicroPython's VfsFat.rename
removes an existing target and renames again (extmod/vfs_fat.c: on FR_EXIST it calls
f_unlink then f_rename), so a power cut can fall between the two: then only name.new
is left. Hence the rule, applied when the storage is opened and before every read:

    - a *.new file is always complete (it only ever comes from step 2): promote it
      over ROOT/name (remove name if present, rename);
    - a *.tmp file may be partial: delete it (the old ROOT/name is intact).

No errno comparisons (the virtual board's errno numbers differ from MicroPython's):
existence is asked with os.stat, and a failed rename is retried after removing the
target only when the target exists.
"""

try:
    import os as _os
except ImportError:  # pragma: no cover
    import uos as _os

_TMP = ".tmp"
_NEW = ".new"


class StorageError(Exception):
    pass


class FlashStorage:
    def __init__(self, root, os_module=None):
        self.os = os_module or _os
        self.root = root.rstrip("/") or "/"
        self._mkdirs(self.root)
        self.recovered = self.recover()

    # -- helpers ---------------------------------------------------------------
    def _mkdirs(self, path):
        if path == "/" or self._exists(path):
            return
        parts = path.split("/")
        cur = ""
        for p in parts:
            if not p:
                continue
            cur = cur + "/" + p if (cur or path.startswith("/")) else p
            if not self._exists(cur):
                self.os.mkdir(cur)

    def _exists(self, path):
        try:
            self.os.stat(path)
            return True
        except OSError:
            return False

    def _join(self, name):
        return self.root + name if self.root.endswith("/") else self.root + "/" + name

    def path(self, name):
        if not name or "/" in name or name.startswith(".") or name.endswith(_TMP) \
                or name.endswith(_NEW):
            raise ValueError("bad storage name %r" % name)
        return self._join(name)

    def _replace(self, src, dst):
        try:
            self.os.rename(src, dst)
        except OSError:
            if not self._exists(dst):
                raise
            self.os.remove(dst)
            self.os.rename(src, dst)

    def _settle(self, final):
        """Apply the recovery rule to one name; True when something was repaired."""
        done = False
        new = final + _NEW
        tmp = final + _TMP
        if self._exists(new):
            self._replace(new, final)
            done = True
        if self._exists(tmp):
            self.os.remove(tmp)
            done = True
        return done

    # -- API ---------------------------------------------------------------------
    def recover(self):
        """Repair what a power cut during write() left behind; returns the names repaired."""
        names = []
        try:
            entries = self.os.listdir(self.root)
        except OSError:
            return names
        for e in entries:
            base = None
            if e.endswith(_NEW):
                base = e[:-len(_NEW)]
            elif e.endswith(_TMP):
                base = e[:-len(_TMP)]
            if base and base not in names:
                if self._settle(self._join(base)):
                    names.append(base)
        return names

    def read(self, name):
        """The stored bytes, or None when the name was never written."""
        final = self.path(name)
        self._settle(final)
        if not self._exists(final):
            return None
        with open(final, "rb") as f:
            return f.read()

    def write(self, name, data):
        """Replace `name` atomically: a crash leaves the old or the new content, never half."""
        final = self.path(name)
        self._settle(final)
        tmp = final + _TMP
        new = final + _NEW
        data = bytes(data)
        with open(tmp, "wb") as f:
            n = f.write(data)
        if n is not None and n != len(data):
            self.os.remove(tmp)
            raise StorageError("storage: short write of %s (%d of %d bytes)" % (name, n, len(data)))
        self.os.rename(tmp, new)
        self._replace(new, final)

    def remove(self, name):
        final = self.path(name)
        self._settle(final)
        if self._exists(final):
            self.os.remove(final)
