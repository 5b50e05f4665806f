"""The hub's name server at fleet size: names listed by prefix from a sorted index, and a
cleaner that probes each daemon address once per pass, all of them at once."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import pytest
from Pyro5.api import Proxy

from bench.loadgen import Daemons
from nameserver.cleaner import AddressCleaner, reachable
from nameserver.guarded import PrefixStorage
from nameserver.server import EmbeddedNameServer
from tests.helpers import wait_for

HOST = "127.0.0.1"


@pytest.fixture
def listener() -> Iterator[Daemons]:
    """A daemon's address as the cleaner sees it: accepts and counts connections, closes each."""
    one = Daemons(1)
    yield one
    one.close()


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@pytest.fixture
def silent() -> Iterator[tuple[str, int]]:
    """An address whose SYNs go unanswered, as a powered-off board's: a listener whose accept
    queue is full (Linux then drops further SYNs)."""
    server = socket.socket()
    server.bind((HOST, 0))
    server.listen(0)
    address = server.getsockname()
    fillers = []
    for _ in range(4):  # backlog 0 still queues one; a few more make sure the queue is full
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(address)
        fillers.append(c)
    with pytest.raises(TimeoutError):  # what the cleaner meets: no answer at all, not a refusal
        socket.create_connection(address, timeout=0.2).close()
    yield address
    for c in fillers:
        c.close()
    server.close()


def test_prefix_storage_lists_by_prefix_exactly_as_a_pass_over_every_name():
    rng = random.Random(7)
    storage = PrefixStorage()
    names = [f"harvester.{rng.choice(['pi4', 'pi40', 'pi', 'hub', 'zero'])}{rng.randrange(30)}."
             f"{rng.choice(['agent', 'dht22', 'leds'])}" for _ in range(400)]
    for name in names:
        storage[name] = (f"PYRO:x@{HOST}:1", {"node:x"})
    for name in rng.sample(sorted(set(names)), 60):
        del storage[name]
    storage["harvester.pi4.agent"] = ("PYRO:y@127.0.0.1:2", None)  # replaced, listed once
    for prefix in ("harvester.", "harvester.pi4", "harvester.pi4.", "harvester.pi40.", "harvester.zero1",
                   "harvester.nobody.", "h", "", "harvester.pi4.agent", "harvester.pi4.agent."):
        expected = {n: v for n, v in storage.items() if n.startswith(prefix)}
        assert storage.optimized_prefix_list(prefix, return_metadata=True) == expected, prefix
        assert storage.optimized_prefix_list(prefix) == {n: v[0] for n, v in expected.items()}, prefix
    assert storage["harvester.pi4.agent"] == ("PYRO:y@127.0.0.1:2", frozenset())
    storage.clear()
    assert storage.optimized_prefix_list("harvester.") == {}
    with pytest.raises(NotImplementedError):
        storage.update({"a": ("PYRO:x@127.0.0.1:1", None)})


def test_the_running_name_server_lists_and_removes_by_prefix_from_its_index():
    ns = EmbeddedNameServer(HOST, 0).start()
    try:
        assert isinstance(ns.daemon.nameserver.storage, PrefixStorage)
        with Proxy(ns.uri) as p:
            for node in ("pi4", "pi40", "pi5"):
                for actor in ("agent", "dht22"):
                    p.register(f"harvester.{node}.{actor}", f"PYRO:{actor}@{HOST}:4000", metadata={f"node:{node}"})
            assert set(p.list(prefix="harvester.pi4.")) == {"harvester.pi4.agent", "harvester.pi4.dht22"}
            assert p.remove(prefix="harvester.pi4.") == 2
            assert set(p.list(prefix="harvester.pi4")) == {"harvester.pi40.agent", "harvester.pi40.dht22"}
            assert p.list(prefix="harvester.pi5.", return_metadata=True)["harvester.pi5.agent"][1] == ["node:pi5"]
    finally:
        ns.stop()


def test_reachable_tells_listening_refusing_and_silent_addresses_apart(listener, silent):
    refusing = (HOST, closed_port())
    alive = (HOST, listener.ports[0])
    assert reachable([alive, refusing, silent, ("no-such-host.invalid", 1)], timeout=0.5) == {alive}
    # a few at a time: every batch is waited for, the answer is the same
    assert reachable([silent, alive, refusing], timeout=0.3, at_once=1) == {alive}


def test_the_cleaner_probes_each_address_once_and_removes_only_names_of_dead_ones(listener):
    ns = EmbeddedNameServer(HOST, 0).start()
    dead = closed_port()
    try:
        ns.daemon.cleaner_thread.stop = True  # this test runs the passes itself, on its own clock
        plain = ns.daemon.cleaner_thread.nameserver
        with Proxy(ns.uri) as p:
            for actor in ("agent", "dht22", "leds"):
                p.register(f"harvester.pi4.{actor}", f"PYRO:{actor}@{HOST}:{listener.ports[0]}")
                p.register(f"harvester.zero.{actor}", f"PYRO:{actor}@{HOST}:{dead}")
        cleaner = AddressCleaner(plain, unreachable_after=10.0, timeout=1.0)
        assert cleaner.clean_once(now=100.0) == 0
        wait_for(lambda: listener.accepted == 1, what="one connection for pi4's three names")
        assert cleaner.probes == 2  # one per address, not one per name
        assert cleaner.clean_once(now=105.0) == 0  # unreachable for 5 s: not yet
        with Proxy(ns.uri) as p:  # zero's leds restarted on a live port meanwhile: that name stays
            p.register("harvester.zero.leds", f"PYRO:leds@{HOST}:{listener.ports[0]}")
        assert cleaner.clean_once(now=110.0) == 2
        with Proxy(ns.uri) as p:
            assert set(p.list(prefix="harvester.")) == {"harvester.pi4.agent", "harvester.pi4.dht22",
                                                         "harvester.pi4.leds", "harvester.zero.leds"}
        assert cleaner.unreachable == {}
    finally:
        ns.stop()


def test_the_running_cleaner_forgets_a_dead_daemons_names(listener):
    ns = EmbeddedNameServer(HOST, 0)
    ns.daemon.cleaner_thread.stop = True
    fast = AddressCleaner(ns.daemon.cleaner_thread.nameserver, every=0.1, unreachable_after=0.3, timeout=0.5)
    ns.daemon.cleaner_thread = fast
    fast.start()
    ns.start()
    try:
        with Proxy(ns.uri) as p:
            p.register("harvester.pi4.agent", f"PYRO:agent@{HOST}:{listener.ports[0]}")
            p.register("harvester.zero.agent", f"PYRO:agent@{HOST}:{closed_port()}")
            wait_for(lambda: set(p.list(prefix="harvester.")) == {"harvester.pi4.agent"},
                     what="the dead daemon's name removed, the live one's kept")
    finally:
        ns.stop()
