"""Directory storage for the host board: atomic writes (temp file, fsync, rename).

A stored file that exists but cannot be used -- a directory or a FIFO where the file
should be, a dangling symlink, an unreadable or absurdly large file, a state folder that
is a file -- raises StoreError naming the path and the problem. Nothing is ever written
over such a file: the user decides what to do with it.

Modes: the state folder is created 0700 and every stored file is written 0600
(os.open with the mode, then fchmod, so no umask widens it): the identity holds the
node's private key, and the pin store decides whom the node trusts. An identity
that is readable or writable by group or others when loaded is warned about loudly
(check_private: stderr, or the `warn` callable), not refused: the node still starts, the user fixes it.
"""

import os
import stat
import threading

try:
    import fcntl
except ImportError:     # not POSIX: one writer per state folder
    fcntl = None

# The largest file a store may hold. The identity is 106 bytes and a full pin store
# (64 pins) about 17 KB; a bigger file is not ours, and reading it whole would only
# waste memory.
MAX_SIZE = 1 << 20
DIR_MODE = 0o700
FILE_MODE = 0o600


def _stderr_warn(msg):
    import sys
    print(msg, file=sys.stderr, flush=True)


class StoreError(Exception):
    """A stored file (or the state folder) that exists but cannot be used.

    .path: the file; .problem: what is wrong, one line ("not a regular file (a
    directory)", "permission denied", ...). str(e) is "<path>: <problem>"."""

    def __init__(self, path, problem):
        Exception.__init__(self, "%s: %s" % (path, problem))
        self.path = path
        self.problem = problem


def _why(e):
    """An OSError as a short lower-case reason ("permission denied")."""
    text = e.strerror or str(e) or e.__class__.__name__
    return text[:1].lower() + text[1:]


def _kind(mode):
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "mode %o" % stat.S_IFMT(mode)


class DirStorage:
    """create=False: the folder must exist (read-only commands never create state)."""

    def __init__(self, root, max_size=MAX_SIZE, create=True, warn=None):
        self.root = root
        self.max_size = max_size
        self.warn = warn or _stderr_warn
        if not create:
            try:
                st = os.stat(root)
            except FileNotFoundError:
                raise StoreError(root, "no such state folder") from None
            except OSError as e:
                raise StoreError(root, "cannot use the state folder: " + _why(e)) from None
            if not stat.S_ISDIR(st.st_mode):
                raise StoreError(root, "not a directory (the state folder is a file)")
            return
        try:
            made = not os.path.lexists(root)
            os.makedirs(root, mode=DIR_MODE, exist_ok=True)
            if made:
                os.chmod(root, DIR_MODE)    # makedirs' mode passes through the umask
        except FileExistsError:
            raise StoreError(root, "not a directory (the state folder is a file)") from None
        except NotADirectoryError:
            raise StoreError(root, "not a directory (a part of the path is a file)") from None
        except OSError as e:
            raise StoreError(root, "cannot create the state folder: " + _why(e)) from None
        if not os.path.isdir(root):
            raise StoreError(root, "not a directory")

    def path(self, name):
        if "/" in name or name.startswith("."):
            raise ValueError("bad storage name %r" % name)
        return os.path.join(self.root, name)

    def read(self, name):
        """The stored bytes, or None when the name was never written.

        Raises StoreError when something is there that is not a readable regular file
        of at most max_size bytes (a dangling symlink counts: the file it named is gone,
        and writing a new one in its place would hide that)."""
        p = self.path(name)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(p, "cannot read: " + _why(e)) from None
        if stat.S_ISLNK(st.st_mode):
            try:
                st = os.stat(p)
            except FileNotFoundError:
                raise StoreError(p, "dangling symlink (to %s, which does not exist)" % os.readlink(p)) from None
            except OSError as e:
                raise StoreError(p, "cannot read: " + _why(e)) from None
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(p, "not a regular file (%s)" % _kind(st.st_mode))
        if st.st_size > self.max_size:
            raise StoreError(p, "too large (%d bytes; a store holds at most %d)" % (st.st_size, self.max_size))
        try:
            # O_NONBLOCK: should a FIFO appear here after the check, open() must not hang.
            fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            with open(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise StoreError(p, "not a regular file")
                data = f.read(self.max_size + 1)
        except PermissionError:
            raise StoreError(p, "permission denied (cannot read it)") from None
        except OSError as e:
            raise StoreError(p, "cannot read: " + _why(e)) from None
        if len(data) > self.max_size:
            raise StoreError(p, "too large (more than %d bytes)" % self.max_size)
        return data

    def stamp(self, name):
        """What changes whenever `name` is replaced (inode, size, mtime), None when it is
        missing: a store shared with another process re-reads only after a change."""
        try:
            st = os.stat(self.path(name))
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def lock(self, name):
        """Take the advisory lock of `name` (flock on the file NAME.lock beside it),
        waiting for another process's read-modify-write to end; returns the token for
        unlock(). Every writer of a shared store (a node, `pnp pins`) takes it."""
        if fcntl is None:
            return None
        p = self.path(name) + ".lock"
        try:
            fd = os.open(p, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError as e:
            raise StoreError(p, "cannot lock: " + _why(e)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            os.close(fd)
            raise StoreError(p, "cannot lock: " + _why(e)) from None
        return fd

    def unlock(self, token):
        if token is not None:
            os.close(token)       # closing the descriptor releases the flock

    def check_private(self, name="identity"):
        """Warn (loudly, not an error) when the secret `name` may be read or changed by
        group or others. Called once the secret has loaded: a corrupt file is refused
        with its own one line and no warning."""
        p = self.path(name)
        try:
            m = os.stat(p).st_mode
        except OSError:
            return False
        if not m & 0o077:
            return False
        self.warn("WARNING: %s holds a private key but its mode is %04o (group/others may %s it); "
                  "run: chmod 600 %s" % (p, stat.S_IMODE(m), "read" if m & 0o044 else "change", p))
        return True

    def write(self, name, data):
        """Replace `name` atomically: a crash leaves the old or the new content, never half.
        The temporary file's name is this thread's own, so two writers never share one."""
        final = self.path(name)
        tmp = "%s.%d-%d.tmp" % (final, os.getpid(), threading.get_ident())
        try:
            try:
                os.unlink(tmp)      # a stale temp file (another mode, another owner)
            except FileNotFoundError:
                pass
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
            with open(fd, "wb") as f:
                os.fchmod(f.fileno(), FILE_MODE)    # whatever the umask
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except OSError as e:
            try:
                os.remove(tmp)
            except OSError:
                pass
            raise StoreError(final, "cannot write: " + _why(e)) from None
