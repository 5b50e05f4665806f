"""systemd integration without a dependency: sd_notify (READY, STOPPING, WATCHDOG) over $NOTIFY_SOCKET.

The watchdog beat is a scheduler job that also pings the node's own agent actor through the
Pyro5 daemon, so it only beats while the scheduler dispatches jobs *and* the daemon serves calls.
A hung agent stops beating and systemd (WatchdogSec=) kills and restarts it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)
JOB_ID = "systemd-watchdog"
SEND_TIMEOUT = 1.0
_warned: set[str] = set()


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send one sd_notify datagram ("READY=1", "WATCHDOG=1", ...); False when not run by systemd."""
    env = os.environ if environ is None else environ
    path = env.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    if path.startswith("@"):  # abstract namespace: a leading NUL byte instead of '@'
        address = "\0" + path[1:]
    elif path.startswith("/"):
        address = path
    else:  # e.g. vsock: addresses, which an agent on a board never gets
        _warn_once(path, f"NOTIFY_SOCKET {path!r} is not an AF_UNIX path; systemd notifications are off")
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # A full receive queue blocks a datagram send: never let that stall a scheduler worker.
            sock.settimeout(SEND_TIMEOUT)
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:  # includes the timeout
        _warn_once(path, f"cannot notify systemd at {path}: {exc}")
        return False
    return True


def _warn_once(key: str, text: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(text)


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 beats (half of WatchdogSec=), or None when no watchdog is asked for."""
    env = os.environ if environ is None else environ
    usec, for_pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if for_pid and for_pid != str(os.getpid() if pid is None else pid):
        return None  # the variable was meant for another process (inherited through a fork)
    return int(usec) / 2e6


class Heartbeat:
    """Sends WATCHDOG=1 from a scheduler job, only while `probe()` says the rest of the agent works."""

    def __init__(self, scheduler: Any, probe: Callable[[], bool], interval: float,
                 send: Callable[[str], bool] = notify) -> None:
        self.scheduler = scheduler
        self.probe = probe
        self.interval = interval
        self.send = send
        self.beats = 0
        self.missed = 0

    def beat(self) -> bool:
        """One watchdog beat; skipped (and logged once per outage) when the probe fails."""
        try:
            alive = self.probe()
        except Exception as exc:  # any probe failure means "do not vouch for this agent"
            alive = False
            reason = f"{type(exc).__name__}: {exc}"
        else:
            reason = "probe returned false"
        if not alive:
            if self.missed == 0:
                log.warning("watchdog beat withheld, systemd will restart the agent if this lasts: %s", reason)
            self.missed += 1
            return False
        if self.missed:
            log.info("watchdog beats again after %d missed", self.missed)
        self.missed = 0
        self.beats += 1
        return self.send("WATCHDOG=1")

    def start(self) -> Heartbeat:
        """Schedule the beat (first one now) on the agent's scheduler."""
        from datetime import UTC, datetime

        self.scheduler.add_job(self.beat, "interval", seconds=self.interval, id=JOB_ID,
                               next_run_time=datetime.now(UTC), replace_existing=True)
        return self


def agent_probe(agent: Any, timeout: float = 3.0) -> Callable[[], bool]:
    """A probe that calls ping() on the node's own agent actor through its Pyro5 daemon."""
    from Pyro5.client import Proxy

    from hal.names import object_name

    uri = agent.daemon.uriFor(object_name(agent.config.name, "agent"))

    def probe() -> bool:
        with Proxy(uri) as proxy:
            proxy._pyroTimeout = timeout
            return proxy.ping() == "pong"

    return probe


def announce_started(agent: Any) -> Heartbeat | None:
    """Tell systemd the agent is ready and start the watchdog beat when WatchdogSec= asks for one."""
    notify(f"STATUS=serving {len(agent.actors)} actors as {agent.config.name}")
    notify("READY=1")
    interval = watchdog_interval()
    if interval is None:
        return None
    log.info("systemd watchdog on: beating every %.1f s", interval)
    return Heartbeat(agent.scheduler, agent_probe(agent, timeout=max(0.5, min(3.0, interval / 2))), interval).start()


def announce_stopping() -> None:
    """Tell systemd the agent is shutting down on purpose."""
    notify("STOPPING=1")
