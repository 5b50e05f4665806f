"""A node's registrar on a real name server: what a sweep mends, and what it leaves alone."""

from __future__ import annotations

import os
import sys
import threading

import pytest
from Pyro5.api import Proxy

from nameserver.registry import Registrar, own_prefix
from nameserver.server import EmbeddedNameServer

HOST = "127.0.0.1"


@pytest.fixture
def ns():
    server = EmbeddedNameServer(HOST, 0).start()
    yield server
    server.stop()


def listing(ns: EmbeddedNameServer) -> dict[str, tuple[str, set[str]]]:
    with Proxy(ns.uri) as p:
        return {n: (u, set(m)) for n, (u, m) in p.list(prefix="harvester.", return_metadata=True).items()}


def test_a_sweep_mends_this_nodes_names_and_leaves_other_nodes_alone(ns):
    other = Registrar([(HOST, ns.port)])
    other.add("harvester.pi40.dht22", "PYRO:dht22@127.0.0.1:4001", {"node:pi40"})
    assert other.sweep()
    mine = Registrar([(HOST, ns.port)])
    mine.add("harvester.pi4.dht22", "PYRO:dht22@127.0.0.1:4002", {"node:pi4", "kind:sensor"})
    mine.add("harvester.pi4.agent", "PYRO:agent@127.0.0.1:4002", {"node:pi4", "kind:agent"})
    assert mine.sweep()
    assert listing(ns) == {"harvester.pi40.dht22": ("PYRO:dht22@127.0.0.1:4001", {"node:pi40"}),
                           "harvester.pi4.dht22": ("PYRO:dht22@127.0.0.1:4002", {"node:pi4", "kind:sensor"}),
                           "harvester.pi4.agent": ("PYRO:agent@127.0.0.1:4002", {"node:pi4", "kind:agent"})}
    with Proxy(ns.uri) as p:  # the name server lost one name and another's tags (a restart, an operator)
        p.remove("harvester.pi4.agent")
        p.register("harvester.pi4.dht22", "PYRO:dht22@127.0.0.1:4002", metadata={"node:pi4"})
        p.register("harvester.pi40.dht22", "PYRO:dht22@127.0.0.1:4001", metadata={"node:pi40", "kind:sensor"})
    assert mine.sweep()
    after = listing(ns)
    assert after["harvester.pi4.agent"] == ("PYRO:agent@127.0.0.1:4002", {"node:pi4", "kind:agent"})
    assert after["harvester.pi4.dht22"][1] == {"node:pi4", "kind:sensor"}
    assert after["harvester.pi40.dht22"][1] == {"node:pi40", "kind:sensor"}  # not this registrar's to mend


def test_the_names_a_sweep_compares_are_interned():
    registrar = Registrar([(HOST, 1)])
    name = "".join(["harvester.pi4.", "dht22"])  # built at run time: not interned by the compiler
    registrar.add(name, "PYRO:dht22@127.0.0.1:4002", set())
    kept = registrar.names()[0]
    assert kept is sys.intern("".join(["harvester.pi4.", "dht22"]))


@pytest.mark.parametrize(("names", "prefix"), [
    (["harvester.pi4.dht22", "harvester.pi4.agent"], "harvester.pi4."),
    (["harvester.pi4.dht22"], "harvester.pi4."),
    (["harvester.pi4.a", "harvester.pi40.b"], "harvester."),  # pi4 is not a prefix of pi40's names
    ([], "harvester."),
])
def test_a_sweep_lists_only_the_prefix_its_names_share(names, prefix):
    assert own_prefix(names) == prefix


def test_a_sweep_after_the_name_server_restarted_registers_again(caplog):
    first = EmbeddedNameServer(HOST, 0).start()
    port = first.port
    mine = Registrar([(HOST, port)])
    mine.add("harvester.pi4.agent", "PYRO:agent@127.0.0.1:4002", {"node:pi4"})
    assert mine.sweep()
    first.stop()
    second = EmbeddedNameServer(HOST, port).start()
    try:
        with caplog.at_level("WARNING", logger="nameserver.registry"):
            assert mine.sweep()
        assert "unreachable" not in caplog.text
        assert listing(second) == {"harvester.pi4.agent": ("PYRO:agent@127.0.0.1:4002", {"node:pi4"})}
    finally:
        second.stop()


def connections_to(port: int) -> int:
    """This process's established TCP connections to `port` (from /proc: its socket inodes)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(1 for row in rows if int(row[2].split(":")[1], 16) == port and row[3] == "01" and row[9] in inodes)


def test_sweeps_keep_one_connection_to_the_name_server_from_any_thread(ns):
    mine = Registrar([(HOST, ns.port)])
    mine.add("harvester.pi4.agent", "PYRO:agent@127.0.0.1:4002", {"node:pi4"})
    results: list[bool] = []
    for _ in range(3):  # the scheduler runs each sweep on whichever of its threads is free
        t = threading.Thread(target=lambda: results.append(mine.sweep()))
        t.start()
        t.join(30)
    assert results == [True, True, True]
    assert mine.sweep()
    assert connections_to(ns.port) == 1
    mine.unregister_all()
    assert listing(ns) == {}
    assert connections_to(ns.port) == 0
