"""What every group of routes needs: the hub, the token checks, the fleet client, the page model, a clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from actors.hub.state import Hub
from web.auth import Auth
from web.dashboard import Dashboard
from web.upstream import Upstream


@dataclass
class WebContext:
    """The app's collaborators, built once by web.app.create_app."""

    hub: Hub
    auth: Auth
    upstream: Upstream
    dashboard: Dashboard
    node: str = "hub"
    clock: Callable[[], float] = field(default=time.time)
