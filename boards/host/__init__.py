"""Host board (CPython on Linux): sockets, AES via cryptography, randomness, storage."""
