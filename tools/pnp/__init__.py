"""pnp: host-side tools and CLI for pnpipsec."""
