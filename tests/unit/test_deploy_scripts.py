"""The fleet scripts without any host: --dry-run, target selection, inventory checks, usage, lint.

ssh and rsync are replaced on PATH by stand-ins that record any attempt to reach a host, so a
dry run that contacted one fails here. The real deployment runs in tests/cluster/test_deploy.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCRIPTS = ("update-all-nodes.sh", "update-plugins.sh", "update-host.sh", "deploy-pizero-native.sh")
EXAMPLE_HOSTS = {"hub": "192.0.2.10", "pi4": "192.0.2.21", "pizero": "192.0.2.22"}

pytestmark = pytest.mark.skipif(shutil.which("rsync") is None, reason="the scripts copy the source with rsync")


@pytest.fixture
def fake_bin(tmp_path) -> Path:
    """ssh and rsync stand-ins: a remote target is recorded in `contacted` and refused."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real_rsync = shutil.which("rsync")
    (bin_dir / "ssh").write_text(f'#!/bin/sh\necho "ssh $*" >> {tmp_path}/contacted\nexit 255\n')
    (bin_dir / "rsync").write_text(
        "#!/bin/sh\n"
        f'for a in "$@"; do case $a in *@*:*) echo "rsync $*" >> {tmp_path}/contacted; exit 99;; esac; done\n'
        f'exec {real_rsync} "$@"\n')
    for tool in ("ssh", "rsync"):
        (bin_dir / tool).chmod(0o755)
    return bin_dir


def run(script: str, *args: str, fake_bin: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a deploy script with the stand-ins first on PATH."""
    full_env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "HARVESTER_PYTHON": sys.executable,
                **(env or {})}
    full_env.pop("HARVESTER_INVENTORY", None)
    full_env.pop("HARVESTER_SSH_CONFIG", None)
    return subprocess.run([str(DEPLOY / script), *args], capture_output=True, text=True, env=full_env, timeout=120)


def nodes_in(output: str) -> list[str]:
    """Node names that got a '==>' header, in order."""
    return re.findall(r"^\[(\S+)\] ==> ", output, re.M)


def test_dry_run_prints_every_action_for_every_node_and_contacts_no_host(fake_bin, tmp_path):
    res = run("update-all-nodes.sh", "--dry-run", fake_bin=fake_bin)
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "contacted").exists(), (tmp_path / "contacted").read_text()
    version = re.search(r"^would build release (\S+) from ", res.stdout, re.M).group(1)
    assert re.fullmatch(r"\d+(\.\d+)*\+h[0-9a-f]{10}", version)
    assert "pip wheel" in res.stdout
    assert nodes_in(res.stdout) == ["hub", "pi4", "pizero"]  # the hub first
    for node, host in EXAMPLE_HOSTS.items():
        lines = "\n".join(line for line in res.stdout.splitlines() if line.startswith(f"[{node}]"))
        assert "ssh -o BatchMode=yes -o ConnectTimeout=10" in lines
        assert f"pi@{host} -- 'command -v rsync" in lines and "sudo -n mkdir -p /opt/harvester/staging" in lines
        assert f"'--rsync-path=sudo -n rsync' '<bundle>/' pi@{host}:/opt/harvester/staging/" in lines
        assert re.search(rf"pi@{host} -- 'sudo -n bash /opt/harvester/staging/node-release.sh activate --node {node} "
                         rf"--with package,config,plugins,unit .*--version {re.escape(version)}", lines)
        assert f"install {version} into /opt/harvester/releases/{version}" in lines
        assert "harvester health --config /etc/harvester/node.toml --wait --timeout" in lines
        assert "unhealthy: switch back to the previous release" in lines
        assert re.search(rf"^  {node}\s+dry-run ", res.stdout, re.M)
    assert "--run-as-root" in res.stdout.split("[pizero] ==>")[0].split("[pi4] ==>")[1]  # pi4's PWM LED strip
    assert "harvester-native.service" in res.stdout.split("[pizero] ==>")[1]


def test_node_option_limits_the_targets(fake_bin):
    res = run("update-all-nodes.sh", "--dry-run", "--node", "pi4", fake_bin=fake_bin)
    assert res.returncode == 0, res.stderr
    assert nodes_in(res.stdout) == ["pi4"]
    assert "192.0.2.10" not in res.stdout.split("dry run: nothing below is executed")[1]


@pytest.mark.parametrize(("script", "targets"), [
    ("update-all-nodes.sh", ["hub", "pi4", "pizero"]),
    ("update-host.sh", ["hub", "pi4"]),
    ("update-plugins.sh", ["hub", "pi4"]),
    ("deploy-pizero-native.sh", ["pizero"]),
])
def test_each_script_targets_its_own_nodes(fake_bin, script, targets):
    res = run(script, "--dry-run", fake_bin=fake_bin)
    assert res.returncode == 0, res.stderr
    assert nodes_in(res.stdout) == targets


def test_update_host_ships_the_package_but_not_the_config(fake_bin):
    res = run("update-host.sh", "--dry-run", "--node", "hub", fake_bin=fake_bin)
    assert "--with package,unit" in res.stdout
    assert "node.toml (from" not in res.stdout


def test_a_node_outside_the_scripts_targets_is_refused(fake_bin):
    res = run("update-plugins.sh", "--dry-run", "--node", "pizero", fake_bin=fake_bin)
    assert res.returncode == 2
    assert "not a target of this script, which updates nodes with profile wasm only: pizero" in res.stderr


def test_an_unknown_node_is_refused_with_the_known_names(fake_bin):
    res = run("update-all-nodes.sh", "--dry-run", "--node", "nope", fake_bin=fake_bin)
    assert res.returncode == 2
    assert "unknown node(s): nope (the inventory has: hub, pi4, pizero)" in res.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--bogus"], "unknown option: --bogus"),
    (["--node"], "--node needs a value"),
    (["--health-timeout", "soon"], "--health-timeout needs whole seconds"),
    (["--release", "not a version"], "--release: not a version"),
    (["--wheel", "/nonexistent.whl"], "--wheel: no such file"),
])
def test_usage_errors_exit_2(fake_bin, args, message):
    res = run("update-all-nodes.sh", "--dry-run", *args, fake_bin=fake_bin)
    assert res.returncode == 2
    assert message in res.stderr


def test_build_options_are_refused_by_the_plugins_script(fake_bin):
    res = run("update-plugins.sh", "--dry-run", "--release", "1.0", fake_bin=fake_bin)
    assert res.returncode == 2
    assert "--release: update-plugins.sh ships no package" in res.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_documents_options_and_exit_codes(fake_bin, script):
    res = run(script, "--help", fake_bin=fake_bin)
    assert res.returncode == 0
    for word in ("--dry-run", "--node NAME", "--keep-going", "--fail-fast", "--inventory", "Exit status"):
        assert word in res.stdout
    for code in range(2, 6):
        assert re.search(rf"^  {code}  \S", res.stdout, re.M), f"exit status {code} undocumented"
    assert ("--release VERSION" in res.stdout) == (script != "update-plugins.sh")


def test_release_name_follows_the_source_content(fake_bin, tmp_path):
    src = tmp_path / "src"
    subprocess.run(["rsync", "-a", "--filter=:- .gitignore", "--exclude=/.git", f"{ROOT}/", f"{src}/"], check=True)

    def version(*args: str) -> str:
        res = run("update-host.sh", "--dry-run", "--node", "hub", "--source", str(src), *args, fake_bin=fake_bin)
        assert res.returncode == 0, res.stderr
        return re.search(r"^would build release (\S+) ", res.stdout, re.M).group(1)

    first = version()
    assert version() == first  # same source, same release: a re-run is a no-op on the nodes
    (src / "actors" / "node" / "agent.py").write_text((src / "actors" / "node" / "agent.py").read_text() + "\n# changed\n")
    assert version() != first
    (src / "tests" / "new_test.py").write_text("# tests are not part of the wheel\n")
    assert version() == version()
    assert version("--release", "1.2.3+rc1") == "1.2.3+rc1"


def test_ssh_config_is_passed_to_ssh_and_rsync(fake_bin, tmp_path):
    cfg = tmp_path / "ssh config"
    cfg.write_text("Host *\n  User pi\n")
    res = run("update-host.sh", "--dry-run", "--node", "hub", "--ssh-config", str(cfg), fake_bin=fake_bin)
    assert res.returncode == 0, res.stderr
    assert f"-p 22 -F '{cfg}' pi@192.0.2.10" in res.stdout
    assert f"-F \"{cfg}\"" in res.stdout  # inside rsync's -e string


def test_inventory_problems_are_all_listed_and_nothing_runs(fake_bin, tmp_path):
    cfg = tmp_path / "pi4.toml"
    cfg.write_text((DEPLOY / "examples" / "pi4.toml").read_text())
    inv = tmp_path / "inventory.toml"
    inv.write_text(f"""
[defaults]
user = "pi"
colour = "blue"

[[nodes]]
name = "pi4"
host = "192.0.2.21"
role = "spoke"
profile = "native"
config = "{cfg}"

[[nodes]]
name = "pi4"
role = "spoke"
profile = "wasm"
config = "missing.toml"
plugins = "no-such-folder"
port = "22"
""")
    res = run("update-all-nodes.sh", "--dry-run", "--inventory", str(inv), fake_bin=fake_bin)
    assert res.returncode == 2
    assert not (tmp_path / "contacted").exists()
    for problem in ("defaults.colour: not allowed in [defaults]",
                    "says node.profile = 'wasm', the inventory says 'native'",
                    "nodes[1].host: missing", "nodes[1].port: must be int, got '22'"):
        assert problem in res.stderr, res.stderr


def test_inventory_checks_the_config_agrees_on_the_plugin_folder(fake_bin, tmp_path):
    (tmp_path / "plugins").mkdir()
    inv = tmp_path / "inventory.toml"
    inv.write_text(f"""
[[nodes]]
name = "pi4"
host = "192.0.2.21"
user = "pi"
role = "spoke"
profile = "wasm"
config = "{DEPLOY / 'examples' / 'pi4.toml'}"
plugins = "plugins"
etc = "/srv/harvester"
""")
    res = run("update-plugins.sh", "--dry-run", "--inventory", str(inv), fake_bin=fake_bin)
    assert res.returncode == 2
    assert "plugins.dir = '/etc/harvester/plugins'; the deploy scripts put plugins in /srv/harvester/plugins" in res.stderr


def test_an_invalid_node_config_stops_before_the_build(fake_bin, tmp_path):
    cfg = tmp_path / "pi4.toml"
    cfg.write_text((DEPLOY / "examples" / "pi4.toml").read_text().replace("interval = 5.0", "interval = -1"))
    inv = tmp_path / "inventory.toml"
    inv.write_text(f'[[nodes]]\nname = "pi4"\nhost = "192.0.2.21"\nuser = "pi"\nrole = "spoke"\nprofile = "wasm"\n'
                   f'config = "{cfg}"\n')
    res = run("update-all-nodes.sh", "--dry-run", "--inventory", str(inv), fake_bin=fake_bin)
    assert res.returncode == 2
    assert "interval: must be between" in res.stderr and "a node config is invalid" in res.stderr
    assert "would build" not in res.stdout


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_scripts_are_shellcheck_clean():
    files = [str(DEPLOY / s) for s in (*SCRIPTS, "lib.sh", "node-release.sh")]
    res = subprocess.run(["shellcheck", "-x", *files], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr


def test_node_release_refuses_bad_arguments(tmp_path):
    res = subprocess.run(["bash", str(DEPLOY / "node-release.sh"), "activate", "--node", "pi4"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    assert "missing --node, --with, --prefix, --etc or --unit" in res.stdout


def test_pki_ships_the_nodes_certificate_and_key(fake_bin, tmp_path):
    pki = tmp_path / "pki"
    (pki / "nodes").mkdir(parents=True)
    for name in ("ca.crt", "nodes/pi4.crt", "nodes/pi4.key"):
        (pki / name).write_text("x")
    inv = tmp_path / "inventory.toml"
    inv.write_text(f'[[nodes]]\nname = "pi4"\nhost = "192.0.2.21"\nuser = "pi"\nrole = "spoke"\nprofile = "wasm"\n'
                   f'config = "{DEPLOY / "examples" / "pi4.toml"}"\npki = "{pki}"\n')
    res = run("update-all-nodes.sh", "--dry-run", "--inventory", str(inv), fake_bin=fake_bin)
    assert res.returncode == 0, res.stderr
    assert f"tls/ (ca.crt, pi4.crt, pi4.key from {pki})" in res.stdout
    assert "install /etc/harvester/tls (key 0600, readable by the service user only)" in res.stdout

    (pki / "nodes" / "pi4.key").unlink()
    res = run("update-all-nodes.sh", "--dry-run", "--inventory", str(inv), fake_bin=fake_bin)
    assert res.returncode == 2
    assert f"nodes[0].pki: {pki}/nodes/pi4.key not found" in res.stderr


def test_the_plugin_sandbox_is_built_here_and_shipped_to_wasm_nodes_only(fake_bin):
    res = run("update-all-nodes.sh", "--dry-run", fake_bin=fake_bin)
    assert res.returncode == 0, res.stderr
    assert re.search(r"^would build the plugin sandbox for the WASM nodes from the wheel's .*\n"
                     r"  \$ env PYTHONPATH=\S+ \S+ -m plugins\.sandbox\.build --sources \S+ --export ", res.stdout, re.M)
    for node, wasm in (("hub", True), ("pi4", True), ("pizero", False)):
        lines = "\n".join(line for line in res.stdout.splitlines() if line.startswith(f"[{node}]"))
        assert ("sandbox/ (the plugin sandbox component" in lines) is wasm, node
        assert ("precompile it for this CPU (wasmtime)" in lines) is wasm, node
    for script in ("deploy-pizero-native.sh", "update-plugins.sh"):
        res = run(script, "--dry-run", fake_bin=fake_bin)
        assert res.returncode == 0 and "plugin sandbox" not in res.stdout, (script, res.stdout)
