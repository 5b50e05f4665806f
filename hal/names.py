"""The naming rules every layer shares: node names and the remote objects' names built from them.

One rule, one place: the config, the hub's ingest, tokens, certificates, plugin manifests,
the deploy inventory and the dashboard all ask here whether a node name is valid."""

from __future__ import annotations

import re
from typing import Any

NODE_NAME_RULE = "[a-z0-9_-]{1,32}"
NODE_NAME_RE = re.compile(rf"^{NODE_NAME_RULE}\Z")
# Every remote object of the fleet is called `harvester.<node>.<actor>`.
PREFIX = "harvester"


def is_node_name(value: Any) -> bool:
    """True for a string that is a valid node name."""
    return isinstance(value, str) and NODE_NAME_RE.match(value) is not None


def node_name_problem(value: Any) -> str | None:
    """None for a valid node name, else what is wrong with it (for validators)."""
    return None if is_node_name(value) else f"must match {NODE_NAME_RULE}, got {value!r}"


def object_name(node: str, actor: str) -> str:
    """`harvester.<node>.<actor>`."""
    return f"{PREFIX}.{node}.{actor}"

