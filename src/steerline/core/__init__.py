"""The shared vocabulary of steerline: messages, native events, errors and ids.

Everything else in the package imports from here; this package imports nothing
else of steerline, so the vocabulary can never depend on the machinery.
"""
