"""Directory storage for the host board: atomic writes (temp file, fsync, rename)."""

import os


class DirStorage:
    def __init__(self, root):
        self.root = root
        os.makedirs(root, exist_ok=True)

    def path(self, name):
        if "/" in name or name.startswith("."):
            raise ValueError("bad storage name %r" % name)
        return os.path.join(self.root, name)

    def read(self, name):
        """The stored bytes, or None when the name was never written."""
        try:
            with open(self.path(name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def write(self, name, data):
        """Replace `name` atomically: a crash leaves the old or the new content, never half."""
        final = self.path(name)
        tmp = final + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
