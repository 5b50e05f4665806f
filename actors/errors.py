"""Errors raised by actors, registered with Pyro5 so they arrive at the caller typed."""

from __future__ import annotations

import errno
from typing import Any

# Pyro5.serializers, not Pyro5.api: the api module also imports the name server (0.5 MB a spoke never uses)
from Pyro5.serializers import SerializerBase

from hal import errors as hal_errors


class ActorError(Exception):
    """Base of the actor layer's errors."""


class ActorUnavailable(ActorError, RuntimeError):
    """The actor's device failed and is being restarted; try again later."""


class Busy(ActorError, RuntimeError):
    """The actor has too many calls in flight; the caller should back off."""


class BadRequest(ActorError, ValueError):
    """A call with arguments the actor cannot accept."""


class StoreFull(ActorError, OSError):
    """The hub's disk is full: pushes are refused (and stay in the spokes' outboxes)."""


class NoMajority(ActorError, RuntimeError):
    """With several hubs, a control write (an acknowledgement, a job's run) that no majority of
    them committed in time: it is not done. Readings are not affected."""


class CannotListen(ActorError, OSError):
    """A node could not open one of its listening sockets (the port is taken, or not allowed)."""


def cannot_listen(key: str, host: str, port: int, exc: OSError) -> CannotListen:
    """The CannotListen for config key `key` (agent.port, hub.nameserver_port, web.port) at host:port."""
    why = exc.strerror or str(exc)
    hint = "another process holds it: stop that one or choose another port" if exc.errno == errno.EADDRINUSE \
        else "check the address belongs to this machine and the port is allowed"
    return CannotListen(exc.errno or 0, f"{key}: cannot listen on {host}:{port}: {why}; {hint}")


class UnknownActor(ActorError, LookupError):
    """No such node or actor in the name server."""


def _exc_to_dict(exc: BaseException) -> dict[str, Any]:
    cls = type(exc)
    return {"__class__": f"{cls.__module__}.{cls.__qualname__}", "__exception__": True,
            "args": [str(a) if not isinstance(a, (int, float, str)) else a for a in exc.args],
            "attributes": {}}


def _register(cls: type[BaseException]) -> None:
    name = f"{cls.__module__}.{cls.__qualname__}"
    SerializerBase.register_class_to_dict(cls, _exc_to_dict)
    SerializerBase.register_dict_to_class(name, lambda _name, data, cls=cls: cls(*data.get("args", [])))


def register_remote_errors() -> None:
    """Make every actor and hal error travel over Pyro5 as itself (idempotent)."""
    for module in (hal_errors, __import__(__name__, fromlist=["*"])):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == module.__name__:
                _register(value)


register_remote_errors()
