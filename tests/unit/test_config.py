from pathlib import Path

import pytest

from actors.cli.main import main
from actors.node.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = {"node": {"name": "pi4", "role": "spoke", "state_dir": "/tmp/x"}, "hub": {"host": "127.0.0.1"}}


def problems(data):
    with pytest.raises(ConfigError) as info:
        parse_config(data, "node.toml")
    return info.value.problems


def test_config_minimal_takes_defaults():
    cfg = parse_config(MINIMAL)
    assert (cfg.name, cfg.role, cfg.profile, cfg.hal) == ("pi4", "spoke", "wasm", "mock")
    assert cfg.nameserver_port == 9090 and cfg.push_interval == 5.0
    assert cfg.leds is None and cfg.buzzer is None and cfg.web is None and cfg.sensors == []


def test_config_unknown_key_is_named_with_its_section():
    data = {**MINIMAL, "node": {**MINIMAL["node"], "colour": "red"}}
    assert ("node.colour", "unknown key (known: name, role, profile, hal, state_dir)") in problems(data)


def test_config_wrong_type_says_expected_and_got():
    data = {**MINIMAL, "push": {"interval": "fast"}}
    [(key, msg)] = problems(data)
    assert key == "push.interval" and "must be int or number" in msg and "'fast'" in msg


def test_config_bool_is_not_an_integer():
    [(key, msg)] = problems({**MINIMAL, "agent": {"port": True}})
    assert key == "agent.port" and "got bool" in msg


@pytest.mark.parametrize("host", ["300.1.1.1", "not a host", "1.2.3"])
def test_config_bad_address_is_rejected(host):
    [(key, msg)] = problems({**MINIMAL, "hub": {"host": host}})
    assert key == "hub.host" and "not an IP address or host name" in msg


def test_config_missing_section_and_required_key():
    found = problems({"node": {"name": "pi4", "role": "spoke"}})
    assert ("hub", "missing section") in found
    assert ("node.state_dir", "missing (required)") in found


def test_config_reports_every_problem_at_once():
    data = {"node": {"name": "Pi 4!", "role": "boss", "state_dir": "x"}, "hub": {"host": "127.0.0.1"},
            "weather": {}}
    keys = [k for k, _ in problems(data)]
    assert keys == ["weather", "node.name", "node.role"]


def test_config_sensor_rows_are_checked_against_their_kind():
    data = {**MINIMAL, "sensors": [
        {"name": "bme680", "kind": "bme680", "address": "0x77"},
        {"name": "x", "kind": "lidar"},
        {"name": "bme680", "kind": "monitor", "gpio": 4},
    ]}
    found = dict(problems(data))
    assert "must be int" in found["sensors[0].address"]
    assert "must be one of" in found["sensors[1].kind"]
    assert "duplicate sensor name" in found["sensors[2].name"]
    assert "unknown key" in found["sensors[2].gpio"]


def test_config_sensor_params_and_stale_default():
    data = {**MINIMAL, "sensors": [{"name": "bme680", "kind": "bme680", "interval": 3, "address": 0x76}]}
    [s] = parse_config(data).sensors
    assert s.params["address"] == 0x76 and s.params["bus"] == 1  # defaults filled from the kind table
    assert s.interval == 3.0 and s.stale_after == 9.0


def test_config_error_message_names_the_file(tmp_path):
    path = tmp_path / "pi4.toml"
    path.write_text('[node]\nname = "pi4"\nrole = "spoke"\nstate_dir = "s"\n[hub]\nhost = "127.0.0.1"\n'
                    '[push]\ninterval = -1\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: push.interval: must be between 0.1 and 3600, got -1"


def test_config_not_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_config_relative_paths_resolve_next_to_the_file(tmp_path):
    path = tmp_path / "n.toml"
    path.write_text('[node]\nname = "a"\nrole = "hub"\nstate_dir = "state"\n[hub]\nhost = "127.0.0.1"\n')
    cfg = load_config(path)
    assert cfg.state_dir == tmp_path / "state" and cfg.web is not None and cfg.web.port == 8080


def test_config_overrides_apply_before_validation(tmp_path):
    path = tmp_path / "n.toml"
    path.write_text('[node]\nname = "a"\nrole = "hub"\nstate_dir = "s"\n[hub]\nhost = "127.0.0.1"\n')
    cfg = load_config(path, ["web.port=8181", "node.state_dir=/tmp/elsewhere"])
    assert cfg.web.port == 8181 and cfg.state_dir == Path("/tmp/elsewhere")
    with pytest.raises(ConfigError, match="web.port: must be between"):
        load_config(path, ["web.port=70000"])


def test_config_check_cli_prints_problems_and_exit_code(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[node]\nname = "a"\nrole = "spoke"\nstate_dir = "s"\n[hub]\nhost = "127.0.0.1"\n[leds]\ncount = "x"\n')
    assert main(["config", "check", str(bad)]) == 1
    assert f"{bad}: leds.count: must be integer" in capsys.readouterr().out


@pytest.mark.parametrize("path", sorted((ROOT / "deploy" / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_config_shipped_examples_are_valid(path):
    # examples for real boards: their state folder and TLS files are on those boards
    assert main(["config", "check", "--remote", str(path)]) == 0


@pytest.mark.parametrize("path", sorted((ROOT / "actors" / "cli" / "demo_configs").glob("*.toml")),
                         ids=lambda p: p.name)
def test_config_demo_configs_are_valid_here(path):
    assert main(["config", "check", str(path)]) == 0


def test_config_shipped_example_sets_are_not_empty():
    """The two parametrized tests above would pass vacuously if a move left their folders empty."""
    assert len(list((ROOT / "deploy" / "examples").glob("*.toml"))) >= 3
    assert {p.name for p in (ROOT / "actors" / "cli" / "demo_configs").glob("*.toml")} >= \
        {"hub.toml", "pi4.toml", "pizero.toml"}


@pytest.mark.parametrize("kind, params, key, says", [
    ("bme680", {"address": 0x200}, "address", "0x76 (118) or 0x77 (119)"),
    ("bme680", {"bus": -3}, "bus", "between 0 and 255"),
    ("bme680", {"heater_temp": 99999}, "heater_temp", "200..400 °C"),
    ("bme680", {"heater_ms": -1}, "heater_ms", "1..4032 ms"),
    ("dht22", {"min_interval": -1}, "min_interval", "between 0 and 3600"),
    ("network", {"probes": 0}, "probes", "between 1 and 100"),
    ("network", {"timeout": -1}, "timeout", "within (0, 60] seconds"),
    ("network", {"method": "udp"}, "method", "one of auto, icmp, tcp"),
    ("network", {"targets": {"x": "nohostport"}}, "targets", 'must look like "host:port"'),
    ("network", {"targets": {"x": "h:99999"}}, "targets", "port must be within 1..65535"),
])
def test_config_sensor_parameters_the_node_would_refuse_are_refused_by_check(kind, params, key, says):
    data = {**MINIMAL, "sensors": [{"name": "s", "kind": kind, **params}]}
    found = problems(data)
    assert any(k == f"sensors[0].{key}" and says in m for k, m in found), found


def test_config_what_passes_check_builds_its_sensors():
    """The same rule decides for the check and the node: SensorKind.build refuses what check refuses."""
    from hal.errors import HalConfigError
    from hal.sensor import SENSOR_KINDS

    with pytest.raises(HalConfigError, match="address must be 0x76"):
        SENSOR_KINDS["bme680"].build(None, "s", {"address": 0x200})  # refused before any hardware


def test_config_empty_state_dir_is_refused():
    data = {**MINIMAL, "node": {**MINIMAL["node"], "state_dir": ""}}
    assert ("node.state_dir", "must be a folder path, not empty, got ''") in problems(data)


def test_config_tls_files_and_state_dir_are_checked_on_this_machine(tmp_path):
    from actors.node.config import check_on_this_machine

    blocker = tmp_path / "file"
    blocker.write_text("x")
    data = {"node": {"name": "pi4", "role": "spoke", "state_dir": str(blocker / "state")},
            "hub": {"host": "127.0.0.1"},
            "security": {"tls": True, "ca": "ca.crt", "cert": "pi4.crt", "key": "pi4.key"}}
    cfg = parse_config(data, base_dir=tmp_path)
    found = dict(check_on_this_machine(cfg))
    assert "a part of the path is a file" in found["node.state_dir"]
    assert "CA certificate not found" in found["security"]
    ok = parse_config({**MINIMAL, "node": {**MINIMAL["node"], "state_dir": str(tmp_path / "state")}})
    assert check_on_this_machine(ok) == []
    assert list((tmp_path / "state").iterdir()) == []  # the write test leaves nothing behind
