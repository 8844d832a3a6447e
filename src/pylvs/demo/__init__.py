"""Demos of the seed's cluster: on loopback (no privileges) and in the namespace lab."""
