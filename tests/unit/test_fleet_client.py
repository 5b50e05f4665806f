"""The REPL client without a network: Fleet and NodeHandle as mappings, Tab completion, the Readings table.

Pyro5's Proxy, the lowest layer the client touches, is replaced by an in-memory name server."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest
from Pyro5 import errors as pyro_errors
from Pyro5.serializers import serializers

import actors.client as client
from actors.cli.fleet import enable_completion
from actors.client import Fleet, NotInFleet, Readings, as_readings
from actors.errors import UnknownActor

NOW = 1_700_000_000.0


class FakeActor:
    """A remote object: describe() and a few methods."""

    def __init__(self, *methods: str) -> None:
        self.methods = methods

    def describe(self) -> dict[str, str]:
        return {m: f"{m}(): does {m}" for m in ("ping", "describe", *self.methods)}

    def ping(self) -> str:
        return "pong"

    def read(self) -> list[dict[str, Any]]:
        return [reading("temperature", 21.5, "°C")]


class FakeNameServer:
    """What the name server answers to the client's list/yplookup calls."""

    def __init__(self, names: dict[str, FakeActor]) -> None:
        self.names = names
        self.calls = 0

    def lookup(self, name: str) -> str:
        if name not in self.names:
            raise pyro_errors.NamingError(f"unknown name: {name}")
        return f"PYRO:{name}@127.0.0.1:1"

    def list(self, prefix: str = "", return_metadata: bool = False) -> dict[str, Any]:
        self.calls += 1
        found = {n: f"PYRO:{n}@127.0.0.1:1" for n in self.names if n.startswith(prefix)}
        return {n: (u, {"node:" + n.split(".")[1]}) for n, u in found.items()} if return_metadata else found


class FakeProxy:
    """Pyro5's Proxy for the name server and for the PYRO URIs it hands out, answered in memory."""

    ns: FakeNameServer

    def __init__(self, uri: str) -> None:
        self._uri = uri
        self._pyroTimeout: float | None = None

    def __enter__(self) -> FakeProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _pyroRelease(self) -> None:  # noqa: N802  (Pyro5's name)
        return None

    def __getattr__(self, method: str) -> Any:
        if self._uri.startswith("PYRO:Pyro.NameServer@"):
            return getattr(self.ns, method)
        name = self._uri.removeprefix("PYRO:").split("@")[0]
        if name not in self.ns.names:
            raise pyro_errors.NamingError(f"unknown name: {name}")
        return getattr(self.ns.names[name], method)


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> Fleet:
    ns = FakeNameServer({
        "harvester.hub.agent": FakeActor("info"),
        "harvester.hub.aggregator": FakeActor("nodes", "latest"),
        "harvester.pi4.agent": FakeActor("info"),
        "harvester.pi4.dht22": FakeActor("read", "latest", "info"),
        "harvester.pi4.leds": FakeActor("set_pixel", "fill", "state"),
        "harvester.pi4.network-gw": FakeActor("read"),
    })
    monkeypatch.setattr(FakeProxy, "ns", ns, raising=False)
    monkeypatch.setattr(client, "Proxy", FakeProxy)
    return Fleet("127.0.0.1", 9090)


def reading(quantity: str, value: float | None, unit: str, age: float = 3.0, **extra: Any) -> dict[str, Any]:
    return {"node": "pi4", "sensor": "bme680", "quantity": quantity, "value": value, "unit": unit,
            "ts": NOW - age, "quality": "ok", "reason": None, **extra}


def completions(namespace: dict[str, Any], text: str) -> list[str]:
    """Every completion the shell's completer offers for `text`, as readline asks for them."""

    class Readline:
        __doc__ = "GNU readline"
        completer: Any = None
        bound: list[str] = []

        def set_completer(self, fn: Any) -> None:
            self.completer = fn

        def parse_and_bind(self, line: str) -> None:
            self.bound.append(line)

    rl = Readline()
    assert enable_completion(namespace, rl) and rl.bound == ["tab: complete"]
    out, state = [], 0
    while (match := rl.completer(text, state)) is not None:
        out.append(match)
        state += 1
    return out


def test_fleet_is_a_mapping_of_node_names(fleet: Fleet) -> None:
    assert "pi4" in fleet and "nope" not in fleet and "pi" not in fleet and 4 not in fleet
    assert list(fleet) == ["hub", "pi4"] and len(fleet) == 2
    assert list(fleet.keys()) == ["hub", "pi4"] and fleet.keys() & {"pi4", "nope"} == {"pi4"}
    assert [n.node for n in fleet.values()] == ["hub", "pi4"]
    assert [(k, v.node) for k, v in fleet.items()] == [("hub", "hub"), ("pi4", "pi4")]
    assert fleet.get("pi4").node == "pi4" and fleet.get("nope") is None and fleet.get("nope", 0) == 0
    assert fleet.pi4.node == "pi4" and fleet["pi4"].node == "pi4"


def test_unknown_node_is_a_key_error_naming_the_known_nodes(fleet: Fleet) -> None:
    with pytest.raises(KeyError) as err:
        fleet["nope"]
    assert isinstance(err.value, UnknownActor) and isinstance(err.value, NotInFleet)
    assert str(err.value) == "no node 'nope' in the name server at 127.0.0.1:9090; known nodes: hub, pi4"
    with pytest.raises(AttributeError, match="no node 'nope'"):
        fleet.nope  # noqa: B018
    assert not hasattr(fleet, "nope")


def test_node_is_a_mapping_of_actor_names(fleet: Fleet) -> None:
    node = fleet["pi4"]
    assert list(node) == ["agent", "dht22", "leds", "network-gw"] and len(node) == 4
    assert "dht22" in node and "nope" not in node and "dht" not in node
    assert node["dht22"] is fleet.actor("harvester.pi4.dht22") and node.leds.name == "harvester.pi4.leds"
    assert node.get("nope") is None and dict(node.items())["leds"].name == "harvester.pi4.leds"
    with pytest.raises(NotInFleet, match=r"node pi4 has no actor 'nope' .*; its actors: agent, dht22, leds"):
        node["nope"]


def test_fleet_actor_does_not_ask_the_name_server(fleet: Fleet) -> None:
    before = FakeProxy.ns.calls
    fleet.actor("harvester.pi4.dht22")
    fleet.actor("harvester.ghost.buzzer")
    assert FakeProxy.ns.calls == before


def test_handles_are_truthy_and_compare_by_identity_without_a_listing(fleet: Fleet) -> None:
    before = FakeProxy.ns.calls
    assert fleet and fleet == fleet and fleet != Fleet("127.0.0.1", 9090) and {fleet: 1}[fleet] == 1
    assert FakeProxy.ns.calls == before


def test_tab_completes_node_actor_and_method_names(fleet: Fleet) -> None:
    namespace = {"fleet": fleet}
    assert completions(namespace, "fleet.pi") == ["fleet.pi4"]
    assert completions(namespace, "fleet.pi4.le") == ["fleet.pi4.leds"]
    assert completions(namespace, "fleet.pi4.dht22.re") == ["fleet.pi4.dht22.read("]
    assert "fleet.pi4.leds.set_pixel(" in completions(namespace, "fleet.pi4.leds.s")
    assert "fleet.pi4.network-gw" not in completions(namespace, "fleet.pi4.")  # not Python: fleet.pi4["network-gw"]
    assert completions(namespace, "fleet.nope.") == []


def test_tab_is_bound_the_libedit_way_on_macos() -> None:
    class Libedit:
        __doc__ = "Importing this module enables command line editing using libedit readline."
        bound: list[str] = []

        def set_completer(self, fn: Any) -> None:
            self.completer = fn

        def parse_and_bind(self, line: str) -> None:
            self.bound.append(line)

    rl = Libedit()
    assert enable_completion({}, rl) and rl.bound == ["bind ^I rl_complete"]


def test_readings_show_as_a_table() -> None:
    rows = [reading("temperature", 21.345, "°C", stale=False),
            reading("gas_resistance", 1234567.8, "Ω", age=300.0, stale=True),
            reading("iaq", None, "IAQ", age=7200.0, quality="unavailable", reason="burn-in", stale=False)]
    assert Readings(rows).table(now=NOW) == (
        "SENSOR  QUANTITY        VALUE      AGE        QUALITY                STALE\n"
        "bme680  temperature     21.345 °C  3 s ago    ok\n"
        "bme680  gas_resistance  1234568 Ω  5 min ago  ok                     stale\n"
        "bme680  iaq             -          2 h ago    unavailable (burn-in)")


def test_readings_of_several_nodes_name_the_node_and_no_stale_column_when_absent() -> None:
    rows = [reading("temperature", 20.0, "°C"), {**reading("humidity", 45.25, "%"), "node": "pizero"}]
    assert Readings(rows).table(now=NOW) == (
        "NODE    SENSOR  QUANTITY     VALUE    AGE      QUALITY\n"
        "pi4     bme680  temperature  20 °C    3 s ago  ok\n"
        "pizero  bme680  humidity     45.25 %  3 s ago  ok")


def test_readings_are_the_plain_list_to_code_and_on_the_wire() -> None:
    rows = [reading("temperature", 21.5, "°C", stale=False), reading("humidity", 40.0, "%", stale=True)]
    wrapped = as_readings([dict(r) for r in rows])
    assert type(wrapped) is Readings and wrapped == rows and rows == wrapped
    assert json.dumps(wrapped) == json.dumps(rows)
    assert json.dumps(wrapped, indent=2, ensure_ascii=False, default=str) == \
        json.dumps(rows, indent=2, ensure_ascii=False, default=str)  # what `harvester call` prints
    assert str(wrapped) == str(rows)  # print() in a script is unchanged
    assert repr(wrapped).startswith("SENSOR")
    assert pickle.loads(pickle.dumps(wrapped)) == rows
    for name in ("msgpack", "serpent", "json"):
        serializer = serializers[name]
        assert serializer.loads(serializer.dumps(wrapped)) == serializer.loads(serializer.dumps(rows)), name


def test_only_lists_of_readings_become_readings() -> None:
    assert type(as_readings([])) is list
    assert type(as_readings([{"name": "night", "next_run": 1.0}])) is list
    assert type(as_readings([reading("iaq", 20.0, "IAQ"), {"sensor": "x"}])) is list
    assert as_readings({"sensor": "x"}) == {"sensor": "x"}
    edited = Readings([reading("iaq", 20.0, "IAQ")])
    edited.append(1)
    assert repr(edited) == list.__repr__(edited)


def test_a_call_returning_readings_gives_readings(fleet: Fleet) -> None:
    out = fleet["pi4"]["dht22"].read()
    assert type(out) is Readings and out[0]["quantity"] == "temperature"
    assert type(fleet["pi4"]["dht22"].describe()) is dict


def test_long_histories_are_cut_on_screen_only() -> None:
    rows = Readings([reading("temperature", float(i % 40), "°C") for i in range(150)])
    lines = rows.table(now=NOW).splitlines()
    assert len(lines) == 1 + client.TABLE_ROWS + 1 and lines[-1].startswith("... and 50 more")
    assert len(rows) == 150


def test_cli_messages_for_a_silent_name_server_or_node(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    from Pyro5 import config as pyro_config

    from actors.cli.fleet import unreachable

    monkeypatch.setattr(pyro_config, "SSL", False)
    ns = unreachable(fleet, pyro_errors.TimeoutError("receiving: timeout"))
    assert ns.code == 3 and str(ns).startswith(
        "the name server at 127.0.0.1:9090 did not answer within 5 s (the call timeout; see --timeout).\n"
        "Check that the hub (or `harvester nameserver`) is running at 127.0.0.1:9090")
    assert "HARVESTER_TLS_CA" in str(ns)  # a TLS name server waits for a plaintext client's handshake
    node = unreachable(fleet, pyro_errors.CommunicationError("connection refused"), "harvester.pi4.leds", "fill")
    assert str(node) == ("cannot reach harvester.pi4.leds on node pi4: CommunicationError: connection refused.\n"
                         "Check that pi4's node process is running and not stopped (`harvester health --node pi4 "
                         "--ns 127.0.0.1:9090`) and the network between here and pi4.")
    gone = unreachable(fleet, pyro_errors.NamingError("unknown name: harvester.pi4.x"), "harvester.pi4.x", "read")
    assert str(gone) == "no actor 'harvester.pi4.x' in the name server at 127.0.0.1:9090 (`harvester ls` lists them)"


def test_cli_message_when_a_call_finds_no_name_server(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    from Pyro5 import config as pyro_config

    from actors.cli.fleet import unreachable

    monkeypatch.setattr(pyro_config, "COMMTIMEOUT", 30.0)
    try:  # what client.lookup raises when the name server does not answer: the call timeout, not COMMTIMEOUT
        raise pyro_errors.NamingError("cannot reach the name server") from pyro_errors.TimeoutError("timeout")
    except pyro_errors.NamingError as exc:
        failure = unreachable(fleet, exc, "harvester.pi4.dht22", "read")
    assert str(failure).startswith("the name server at 127.0.0.1:9090 did not answer within 5 s "
                                   "(the call timeout; see --timeout).\n")


def test_ages_read_naturally() -> None:
    assert [client._age(s) for s in (-0.4, -5.0, 0.0, 59.4, 61.0, 3599.0, 7300.0, 3 * 86400.0)] == \
        ["0 s ago", "in 5 s", "0 s ago", "59 s ago", "1 min ago", "60 min ago", "2 h ago", "3 d ago"]
