"""Cryptographic primitives in plain Python that MicroPython runs."""
