"""The ``steerline`` command line."""
