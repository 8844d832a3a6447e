"""Configuration files pylvs reads unchanged from the tools it replaces (keepalived.conf).

Parsers here turn text into typed, immutable dataclasses with file:line diagnostics; they never
start anything. Not for: acting on a configuration (the daemons do that).
"""
