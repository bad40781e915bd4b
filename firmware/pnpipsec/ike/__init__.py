"""IKEv2 (RFC 7296): codec, key schedule and exchanges, sans-IO."""
