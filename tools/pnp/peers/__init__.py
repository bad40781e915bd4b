"""Real IKEv2 peers in network namespaces (root): namespaces and veth pairs (netns),
strongSwan charon (charon), libreswan pluto (pluto), tcpdump captures and tshark
(capture). `pnp wirebench` drives them; the interop tests use them through
host_tests/peers (same modules). Documented in host_tests/peers/__init__.py."""
