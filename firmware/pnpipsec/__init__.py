"""pnpipsec: Plug-and-Play IPsec for MicroPython appliances (sans-IO core).

Security levels are small ordered ints (DESIGN section 4).
"""

CLEAR = 0
ENCRYPTED = 1
AUTHENTICATED = 2
AUTHORIZED = 3

LEVEL_NAMES = ("CLEAR", "ENCRYPTED", "AUTHENTICATED", "AUTHORIZED")

__version__ = "0.1.0"
