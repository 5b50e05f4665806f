"""What a node does because of its role. NodeAgent holds one role object, chosen once from the
config: the hub's (actors.hub.role) or a spoke's (actors.spoke.role); nothing else in the agent
asks which role it runs."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from actors.base import Actor
from actors.node.config import NodeConfig
from actors.node.jobspec import JobSpec
from actors.node.version import package_version
from hal.readings import Quantity, Reading
from hal.timesync import ClockStatus, not_asked

if TYPE_CHECKING:
    from actors.hub.state import Hub
    from actors.node.scheduler import NodeScheduler

Evaluate = Callable[[list[Reading]], None]
# Names this process's run of the node: the hub tells a restart from a pause by it changing,
# however quickly the node came back.
BOOT_ID = os.urandom(8).hex()


class NodeRole:
    """The base: a role's actors, jobs and sinks; subclasses fill in what their role does."""

    #: the hub's domain object, for jobs that need it (daily summary, rollups); None on a spoke
    hub: Hub | None = None

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        # What the node measures beyond the built-in table; the agent adds its plugins' declarations.
        self.declared_quantities: Callable[[], list[Quantity]] = lambda: list(config.quantities)
        # Whether this board's wall clock is set; the agent gives its HAL's kernel clock.
        self.clock_status: Callable[[], ClockStatus] = not_asked

    def build(self) -> list[Actor]:
        """Build the role's own state and return its actors (called once, before the daemon starts)."""
        return []

    def start(self) -> None:
        """Start what must listen before this node's daemon (the hub's name server)."""

    def install(self, scheduler: NodeScheduler, first_run: datetime) -> None:
        """Add the role's periodic jobs."""

    def store(self, readings: list[Reading]) -> None:
        """Keep fresh readings (and any alert events they caused) for the hub."""
        raise NotImplementedError

    def alert(self, event: dict[str, Any]) -> None:
        """An alert event raised by this node's plugins."""
        raise NotImplementedError

    def job_specs(self, configured: list[JobSpec]) -> list[JobSpec]:
        """The configured jobs plus the role's defaults."""
        return list(configured)

    def health(self) -> dict[str, Any]:
        """Role state for the agent's fleet_health() (the spoke's outbox)."""
        return {}

    def problems(self) -> list[str]:
        """What keeps this node from doing its job right now (a full disk), in words; empty when fine."""
        return []

    def notes(self) -> list[str]:
        """Lines `harvester health` adds to a healthy verdict (the hub's exports); empty by default."""
        return []

    def liveness_interval(self) -> float:
        """How often the hub hears from this node: it is online for three of these."""
        return self.config.push_interval

    def hello_info(self) -> dict[str, Any]:
        """What this node tells the hub about itself."""
        cfg = self.config
        return {"node": cfg.name, "role": cfg.role, "profile": cfg.profile,
                "push_interval": self.liveness_interval(),
                "stale_after": {s.name: s.stale_after + cfg.push_interval for s in cfg.sensors},
                "quantities": [q.to_dict() for q in self.declared_quantities()], "version": package_version(),
                "boot": BOOT_ID}

    def stop(self) -> None:
        """Close what the role opened (after the daemon stopped serving)."""


def make_role(config: NodeConfig, evaluate: Evaluate) -> NodeRole:
    """The role object for a config; a spoke never imports the hub's modules."""
    if config.is_hub:
        from actors.hub.role import HubRole

        return HubRole(config, evaluate)
    from actors.spoke.role import SpokeRole

    return SpokeRole(config)
