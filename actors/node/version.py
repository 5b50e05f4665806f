"""The installed package version: what a deployed release reports to health checks."""

from __future__ import annotations

import functools
from importlib import metadata

DISTRIBUTION = "wasi-harvester"


@functools.cache  # a release changes only with a restart; looking it up scans the installed distributions
def package_version() -> str:
    """The version of the installed `wasi-harvester` distribution ('0+unknown' when run from a bare tree)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0+unknown"
