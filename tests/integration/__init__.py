"""Integration tests: real worker processes, real faults."""
