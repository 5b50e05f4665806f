"""Emulated devices for mock mode and tests: the lowest layer only, so real drivers run."""
