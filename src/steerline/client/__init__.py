"""The Python SDK of a steerline server (SPEC §5)."""
