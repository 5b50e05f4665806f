"""Chaos scenarios, each ending with every reading at the hub exactly once: a name server
restart, a plugin crash storm, and the hub's disk filling up."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.cluster.conftest import ROOT, assert_exactly_once, fill_disk
from tests.helpers import HOST, wait_for

SENSORS = [{"name": "dht22", "kind": "dht22", "interval": 0.5},
           {"name": "monitor", "kind": "monitor", "interval": 0.5}]
HUB_SENSORS = [{"name": "monitor", "kind": "monitor", "interval": 5.0}]


def drain_and_check(c, spokes) -> None:
    c.wait_drained(*spokes, timeout=90)
    for s in spokes:
        c.nodes[s].stop()
        assert_exactly_once(c, s)


@pytest.mark.slow
def test_chaos_nameserver_restart_loses_nothing(proc_cluster):
    c = proc_cluster
    ns = subprocess.Popen([sys.executable, "-m", "actors.cli", "nameserver", "--port", str(c.ns_port)], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        c.add("hub", "hub", sensors=HUB_SENSORS, embedded_nameserver=False)
        for s in ("s1", "s2"):
            c.add(s, sensors=SENSORS, push_interval=1.0)
        wait_for(lambda: c.hub_last_seq("s1") > 3 and c.hub_last_seq("s2") > 3, timeout=60, what="pushing")
        ns.send_signal(signal.SIGKILL)
        ns.wait(10)
        seq = {s: c.hub_last_seq(s) for s in ("s1", "s2")}
        # pushes go on without the name server: spokes keep the aggregator's resolved address
        wait_for(lambda: all(c.hub_last_seq(s) > seq[s] + 5 for s in seq), timeout=30, what="pushes without NS")
        ns = subprocess.Popen([sys.executable, "-m", "actors.cli", "nameserver", "--port", str(c.ns_port)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from actors.client import connect

        wait_for(lambda: {"harvester.s1.dht22", "harvester.s2.dht22", "harvester.hub.aggregator"}
                 <= set(connect(HOST, c.ns_port).names()), timeout=20, what="names repopulated")
        drain_and_check(c, ("s1", "s2"))
    finally:
        ns.kill()
        ns.wait(10)


STORM = '''"""Passes its load check and its first evaluation, then crashes on every call."""

def evaluate(readings, host):
    n = host.state_get("{key}") or 0
    host.state_set("{key}", n + 1)  # kept only by a call that succeeds
    if n >= 1:
        {crash}
    return None
'''
# a runaway loop traps (epoch deadline) and is quarantined; an exception or a memory bomb
# (MemoryError in the guest) fails the call but leaves the store alive
CRASHES = [("while True: pass", "quarantined"), ("raise RuntimeError('storm')", "error"),
           ("return {'x': [1] * 10 ** 9}", "error")]


def crashed(fleet, want: str) -> bool:
    st = fleet["s1"]["plugins"].status("storm")
    return st["state"] == want and (want == "quarantined" or st["errors"] >= 3)


@pytest.mark.slow
def test_chaos_plugin_crash_storm_loses_nothing(proc_cluster, tmp_path):
    c = proc_cluster
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    for f in (ROOT / "plugins" / "bundled").iterdir():
        shutil.copy(f, plugins)
    manifest = '[plugin]\nname = "storm"\nversion = "1.0.0"\nquantities = ["temperature"]\n[limits]\ncall_ms = 20\n'
    c.add("hub", "hub", sensors=HUB_SENSORS)
    (plugins / "storm.toml").write_text(manifest)
    (plugins / "storm.py").write_text(STORM.format(key="n0", crash=CRASHES[0][0]))
    c.add("s1", sensors=SENSORS, push_interval=1.0, extra=f'[plugins]\ndir = "{plugins}"\n')
    from actors.client import connect

    fleet = connect(HOST, c.ns_port)
    for round_, (_, want) in enumerate(CRASHES):
        wait_for(lambda want=want: crashed(fleet, want), timeout=60, interval=0.5, what=f"storm {want} (round {round_})")
        if round_ + 1 < len(CRASHES):
            (plugins / "storm.py").write_text(STORM.format(key=f"n{round_ + 1}", crash=CRASHES[round_ + 1][0]))
            wait_for(lambda: fleet["s1"]["plugins"].status("storm")["state"] == "ok", timeout=30, interval=0.2,
                     what=f"the edited storm loaded (round {round_ + 1})")
    status = fleet["s1"]["plugins"].status("room_temperature")
    assert status["state"] == "ok" and status["calls"] > 0
    drain_and_check(c, ("s1",))
    with c.hub_db() as db:  # the quarantine itself reached the hub, once, in a batch
        events = db.execute("SELECT state, COUNT(*) FROM alert_events WHERE raised_by='s1' AND plugin='storm' "
                            "AND alert='plugin.quarantined' AND seq IS NOT NULL GROUP BY state").fetchall()
    assert ("raised", 1) in events


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="needs root to mount a small tmpfs")
def test_chaos_hub_disk_full_refuses_pushes_and_loses_nothing(proc_cluster):
    c = proc_cluster
    state = c.state("hub")
    state.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "harvester-test", str(state)], check=True)
    try:
        c.add("hub", "hub", sensors=HUB_SENSORS)
        c.add("s1", sensors=SENSORS, push_interval=1.0)
        wait_for(lambda: c.hub_last_seq("s1") > 3, timeout=60, what="pushing")
        from actors.hub.tokens import Tokens

        node_token = Tokens(state / "tokens.json").ensure_node("probe")  # before the disk fills
        filler = Path(state) / "filler"
        fill_disk(filler)
        wait_for(lambda: c.outbox_pending("s1") > 20, timeout=60, what="the spoke keeping batches in its outbox")
        # the hub's HTTP /push refuses too, with a clear error
        body = (b'{"node": "probe", "seq": 1, "readings": [{"sensor": "x", "quantity": "temperature", '
                b'"value": 20.0, "unit": "\xc2\xb0C", "ts": %d}]}' % int(time.time()))
        req = urllib.request.Request(f"http://{HOST}:{c.web_port}/push", method="POST", data=body,
                                     headers={"Authorization": f"Bearer {node_token}"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)
        assert info.value.code == 507 and b"full" in info.value.read()
        filler.unlink()  # space returns
        drain_and_check(c, ("s1",))
    finally:
        try:
            c.stop()
        finally:  # a mount left behind outlives the test run and its temporary dirs
            subprocess.run(["umount", "-l", str(state)], check=False)


def test_chaos_store_cap_behaves_like_a_full_disk(tmp_path):
    from actors.errors import StoreFull
    from actors.hub.state import Hub
    from actors.hub.store import Store

    hub = Hub(Store(tmp_path / "hub.sqlite3", max_mb=0.1))
    now = time.time()
    seq, refused = 0, None
    while seq < 10_000 and refused is None:
        seq += 1
        batch = {"node": "s1", "seq": seq, "readings": [
            {"sensor": f"x{i}", "quantity": "temperature", "value": 20.0, "unit": "°C", "ts": now} for i in range(50)]}
        try:
            hub.push([batch])
        except StoreFull as exc:
            refused = exc
    assert refused is not None and "full" in str(refused)
    stored = hub.store.count("s1")
    assert stored == 50 * (seq - 1)  # the refused batch left nothing behind
    hub.store.close()
    again = Hub(Store(tmp_path / "hub.sqlite3"))  # "space returns": no cap
    assert again.push([batch])["acked"] == [seq] and again.store.count("s1") == stored + 50
