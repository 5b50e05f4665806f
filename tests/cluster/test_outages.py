"""No reading lost, none duplicated: hub killed, link cut, spoke killed mid-push."""

from __future__ import annotations

import signal
import time

import pytest

from tests.cluster.conftest import assert_exactly_once, have_root_netns, readings_between
from tests.cluster.netns import lab
from tests.helpers import wait_for

OUTAGE_S = 60.0
SPOKE_SENSORS = [{"name": "dht22", "kind": "dht22", "interval": 1.0},
                 {"name": "monitor", "kind": "monitor", "interval": 1.0}]
HUB_SENSORS = [{"name": "monitor", "kind": "monitor", "interval": 5.0}]


def outage_checks(cluster, spokes, t0: float, t1: float) -> None:
    cluster.wait_drained(*spokes, timeout=90)
    for spoke in spokes:
        cluster.nodes[spoke].stop()  # freeze outbox and hub state for a consistent read
        assert_exactly_once(cluster, spoke)
        # polled every second through the outage: every one of those readings reached the hub
        during = readings_between(cluster, spoke, "monitor", "memory_used", t0 + 1, t1 - 1)
        assert during >= 0.9 * (t1 - t0 - 2), f"{spoke}: only {during} monitor readings from the outage"


@pytest.mark.slow
def test_outage_hub_sigkill_for_60s_loses_nothing(proc_cluster):
    c = proc_cluster
    hub = c.add("hub", "hub", sensors=HUB_SENSORS)
    for s in ("s1", "s2"):
        c.add(s, sensors=SPOKE_SENSORS, push_interval=1.0)
    wait_for(lambda: c.hub_last_seq("s1") > 3 and c.hub_last_seq("s2") > 3, timeout=60, what="spokes pushing")

    hub.kill(signal.SIGKILL)
    t0 = time.time()
    wait_for(lambda: time.time() - t0 >= OUTAGE_S, timeout=OUTAGE_S + 5, interval=1, what="the outage to last")
    assert c.outbox_pending("s1") >= 50 and c.outbox_pending("s2") >= 50  # they kept polling, kept it all
    hub.start()
    t1 = time.time()
    outage_checks(c, ("s1", "s2"), t0, t1)


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(not have_root_netns(), reason="needs root and iproute2 for network namespaces")
def test_outage_link_cut_for_60s_between_namespaces_loses_nothing(proc_cluster):
    c = proc_cluster
    with lab(net=77) as net:
        hub_ip = net.add_host("hub")
        ips = {s: net.add_host(s) for s in ("s1", "s2")}
        c.add("hub", "hub", netns=net.ns("hub"), sensors=HUB_SENSORS, host=hub_ip, hub_host=hub_ip)
        for s, ip in ips.items():
            c.add(s, netns=net.ns(s), sensors=SPOKE_SENSORS, push_interval=1.0, host=ip, hub_host=hub_ip)
        wait_for(lambda: c.hub_last_seq("s1") > 3 and c.hub_last_seq("s2") > 3, timeout=60,
                 what="spokes pushing across the namespaces")
        net.cut("hub")
        t0 = time.time()
        wait_for(lambda: time.time() - t0 >= OUTAGE_S, timeout=OUTAGE_S + 5, interval=1, what="the cut to last")
        assert c.outbox_pending("s1") >= 50 and c.outbox_pending("s2") >= 50
        net.mend("hub")
        t1 = time.time()
        outage_checks(c, ("s1", "s2"), t0, t1)
        c.stop()


@pytest.mark.slow
def test_outage_spoke_sigkill_mid_push_loses_nothing(proc_cluster):
    c = proc_cluster
    hub = c.add("hub", "hub", sensors=HUB_SENSORS)
    fast = [{**s, "interval": 0.25} for s in SPOKE_SENSORS]
    # 5 batches per call: the drain of the backlog takes many calls, so the kill lands mid-drain
    spoke = c.add("s1", sensors=fast, push_interval=1.0, batch_limit=5)
    wait_for(lambda: c.hub_last_seq("s1") > 2, timeout=60, what="spoke pushing")
    hub.kill(signal.SIGKILL)
    wait_for(lambda: c.outbox_pending("s1") >= 150, timeout=120, interval=0.5, what="a backlog of 150 batches")
    before = c.hub_last_seq("s1")
    hub.start()
    # kill the spoke as soon as the hub has taken part of the backlog: mid-drain
    wait_for(lambda: c.hub_last_seq("s1") > before, timeout=60, interval=0.02, what="the drain to start")
    spoke.kill(signal.SIGKILL)
    assert c.outbox_pending("s1") > 0, "the backlog drained before the kill; the test proved nothing"
    spoke.start()
    c.wait_drained("s1", timeout=90)
    c.nodes["s1"].stop()
    assert_exactly_once(c, "s1")
