"""Building and caching the generic Python sandbox component."""
