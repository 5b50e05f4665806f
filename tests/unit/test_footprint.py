"""What keeps a Pi Zero node small: the modules a spoke imports, its malloc arena cap and trim.

RSS itself is measured by bench/bench_nodes.py (tests never assert on memory figures);
these tests guard the cuts that bench found, so a later import cannot undo them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HUB_ONLY = ("actors.hub", "actors.hub.state", "actors.hub.store", "actors.hub.tokens", "web", "hmac", "secrets",
            "paho", "pysyncobj", "Pyro5.nameserver", "nameserver.guarded")
# What APScheduler's package and the standard library's conveniences would load, and a node
# never uses (about 7 MB of a Pi Zero's 30): the scheduler is actors.node.scheduler, the package
# version is read without importlib.metadata, files are written without tempfile, and argparse
# is not let ask shutil for the terminal's width. Time zones and cron come with a job needing them.
NEVER_ON_A_NODE = ("apscheduler", "asyncio", "multiprocessing", "concurrent.futures.process", "importlib.metadata",
                   "email", "tzlocal", "shutil", "tempfile", "bz2", "lzma",
                   # nor the `harvester` commands that talk to a fleet (and their client), health's and the
                   # plugin tools'; nor statistics (with fractions) for a median, nor hashlib (OpenSSL lists
                   # its digests: 0.7 MB) for a plugin's fingerprint, nor, with its hub given by address,
                   # the IDNA codec that getaddrinfo() loads for a host name
                   "actors.client", "actors.cli.fleet", "actors.cli.health", "plugins.cli", "statistics",
                   "fractions", "hashlib", "encodings.idna", "unicodedata")
ONLY_WITH_ZONED_JOBS = ("zoneinfo", "apscheduler.triggers.cron")
# The plugin host and what it loads; plugins.lazy stands in while the plugin folder holds no plugin.
PLUGIN_HOST = ("plugins.host", "plugins.slot", "plugins.backends", "plugins.backends.native", "plugins.hostapi",
               "plugins.manifest", "plugins.sdk", "plugins.state", "harvester_plugin")
PIZERO = ROOT / "actors" / "cli" / "demo_configs" / "pizero.toml"


def run_python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def build_and_list(config: str, state_dir: Path, names: tuple[str, ...]) -> str:
    """Builds a node's actors the way `harvester node` does; lists which of names got imported."""
    return run_python(f"""
        import sys
        from actors.node.agent import NodeAgent
        from actors.node.config import load_config
        agent = NodeAgent(load_config({config!r}, ["node.state_dir={state_dir}"]))
        agent._build_actors()
        print(" ".join(sorted(m for m in {names!r} if m in sys.modules)))
    """)


def test_a_spoke_agent_never_imports_hub_modules(tmp_path):
    assert build_and_list("actors/cli/demo_configs/pizero.toml", tmp_path, HUB_ONLY) == ""


def test_a_hub_agent_does_import_them(tmp_path):
    """The same probe sees the hub's modules on a hub, so the spoke test above can fail."""
    assert build_and_list("actors/cli/demo_configs/hub.toml", tmp_path, (*HUB_ONLY[:4], "Pyro5.nameserver")) == \
        "Pyro5.nameserver actors.hub actors.hub.state actors.hub.store actors.hub.tokens"


def test_a_hub_imports_paho_only_with_an_mqtt_table(tmp_path):
    """Home Assistant's client is the hub's, and only when a broker is configured."""
    assert build_and_list("actors/cli/demo_configs/hub.toml", tmp_path, ("paho",)) == ""
    listed = run_python(f"""
        import sys
        from actors.cli.compose import build_node
        from actors.node.config import load_config
        agent = build_node(load_config("actors/cli/demo_configs/hub.toml",
                                       ["node.state_dir={tmp_path}", "mqtt.host=127.0.0.1", "mqtt.port=1"]))
        agent._build_actors()
        agent._attachments[-1](agent)  # the bridge, built, not started (the dashboard's would bind its port)
        print("paho" in sys.modules)
    """)
    assert listed == "True"


def test_malloc_arenas_are_capped_where_glibc_allows():
    result = run_python("""
        from actors.node.agent import cap_malloc_arenas
        print(cap_malloc_arenas())
    """)
    glibc = run_python("import platform; print(platform.libc_ver()[0])") == "glibc"
    assert result == ("True" if glibc else "False")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_running_native_spoke_loads_no_scheduler_package_nor_what_it_never_uses(tmp_path):
    """The demo's Pi Zero node as `harvester node` runs it: CLI, start, every sensor polled,
    the bundled plugins loaded, a push tried (its hub is absent), then stopped."""
    listed = run_python(f"""
        import sys, time
        from actors.cli.main import build_parser
        from actors.cli.compose import build_node
        from actors.node.config import load_config
        args = build_parser().parse_args(["node", "--config", {str(PIZERO)!r}])
        agent = build_node(load_config(args.config, ["node.state_dir={tmp_path}", "hub.host=127.0.0.1",
                                                    "hub.nameserver_port={free_port()}", "agent.host=127.0.0.1"]))
        agent.start()
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and not (
                len(agent.plugins.names()) == 3 and agent.role.outbox.stats()["pending_batches"] >= 3):
            time.sleep(0.1)
        running = sorted(agent.plugins.names()), agent.role.outbox.stats()["pending_batches"] >= 3
        agent.stop()
        print(running, sorted(m for m in {NEVER_ON_A_NODE + ONLY_WITH_ZONED_JOBS!r} if m in sys.modules))
    """)
    assert listed == "(['air_quality', 'cpu_temperature', 'room_temperature'], True) []"


def test_a_cron_job_with_a_time_zone_brings_what_it_needs(tmp_path):
    """The same probe sees zoneinfo and the cron trigger when a job needs them, so the test above can fail.

    (APScheduler's cron trigger brings its package's imports with it: a node with a cron job
    pays them, see README, Performance and limits.)"""
    config = tmp_path / "pizero.toml"
    config.write_text(PIZERO.read_text(encoding="utf-8") + """
[[jobs]]
name = "noon"
cron = "0 12 * * *"
timezone = "Europe/Berlin"
call = "harvester.pizero.monitor.read"
""", encoding="utf-8")
    listed = run_python(f"""
        import sys
        from actors.node.agent import NodeAgent
        from actors.node.config import load_config
        agent = NodeAgent(load_config({str(config)!r}, ["node.state_dir={tmp_path / 'state'}"]))
        agent._build_actors()
        agent.jobs.install()
        [job] = agent.jobs.list()
        print(job["trigger"], job["next_run"] is not None,
              " ".join(sorted(m for m in {ONLY_WITH_ZONED_JOBS!r} if m in sys.modules)))
    """)
    assert listed == "cron '0 12 * * *' Europe/Berlin True apscheduler.triggers.cron zoneinfo"


def test_an_empty_plugin_folder_loads_no_plugin_host_until_a_plugin_appears(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    config = tmp_path / "pizero.toml"
    config.write_text(PIZERO.read_text(encoding="utf-8") + f'\n[plugins]\ndir = "{plugins}"\n', encoding="utf-8")
    listed = run_python(f"""
        import sys
        from actors.node.agent import NodeAgent
        from actors.node.config import load_config
        from pathlib import Path
        from plugins.folder import BUNDLED_DIR, _copy
        agent = NodeAgent(load_config({str(config)!r}, ["node.state_dir={tmp_path / 'state'}"]))
        agent._build_actors()
        actor = next(a for a in agent.actors if a.name == "plugins")
        for sensor in agent.sensors:
            agent._poll(sensor)  # readings evaluated (by no plugin) and kept as samples
        agent.plugins.scan()
        loaded = lambda: " ".join(m for m in {PLUGIN_HOST!r} if m in sys.modules) or "-"
        before = loaded(), actor.list(), actor.alerts(), agent.plugins.loaded
        for name in ("cpu_temperature.py", "cpu_temperature.toml"):
            _copy(BUNDLED_DIR / name, Path({str(plugins)!r}) / name)
        report = agent.plugins.scan()
        after = report["loaded"], [p["name"] for p in actor.list()], len(agent.plugins.evaluate_latest()) > 0
        print(before, after, loaded() == " ".join({PLUGIN_HOST!r}))
        agent.stop()
    """)
    assert listed == ("('-', [], {'active': [], 'history': []}, False) "
                      "(['cpu_temperature'], ['cpu_temperature'], True) True")


@pytest.mark.parametrize(("config", "collects"), [(PIZERO, True), (ROOT / "actors/cli/demo_configs/hub.toml", False)])
def test_every_node_trims_its_heap_where_glibc_allows_and_only_spokes_collect_first(tmp_path, config, collects):
    result = run_python(f"""
        from actors.cli.compose import build_node
        from actors.node.agent import malloc_trimmer, tidy_memory
        from actors.node.config import load_config
        agent = build_node(load_config({str(config)!r}, ["node.state_dir={tmp_path}"]))
        agent._build_actors()
        agent._install_jobs(registered=True)
        job = agent.scheduler.get_job("memory:trim")
        print(malloc_trimmer() is not None, job is not None and job.func is tidy_memory,
              job is not None and job.args[1])
    """)
    glibc = run_python("import platform; print(platform.libc_ver()[0])") == "glibc"
    assert result == (f"True True {collects}" if glibc else "False False False")


def test_a_hubs_trim_job_leaves_out_the_full_collection(monkeypatch):
    """On a hub with a thousand spokes the full collection walked their state for 80-90 ms every
    minute with every thread waiting; a spoke's takes a few milliseconds and empties its free lists."""
    import gc

    from actors.node.agent import tidy_memory

    collections: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda *a: collections.append(1) or 0)
    trims: list[int] = []
    assert tidy_memory(lambda: trims.append(1) or 1, collect=False) == 1
    assert (collections, trims) == ([], [1])
    tidy_memory(lambda: trims.append(1) or 1)
    assert (collections, trims) == ([1], [1, 1])


def test_the_trim_job_empties_the_free_lists_first():
    """A full collection empties CPython's free lists: freed tuples kept for reuse go back to pymalloc."""
    result = run_python("""
        import sys
        from actors.node.agent import tidy_memory
        keep = [tuple(range(i, i + 3)) for i in range(1500)]
        del keep  # 1500 three-tuples: most now wait on the free list, still allocated blocks
        before = sys.getallocatedblocks()
        trims = []
        tidy_memory(lambda: trims.append(1) or 1)
        print(before - sys.getallocatedblocks() >= 1000, trims)
    """)
    assert result == "True [1]"


def test_the_package_version_is_found_as_importlib_metadata_finds_it(tmp_path, monkeypatch):
    """actors.node.version reads it without importing importlib.metadata (2 MB on a node)."""
    from importlib import metadata

    from actors.node.version import UNKNOWN, package_version

    lookup = package_version.__wrapped__  # not the cached answer
    assert lookup() == metadata.version("wasi-harvester")
    dist = tmp_path / "site" / "Wasi_Harvester-9.9.9.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: wasi-harvester\nVersion: 9.9.9\n\nVersion: 1\n")
    egg = tmp_path / "tree" / "wasi_harvester.egg-info"
    egg.mkdir(parents=True)
    (egg / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: wasi-harvester\nVersion: 8.8.8\n")
    for path, expected in (([str(tmp_path / "site"), str(tmp_path / "tree")], "9.9.9"),
                           ([str(tmp_path / "tree"), str(tmp_path / "site")], "8.8.8")):
        monkeypatch.setattr(sys, "path", path)
        assert lookup() == metadata.version("wasi-harvester") == expected
    monkeypatch.setattr(sys, "path", [str(tmp_path / "nowhere")])
    assert lookup() == UNKNOWN


def test_a_single_network_target_is_probed_in_the_pollers_thread_without_the_resolver(monkeypatch):
    """A spoke's network sensor watches its hub: no thread per read, and an address needs no getaddrinfo()."""
    import socket
    import threading

    from hal.nethealth import NetworkHealth

    class Ctx:
        node = "pizero"

        def clock(self) -> float:
            return 0.0

    def no_resolver(*args, **kwargs):
        raise AssertionError("getaddrinfo() called for an address")

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        net = NetworkHealth(ctx=Ctx(), name="network", targets={"hub": f"127.0.0.1:{srv.getsockname()[1]}"},
                            method="tcp", probes=2)
        threads = []
        probe = net._probe_target
        monkeypatch.setattr(net, "_probe_target", lambda t: threads.append(threading.get_ident()) or probe(t))
        monkeypatch.setattr(socket, "getaddrinfo", no_resolver)
        readings = {r.quantity: r for r in net.read()}
    assert threads == [threading.get_ident()]
    assert readings["rtt"].ok and readings["packet_loss"].value == 0.0


def test_the_outbox_page_cache_is_capped(tmp_path):
    from actors.spoke.outbox import CACHE_KIB, Outbox

    outbox = Outbox(tmp_path / "outbox.sqlite3", "pizero")
    try:
        assert outbox._db.execute("PRAGMA cache_size").fetchone() == (-CACHE_KIB,)
    finally:
        outbox.close()


def test_a_plugins_fingerprint_tells_its_versions_apart():
    """The fingerprint (zlib's checksums, not hashlib's sha256: see NEVER_ON_A_NODE) changes with any byte."""
    from plugins.backends.base import fingerprint

    source = (ROOT / "plugins" / "bundled" / "cpu_temperature.py").read_bytes()
    flipped = source[:100] + bytes([source[100] ^ 1]) + source[101:]
    versions = {source, source + b"\n", flipped, source[:-1] + b"X", b""}
    assert len(versions) == 5 and len({fingerprint(v) for v in versions}) == 5
    assert fingerprint(source) == fingerprint(bytes(source))


def test_the_demo_runs_its_native_node_with_the_interpreter_it_is_given(tmp_path):
    """How bench.bench_nodes (make soak) measures the Pi Zero node from a release install's venv."""
    from actors.cli.demo import NATIVE, Demo
    from actors.node.config import load_config

    demo = Demo(tmp_path, native_python="/opt/harvester/current/bin/python")
    assert {node: demo._argv(node)[0] for node in demo.nodes} == {
        "hub": sys.executable, "pi4": sys.executable, "pizero": "/opt/harvester/current/bin/python"}
    assert [n for n in demo.nodes if load_config(ROOT / "actors" / "cli" / "demo_configs" / f"{n}.toml").profile
            == "native"] == list(NATIVE)
    assert Demo(tmp_path)._argv("pizero")[0] == sys.executable
