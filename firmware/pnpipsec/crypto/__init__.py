"""Cryptographic primitives in plain Python that MicroPython runs."""


def unload(*names):
    """Forget submodules (e.g. "ed25519", "sha512" once no proof is pending): their
    module state, tables and, from .mpy, their bytecode go back to the heap; the next
    import loads them again. Whoever still holds a reference keeps its own copy alive,
    so callers import these modules inside functions, never at module level."""
    import sys
    g = globals()
    for n in names:
        sys.modules.pop("pnpipsec.crypto." + n, None)
        if n in g:
            del g[n]
