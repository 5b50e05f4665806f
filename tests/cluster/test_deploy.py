"""The fleet scripts against real sshd hosts in network namespaces (root only).

Three test hosts (hub, pi4 as a WASM spoke, pizero as a native spoke), each a namespace with
its own address on a private /24 and its own sshd. The scripts run from the root namespace
exactly as an operator runs them: they build the wheel, rsync it over ssh with each node's
config, TLS certificate and plugins, install it into releases/<version> with `pip --no-index`
from a wheelhouse repacked from this venv (the hosts have no network), start the agent
(service = "pidfile": no systemd in a namespace) and wait until the hub, itself deployed to
its host, sees each node online on the new version. Every Pyro5 connection is mutual TLS, as
in deploy/examples; this test looks at the fleet through `harvester`-style client processes
with a user certificate, so the TLS settings never leak into the pytest process.

pi4 is the WASM node as a Raspberry Pi 4 is deployed: the 'wasm' extra (wasmtime only), the
plugin sandbox component built on the operator's side and shipped in the bundle, precompiled at
install, and no componentize-py on the host. The hub is a WASM node without wasmtime: it gets the
component but nothing to precompile it with.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.sshlab import SshLab, missing_tools
from tests.cluster.wheelhouse import build_wheelhouse, install_requires
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE_VERSION = re.search(r"^version\s*=\s*([^\s+]+)", (ROOT / "setup.cfg").read_text(), re.M).group(1)
NODE_PYTHON = os.path.realpath(sys.executable)  # the venv's base interpreter: python3.11 with venv + ensurepip
# One client process per look: Pyro5's TLS settings are process-wide.
VIEW = """
import json, sys
from actors.client import connect
fleet = connect(sys.argv[1], 9090, timeout=3.0)
hub = {n["name"]: n for n in fleet.actor("harvester.hub.aggregator").call("nodes")}
info = {n: fleet.actor(f"harvester.{n}.agent").call("info") for n in sys.argv[2:]}
print(json.dumps({"hub": hub, "info": info}, default=str))
"""
PLUGIN_STATUS = """
import json, sys
from actors.client import connect
fleet = connect(sys.argv[1], 9090, timeout=3.0)
print(json.dumps(fleet.actor(f"harvester.{sys.argv[2]}.plugins").call("status", sys.argv[3]), default=str))
"""
EXTRAS = {"pi4": ["wasm"]}  # the hub's and pizero's releases get no extras
NODES = {  # name: (role, profile, sensors)
    "hub": ("hub", "wasm", [("monitor", "monitor", 0.5)]),
    "pi4": ("spoke", "wasm", [("dht22", "dht22", 0.5), ("monitor", "monitor", 1.0)]),
    "pizero": ("spoke", "native", [("monitor", "monitor", 1.0), ("network", "network", 1.0)]),
}


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if missing := missing_tools():
        return f"needs {', '.join(missing)} (make test installs openssh-server, rsync and iproute2 as root)"
    probe = subprocess.run([NODE_PYTHON, "-c", "import venv, ensurepip"], capture_output=True)
    if probe.returncode != 0:
        return f"{NODE_PYTHON} cannot create virtual environments with pip"
    return None


pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.skipif(_skip_reason() is not None,
                                                                     reason=_skip_reason() or "")]


@dataclass
class Run:
    """One script run: exit status, combined output, wall time."""

    rc: int
    out: str
    seconds: float

    def states(self) -> dict[str, str]:
        """Node -> state, from the summary table."""
        summary = self.out.split("\nsummary (", 1)[-1]
        return dict(re.findall(r"^  (\S+)\s+(\S+)\s+\d+s ", summary, re.M))


@dataclass
class Fleet:
    """The lab, the inventory, and ways to look at the deployed nodes."""

    lab: SshLab
    root: Path
    inventory: Path
    wheelhouse: Path
    source: Path
    addresses: dict[str, str] = field(default_factory=dict)
    first: Run | None = None
    v1: str = ""
    last_view: dict[str, tuple] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """The environment of a script run: this venv builds, the lab's ssh config connects."""
        return {**os.environ, "HARVESTER_PYTHON": sys.executable, "HARVESTER_SSH_CONFIG": str(self.lab.ssh_config())}

    def run(self, script: str, *args: str, inventory: Path | None = None, timeout: float = 240) -> Run:
        """Run a deploy script against the lab and return what happened (builds from the snapshot)."""
        t0 = time.monotonic()
        if "--source" not in args and script != "update-plugins.sh":
            args = ("--source", str(self.source), *args)
        res = subprocess.run([str(DEPLOY / script), "--inventory", str(inventory or self.inventory), *args],
                             capture_output=True, text=True, env=self.env(), timeout=timeout, cwd=self.root)
        run = Run(res.returncode, res.stdout + res.stderr, time.monotonic() - t0)
        print(f"--- {script} {' '.join(args)}: exit {run.rc} in {run.seconds:.1f} s\n{run.out}")
        return run

    def host_dir(self, name: str) -> Path:
        """The node's fake root on the shared file system."""
        return self.root / "hosts" / name

    def prefix(self, name: str) -> Path:
        """The node's <prefix> (releases, current, staging)."""
        return self.host_dir(name) / "opt"

    def etc(self, name: str) -> Path:
        """The node's <etc> (node.toml, plugins)."""
        return self.host_dir(name) / "etc"

    def current(self, name: str) -> str:
        """The release `current` points at on the node."""
        return os.path.basename(os.readlink(self.prefix(name) / "current"))

    def pid(self, name: str) -> int:
        """The node's agent pid (pidfile service)."""
        return int((self.prefix(name) / "agent.pid").read_text())

    def client(self, script: str, *args: str) -> Any:
        """Run a client script through the hub's name server, over TLS as a user; its JSON output."""
        pki = self.root / "pki"
        env = {**os.environ, "HARVESTER_TLS_CA": str(pki / "ca.crt"), "HARVESTER_TLS_CERT": str(pki / "users/tester.crt"),
               "HARVESTER_TLS_KEY": str(pki / "users/tester.key")}
        res = subprocess.run([sys.executable, "-c", script, self.addresses["hub"], *args], capture_output=True,
                             text=True, env=env, cwd=ROOT, timeout=60)
        if res.returncode != 0:
            raise RuntimeError(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "no output")
        return json.loads(res.stdout)

    def view(self, names: tuple[str, ...] = tuple(NODES)) -> dict:
        """{"hub": the aggregator's nodes() by name, "info": each named agent's info()}."""
        return self.client(VIEW, *names)

    def plugin_status(self, node: str, plugin: str) -> dict:
        """The node's status of one plugin."""
        return self.client(PLUGIN_STATUS, node, plugin)

    def all_online_at(self, version: str, names: tuple[str, ...] = tuple(NODES)) -> bool:
        """Every named node is online at the hub and its agent runs `version`."""
        view = self.view(names)
        self.last_view = {n: (view["hub"].get(n, {}).get("online"), view["info"][n]["version"]) for n in names}
        return all(online and v == version for online, v in self.last_view.values())

    def wait_online(self, version: str, names: tuple[str, ...] = tuple(NODES), timeout: float = 20) -> None:
        """Wait until every named node is online at the hub on `version`; fail with what the hub said."""
        try:
            wait_for(lambda: self.all_online_at(version, names), timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nwanted {names} online on {version}; (online, version): {self.last_view}\n"
                                 f"{self.logs()}") from None

    def logs(self) -> str:
        """The tails of every node's agent and deploy logs, for failure messages."""
        out = []
        for name in NODES:
            for log in (self.prefix(name) / "agent.log", self.prefix(name) / "deploy.log"):
                if log.exists():
                    out.append(f"== {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:]))
        return "\n".join(out)


def write_node(fleet: Fleet, name: str) -> Path:
    """The node's config (mock hardware, its namespace address, plugins in <etc>/plugins)."""
    role, profile, sensors = NODES[name]
    addr, hub = fleet.addresses[name], fleet.addresses["hub"]
    lines = ["[node]", f'name = "{name}"', f'role = "{role}"', f'profile = "{profile}"', 'hal = "mock"',
             f'state_dir = "{fleet.host_dir(name) / "state"}"',
             "[hub]", f'host = "{hub}"', "nameserver_port = 9090",
             "[agent]", f'host = "{addr}"', "port = 9100", "register_interval = 1",
             "[push]", "interval = 0.5",
             "[plugins]", f'dir = "{fleet.etc(name) / "plugins"}"',
             "[security]", "tls = true", 'ca = "tls/ca.crt"', f'cert = "tls/{name}.crt"', f'key = "tls/{name}.key"']
    if role == "hub":
        lines += ["[web]", f'host = "{addr}"', "port = 8080"]
    for sensor, kind, interval in sensors:
        lines += ["[[sensors]]", f'name = "{sensor}"', f'kind = "{kind}"', f"interval = {interval}"]
    path = fleet.root / "configs" / f"{name}.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    plugins = fleet.root / "plugins" / name
    plugins.mkdir(parents=True, exist_ok=True)
    if "wasm" in EXTRAS.get(name, []):  # a plugin for the sandbox to run: the bundled room alert
        for suffix in (".py", ".toml"):
            shutil.copy(ROOT / "plugins" / "bundled" / f"room_temperature{suffix}", plugins)
    return path


def write_inventory(fleet: Fleet, path: Path, extra_rows: str = "") -> Path:
    """An inventory of the lab's nodes (pidfile service, the lab's python, the offline wheelhouse)."""
    rows = ["[defaults]", "user = \"root\"", 'service = "pidfile"', f'python = "{NODE_PYTHON}"',
            f'wheelhouse = "{fleet.wheelhouse}"', 'pki = "pki"', "health_timeout = 30", ""]
    for name, (role, profile, _) in NODES.items():
        rows += ["[[nodes]]", f'name = "{name}"', f'host = "{fleet.addresses[name]}"', f'role = "{role}"',
                 f'profile = "{profile}"', f'config = "configs/{name}.toml"', f'plugins = "plugins/{name}"',
                 f'prefix = "{fleet.prefix(name)}"', f'etc = "{fleet.etc(name)}"',
                 f"extras = {json.dumps(EXTRAS.get(name, []))}", ""]
        if name == "hub":
            rows.append(extra_rows)
    path.write_text("\n".join(rows) + "\n")
    return path


def snapshot(dest: Path) -> Path:
    """A copy of the source tree as the deploy scripts see it (the work tree may change meanwhile)."""
    subprocess.run(["rsync", "-a", "--filter=:- .gitignore", "--exclude=/.git", f"{ROOT}/", f"{dest}/"], check=True)
    return dest


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Iterator[Fleet]:
    """Three ssh hosts in namespaces, and the first deploy of the whole cluster to them."""
    root = tmp_path_factory.mktemp("deploy")
    lab = SshLab(root / "lab")
    try:
        lab.start()
        f = Fleet(lab, root, root / "inventory.toml", root / "wheelhouse", snapshot(root / "src"))
        for name in NODES:
            f.addresses[name] = lab.add_ssh_host(name)
            write_node(f, name)
        subprocess.run([sys.executable, "-m", "actors.cli", "certs", "init", "--dir", str(root / "pki"), "--user", "tester",
                        *[arg for name, addr in f.addresses.items() for arg in ("--node", f"{name}={addr}")]],
                       check=True, capture_output=True, cwd=ROOT)
        # Run-time requirements and wasmtime: componentize-py cannot reach any host.
        build_wheelhouse(f.wheelhouse, install_requires(ROOT / "setup.cfg", "wasm"))
        write_inventory(f, f.inventory)
        f.first = f.run("update-all-nodes.sh")
        f.v1 = f.current("hub") if (f.prefix("hub") / "current").exists() else ""
        yield f
    finally:
        lab.close()


def test_update_all_nodes_deploys_every_node_and_the_hub_sees_them_online(fleet):
    first = fleet.first
    assert first is not None and first.rc == 0, f"{first.out if first else ''}\n{fleet.logs()}"
    assert first.states() == {"hub": "ok", "pi4": "ok", "pizero": "ok"}, first.out
    assert re.fullmatch(rf"{re.escape(BASE_VERSION)}\+h[0-9a-f]{{10}}", fleet.v1), fleet.v1
    for name in NODES:
        prefix = fleet.prefix(name)
        assert fleet.current(name) == fleet.v1
        assert (prefix / "releases" / fleet.v1 / ".complete").is_file()
        assert (prefix / "releases" / fleet.v1 / "bin" / "harvester").is_file()
        assert (fleet.etc(name) / "node.toml").read_text() == (fleet.root / "configs" / f"{name}.toml").read_text()
        key = fleet.etc(name) / "tls" / f"{name}.key"
        assert key.read_bytes() == (fleet.root / "pki" / "nodes" / f"{name}.key").read_bytes()
        assert key.stat().st_mode & 0o777 == 0o600
        assert not (prefix / "previous").exists()  # nothing to roll back to yet
    fleet.wait_online(fleet.v1)
    pizero = fleet.view(("pizero",))["info"]["pizero"]
    assert pizero["profile"] == "native" and not pizero["wasmtime_loaded"]


def test_a_wasm_node_runs_plugins_from_the_shipped_precompiled_sandbox_without_componentize_py(fleet):
    assert fleet.first is not None and fleet.first.rc == 0, fleet.logs()
    release = fleet.prefix("pi4") / "releases" / fleet.v1
    probe = subprocess.run([str(release / "bin" / "python"), "-c",
                            "import importlib.util as u; print(u.find_spec('componentize_py'), u.find_spec('wasmtime') is not None)"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.split() == ["None", "True"], "the node has wasmtime and no componentize-py"
    assert "componentize" not in " ".join(os.listdir(fleet.wheelhouse)).lower()

    # Shipped, checked and compiled for this CPU by the install step, before the agent first started.
    sandbox = release / "share" / "harvester" / "sandbox"
    manifest = json.loads((sandbox / "sandbox.json").read_text())
    artifacts = sorted((sandbox / "compiled").glob("*.cwasm"))
    assert [a.name[:32] for a in artifacts] == [manifest["sha256"][:32]], artifacts
    deploy_log = (fleet.prefix("pi4") / "deploy.log").read_text()
    assert 0 <= deploy_log.index("precompiled for this CPU") < deploy_log.index("restarting the agent"), deploy_log

    # Its first start runs the plugin on that machine code: nothing built, nothing compiled.
    def runs() -> bool:
        status = fleet.plugin_status("pi4", "room_temperature")
        return status["state"] == "ok" and status["calls"] > 0 and status["backend"] == "wasm"

    wait_for(runs, timeout=30)
    agent_log = (fleet.prefix("pi4") / "agent.log").read_text()
    assert re.search(rf"loaded precompiled \S*{re.escape(artifacts[0].name)} in \d", agent_log), agent_log[-3000:]
    assert "compiling" not in agent_log and "building the plugin sandbox" not in agent_log
    # The hub is a WASM node without the 'wasm' extra: the component is there, nothing compiled it.
    assert "NOT precompiled: wasmtime is not installed" in fleet.first.out
    assert (fleet.prefix("hub") / "releases" / fleet.v1 / "share" / "harvester" / "sandbox" / "sandbox.wasm").is_file()
    assert not (fleet.prefix("pizero") / "releases" / fleet.v1 / "share" / "harvester").exists(), "native: no sandbox"


def test_a_second_run_changes_nothing_and_restarts_nothing(fleet):
    pids = {name: fleet.pid(name) for name in NODES}
    again = fleet.run("update-all-nodes.sh")
    assert again.rc == 0, f"{again.out}\n{fleet.logs()}"
    assert again.states() == {"hub": "unchanged", "pi4": "unchanged", "pizero": "unchanged"}, again.out
    assert {name: fleet.pid(name) for name in NODES} == pids
    assert f"release {fleet.v1}" in again.out  # same source, same release name


def test_upgrade_then_a_release_whose_agent_exits_at_start_is_rolled_back(fleet):
    v2 = f"{BASE_VERSION}+t2"
    host = fleet.run("update-host.sh", "--release", v2)
    assert host.rc == 0, f"{host.out}\n{fleet.logs()}"
    assert host.states() == {"hub": "ok", "pi4": "ok"}, "update-host.sh targets the hub and WASM spokes only"
    native = fleet.run("deploy-pizero-native.sh", "--release", v2)
    assert native.rc == 0, f"{native.out}\n{fleet.logs()}"
    assert native.states() == {"pizero": "ok"}
    for name in NODES:
        assert fleet.current(name) == v2
        assert os.path.basename(os.readlink(fleet.prefix(name) / "previous")) == fleet.v1
    fleet.wait_online(v2)
    # Same guest sources, same component: the new release shares the old one's machine code.
    assert re.search(rf"^\[pi4\] plugin sandbox .*machine code shared with release {re.escape(fleet.v1)}",
                     host.out, re.M), host.out
    inodes = [{a.stat().st_ino for a in (fleet.prefix("pi4") / "releases" / v / "share/harvester/sandbox/compiled")
               .glob("*.cwasm")} for v in (fleet.v1, v2)]
    assert inodes[0] and inodes[0] == inodes[1], "one copy on the SD card"

    # A release whose agent exits as soon as it starts.
    broken_src = snapshot(fleet.root / "broken-src")
    with open(broken_src / "actors" / "node" / "agent.py", "a", encoding="utf-8") as f:
        f.write("\n\ndef _broken_start(self) -> None:\n"
                "    raise SystemExit('this release is broken on purpose: the agent exits at start')\n\n\n"
                "NodeAgent.start = _broken_start  # type: ignore[method-assign]\n")
    v3 = f"{BASE_VERSION}+t3broken"
    before = fleet.pid("pi4")
    broken = fleet.run("update-host.sh", "--node", "pi4", "--source", str(broken_src), "--release", v3)
    assert broken.rc == 3, f"{broken.out}\n{fleet.logs()}"
    assert broken.states() == {"pi4": "rolled-back"}, broken.out
    assert "exited" in broken.out and "rolling back" in broken.out
    assert fleet.current("pi4") == v2
    assert (fleet.prefix("pi4") / "releases" / v3 / ".complete").is_file()  # it was installed, then abandoned
    assert fleet.pid("pi4") != before
    fleet.wait_online(v2, ("pi4",))
    assert fleet.current("hub") == v2 and fleet.current("pizero") == v2  # --node pi4 touched nothing else


def test_update_plugins_syncs_the_wasm_nodes_without_a_restart(fleet):
    pids = {name: fleet.pid(name) for name in NODES}
    for name in NODES:
        (fleet.root / "plugins" / name / "room_alert.py").write_text(f"# plugin for {name}\nTHRESHOLD = 30\n")
    run = fleet.run("update-plugins.sh")
    assert run.rc == 0, f"{run.out}\n{fleet.logs()}"
    assert run.states() == {"hub": "ok", "pi4": "ok"}, "pizero is native: not a target"
    for name in ("hub", "pi4"):
        assert (fleet.etc(name) / "plugins" / "room_alert.py").read_text().startswith(f"# plugin for {name}")
    assert not (fleet.etc("pizero") / "plugins" / "room_alert.py").exists()
    assert {name: fleet.pid(name) for name in NODES} == pids, "a plugin update must not restart anything"

    (fleet.root / "plugins" / "pi4" / "room_alert.py").unlink()
    run = fleet.run("update-plugins.sh", "--node", "pi4")
    assert run.rc == 0 and run.states() == {"pi4": "ok"}, run.out
    assert not (fleet.etc("pi4") / "plugins" / "room_alert.py").exists()
    assert (fleet.etc("pi4") / "plugins.previous" / "room_alert.py").exists()


def test_an_unreachable_node_is_reported_and_does_not_stop_the_others(fleet):
    ghost = fleet.root / "configs" / "ghost.toml"
    ghost.write_text((fleet.root / "configs" / "pi4.toml").read_text().replace("pi4", "ghost"))
    (fleet.root / "plugins" / "ghost").mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-m", "actors.cli", "certs", "add-node", "--dir", str(fleet.root / "pki"),
                    f"ghost={fleet.addresses['hub']}"], check=True, capture_output=True, cwd=ROOT)
    # The hub's own address on a port nothing listens on: refused at once, and inside the lab.
    row = "\n".join(["[[nodes]]", 'name = "ghost"', f'host = "{fleet.addresses["hub"]}"', "port = 2",
                     'role = "spoke"', 'profile = "wasm"', 'config = "configs/ghost.toml"', 'plugins = "plugins/ghost"',
                     f'prefix = "{fleet.prefix("ghost")}"', f'etc = "{fleet.etc("ghost")}"', ""])
    inventory = write_inventory(fleet, fleet.root / "with-ghost.toml", extra_rows=row)

    keep_going = fleet.run("update-plugins.sh", inventory=inventory)
    assert keep_going.rc == 4, keep_going.out
    assert keep_going.states() == {"hub": "unchanged", "ghost": "unreachable", "pi4": "unchanged"}, keep_going.out
    assert re.search(rf"\[ghost\] cannot reach root@{re.escape(fleet.addresses['hub'])}:2 over ssh: .*refused",
                     keep_going.out), keep_going.out

    fail_fast = fleet.run("update-plugins.sh", "--fail-fast", inventory=inventory)
    assert fail_fast.rc == 4, fail_fast.out
    assert fail_fast.states() == {"hub": "unchanged", "ghost": "unreachable", "pi4": "skipped"}, fail_fast.out
