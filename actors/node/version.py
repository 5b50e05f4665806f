"""The installed package version: what a deployed release reports to health checks."""

from __future__ import annotations

import functools
import os
import re
import sys

DISTRIBUTION = "wasi-harvester"
UNKNOWN = "0+unknown"


@functools.cache  # a release changes only with a restart; looking it up scans the installed distributions
def package_version() -> str:
    """The version of the installed `wasi-harvester` distribution ('0+unknown' when run from a bare tree).

    importlib.metadata.version() finds the same one, but importing importlib.metadata (with
    email, zipfile and csv) costs a node about 2 MB of RSS for one string; this does its
    lookup: the first `<name>-*.dist-info` or `<name>*.egg-info` folder along sys.path, its
    METADATA (or PKG-INFO) file's Version header."""
    wanted = _normalize(DISTRIBUTION)
    for entry in sys.path:
        root = entry or "."
        try:
            children = os.listdir(root)
        except OSError:  # a missing folder or a zip file: no installed distribution in there
            continue
        for child in children:
            low = child.lower()
            if not low.endswith((".dist-info", ".egg-info")) or \
                    _normalize(low.rpartition(".")[0].partition("-")[0]) != wanted:
                continue
            for name in ("METADATA", "PKG-INFO"):
                version = _version_header(os.path.join(root, child, name))
                if version is not None:
                    return version
    return UNKNOWN


def _normalize(name: str) -> str:
    """A distribution name as importlib.metadata compares them (PEP 503, with underscores)."""
    return re.sub(r"[-_.]+", "-", name).lower().replace("-", "_")


def _version_header(path: str) -> str | None:
    """The Version header of a core metadata file, or None when the file is missing or has none."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    return None  # the headers end at the first blank line
                key, sep, value = line.partition(":")
                if sep and key.strip().lower() == "version":
                    return value.strip()
    except OSError:
        return None
    return None
