"""Emulated devices for mock mode and tests: the lowest layer only, so real drivers run."""

# How many recent measurements an emulated device keeps for tests and the REPL. Bounded: a
# mock-mode node runs for months, and one kept every measurement it ever made.
HISTORY = 500
