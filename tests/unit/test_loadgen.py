"""The load generator pins the hub to its own CPU even while the hub's processes and threads come and go."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import bench.loadgen as loadgen


def test_pinning_skips_a_child_or_thread_that_ended_meanwhile(monkeypatch):
    """A child of the hub that ended between the listing and the pinning crashed the load
    generator before its `try`, and left the hub running."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    hub = subprocess.Popen([sys.executable, "-c", "import threading, time\n"
                            "threading.Thread(target=time.sleep, args=(30,)).start()\ntime.sleep(30)"])
    try:
        deadline = time.monotonic() + 30
        while len(os.listdir(f"/proc/{hub.pid}/task")) < 2:  # its second thread is running
            assert time.monotonic() < deadline, "the stand-in hub never started its thread"
            time.sleep(0.01)
        pinned: list[tuple[int, set[int]]] = []

        def setaffinity(task: int, cpus: set[int]) -> None:
            if task == hub.pid:
                raise ProcessLookupError(3, "No such process")  # as for a thread that just ended
            pinned.append((task, set(cpus)))

        monkeypatch.setattr(loadgen, "children", lambda pid: [ended.pid] if pid == hub.pid else [])
        monkeypatch.setattr(loadgen.os, "sched_getaffinity", lambda pid: {0, 1})
        monkeypatch.setattr(loadgen.os, "sched_setaffinity", setaffinity)  # never this test process's own
        placement = loadgen.separate_cpus(hub.pid)
    finally:
        hub.kill()
        hub.wait()
    assert placement == "hub on CPU 1, load generator on CPU 0"
    assert (0, {0}) in pinned  # the load generator itself, after the hub's (other) threads
    others = [(task, cpus) for task, cpus in pinned if task != 0]
    assert len(others) == 1 and others[0][1] == {1}  # the hub's thread that still runs
