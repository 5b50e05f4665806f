"""A node without plugins runs no plugin host (plugins.lazy): it answers as an empty PluginHost,
and the first plugin file that appears brings the real host, checked on the batches kept so far."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hal.errors import ReadingError
from plugins.errors import UnknownPlugin
from plugins.host import PluginHost
from plugins.lazy import LazyPluginHost
from plugins.samples import Samples
from plugins.services import RecordingServices
from tests.plugins_fixtures import STEADY, Clock, reading, write_plugin

RAISES = "def evaluate(readings, host):\n    raise ValueError('not on these readings')\n"


def pair(tmp_path: Path) -> tuple[LazyPluginHost, PluginHost, list[Samples]]:
    """A lazy host and a real one, each over its own empty folder; `created` lists the lazy one's handovers."""
    clock = Clock()
    created: list[Samples] = []

    def create(samples: Samples) -> PluginHost:
        created.append(samples)
        return PluginHost("pi4", tmp_path / "lazy", "native", RecordingServices("pi4"), tmp_path / "lazy-state",
                          clock=clock, samples=samples)

    (tmp_path / "lazy").mkdir()
    (tmp_path / "real").mkdir()
    lazy = LazyPluginHost("pi4", tmp_path / "lazy", "native", create, tmp_path / "lazy-state")
    real = PluginHost("pi4", tmp_path / "real", "native", RecordingServices("pi4"), tmp_path / "real-state",
                      clock=clock)
    return lazy, real, created


def outcome(call: Any, host: Any) -> Any:
    """What call(host) returns, or the type and message of what it raises."""
    try:
        return call(host)
    except Exception as exc:  # noqa: BLE001 (compared, not handled)
        return type(exc), str(exc)


def test_an_empty_folder_answers_as_an_empty_host_without_creating_one(tmp_path):
    lazy, real, created = pair(tmp_path)
    batch = [reading("temperature", 21.0, 1000.0)]
    mixed = [reading("temperature", 21.0, 1000.0), reading("temperature", 21.0, 1000.0, node="pizero")]
    calls = [
        lambda h: h.scan(), lambda h: h.reload(), lambda h: h.names(), lambda h: h.summary(), lambda h: h.status(),
        lambda h: h.evaluate(batch), lambda h: h.evaluate([]), lambda h: h.evaluate(batch, dry_run=True),
        lambda h: h.evaluate_latest(), lambda h: h.evaluate_latest(only="x"), lambda h: h.evaluate(batch, only="x"),
        lambda h: h.evaluate(mixed), lambda h: h.evaluate([{"quantity": "temperature"}]),
        lambda h: h.alerts.active(), lambda h: h.alerts.history(10), lambda h: h.acknowledge(),
        lambda h: h.acknowledge("a", "p"), lambda h: h.declared(), lambda h: h.poll_due(),
        lambda h: h.status("x"), lambda h: h.reload("x"), lambda h: h.poll("x"), lambda h: h.get("x"),
        lambda h: h.set_enabled("x", False),
    ]
    for call in calls:
        assert outcome(call, lazy) == outcome(call, real)
    assert outcome(lambda h: h.evaluate(mixed), lazy)[0] is ReadingError
    assert outcome(lambda h: h.status("x"), lazy)[0] is UnknownPlugin
    assert not lazy.loaded and created == [] and lazy.profile == "native"
    lazy.close()


def test_the_first_plugin_file_brings_the_host_checked_on_the_batches_kept(tmp_path):
    lazy, real, created = pair(tmp_path)
    for host in (lazy, real):
        host.evaluate([reading("temperature", 21.0, 1000.0)])
        host.evaluate([reading("humidity", 40.0, 1000.0, sensor="sht4x")])
        host.evaluate([reading("temperature", 99.0, 1000.0)], dry_run=True)  # a dry run is not kept
        write_plugin(host.plugin_dir, "steady", STEADY, leds=[0])
        write_plugin(host.plugin_dir, "picky", RAISES, quantities=["humidity"])
    report = lazy.scan()
    assert lazy.loaded and len(created) == 1
    assert report == real.scan()
    assert report["loaded"] == ["steady"] and "not on these readings" in report["failed"]["picky"]
    assert [(o["plugin"], o["ok"]) for o in lazy.evaluate_latest()] == \
        [(o["plugin"], o["ok"]) for o in real.evaluate_latest()] == [("steady", True)] * 2  # both kept batches
    assert lazy.names() == real.names() == ["picky", "steady"]
    assert lazy.alerts is lazy.host.alerts and lazy.backend is lazy.host.backend  # the rest is the host's
    lazy.close()


@pytest.mark.parametrize("what", ["plugin", "kept alerts"])
def test_a_plugin_or_kept_alerts_bring_the_host_at_once(tmp_path, what):
    folder, state = tmp_path / "plugins", tmp_path / "state"
    folder.mkdir()
    if what == "plugin":
        write_plugin(folder, "steady", STEADY)
    else:
        state.mkdir()
        (state / "alerts.json").write_text("[]", encoding="utf-8")
    made: list[Samples] = []
    lazy = LazyPluginHost("pi4", folder, "native", lambda s: made.append(s) or object(), state)  # type: ignore[func-returns-value]
    assert lazy.loaded and len(made) == 1


def test_files_that_are_no_plugin_leave_the_host_out(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    for name in ("README.md", ".hidden.py", "_draft.py", "notes.toml"):
        (folder / name).write_text("x", encoding="utf-8")
    (folder / "dir.py").mkdir()
    lazy = LazyPluginHost("pi4", folder, "native", lambda s: pytest.fail("no host wanted"), None)
    assert lazy.scan() == {"loaded": [], "reloaded": [], "removed": [], "failed": {}} and not lazy.loaded


def test_batches_kept_before_any_plugin_become_the_samples_batch_would_have_kept():
    """keep() (a node without plugins) holds the readings and builds each Sample only when one is
    wanted: what list() then gives is what batch(keep=True) gives, in the same order, evicted alike."""
    from plugins.samples import MAX_SAMPLES

    lazy, eager = Samples(), Samples()
    batches = [[reading("temperature", 20.0 + i, 1000.0 + i, sensor=f"s{i % (MAX_SAMPLES + 3)}"),
                reading("humidity", 40.0, 1000.0 + i, sensor=f"s{i % (MAX_SAMPLES + 3)}")] for i in range(40)]
    batches.append([{"node": "pizero", "sensor": "dht22", "quantity": "temperature", "value": 19.5, "unit": "°C",
                     "ts": 2000.0}])  # a dict, checked on the way in as batch() checks it
    for batch in batches:
        assert lazy.keep(batch) is True
        eager.batch(batch, keep=True)
    assert lazy.keep([]) is False
    with pytest.raises(ReadingError, match="one node"):
        lazy.keep([reading("temperature", 21.0, 1000.0), reading("temperature", 21.0, 1000.0, node="pizero")])
    with pytest.raises(ReadingError):
        lazy.keep([{"quantity": "temperature"}])
    assert lazy.list() == eager.list() and len(lazy.list()) == MAX_SAMPLES
    assert lazy.list()[-1] == eager.batch(batches[-1], keep=False)
