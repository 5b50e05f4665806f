"""What keeps a Pi Zero node small: the modules a spoke imports and its malloc arena cap.

RSS itself is measured by bench/bench_nodes.py (tests never assert on memory figures);
these tests guard the two cuts that bench found, so a later import cannot undo them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HUB_ONLY = ("actors.hub", "actors.hub.state", "actors.hub.store", "actors.hub.tokens", "web", "hmac", "secrets",
            "paho", "pysyncobj")


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
    assert build_and_list("actors/cli/demo_configs/hub.toml", tmp_path, HUB_ONLY[:4]) == \
        "actors.hub actors.hub.state actors.hub.store actors.hub.tokens"


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
